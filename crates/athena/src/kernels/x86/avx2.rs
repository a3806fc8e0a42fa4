//! AVX2+FMA versions of the kernels. Every function here requires a CPU with AVX2 and FMA;
//! the dispatchers in [`crate::kernels`] check that at run time and pass slices of the lengths each
//! function names.

use std::arch::x86_64::*;

use half::bf16;

use crate::kernels::layout::{
    bias_dot, block_offsets, QInput, BLOCK_LEN, FLUSH, INPUTS_PER_PASS, STEP_LANES,
};

/// Sum of the eight lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Eight bf16 values at `p` widened to f32 (a bf16 is the high half of an f32).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_bf16(p: *const bf16) -> __m256 {
    let h = _mm_loadu_si128(p.cast::<__m128i>());
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
}

/// `Σ a·b`; `a.len() == b.len()`. Sums in the same order as one lane of [`dot4`], so a
/// product of one input row equals the same row of a batch bit for bit.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut total = 0f64;
    let mut i = 0;
    while i < n {
        let end = (i + FLUSH).min(n);
        let mut acc = [_mm256_setzero_ps(); 2];
        while i + 16 <= end {
            for (h, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * h;
                *acc =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *acc);
            }
            i += 16;
        }
        while i + 8 <= end {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
        while i < end {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total += f64::from(s);
    }
    total as f32
}

/// One row `w` against four rows `x`; every slice has `w.len()` elements.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot4(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    let n = w.len();
    let pw = w.as_ptr();
    let px = x.map(|x| x.as_ptr());
    let mut total = [0f64; 4];
    let mut i = 0;
    while i < n {
        let end = (i + FLUSH).min(n);
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        while i + 16 <= end {
            for (h, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * h;
                let wv = _mm256_loadu_ps(pw.add(o));
                for k in 0..4 {
                    acc[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(px[k].add(o)), acc[k]);
                }
            }
            i += 16;
        }
        while i + 8 <= end {
            let wv = _mm256_loadu_ps(pw.add(i));
            for k in 0..4 {
                acc[0][k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(px[k].add(i)), acc[0][k]);
            }
            i += 8;
        }
        let mut s = [0f32; 4];
        for (k, s) in s.iter_mut().enumerate() {
            *s = hsum(_mm256_add_ps(acc[0][k], acc[1][k]));
        }
        while i < end {
            for (k, s) in s.iter_mut().enumerate() {
                *s += *pw.add(i) * *px[k].add(i);
            }
            i += 1;
        }
        for (t, s) in total.iter_mut().zip(s) {
            *t += f64::from(s);
        }
    }
    total.map(|t| t as f32)
}

/// `Σ w·x` with bf16 `w`; `w.len() == x.len()`. Sums in [`dot`]'s order, so it equals `dot`
/// of the widened row bit for bit.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    let n = w.len();
    let (pw, px) = (w.as_ptr(), x.as_ptr());
    let mut total = 0f64;
    let mut i = 0;
    while i < n {
        let end = (i + FLUSH).min(n);
        let mut acc = [_mm256_setzero_ps(); 2];
        while i + 16 <= end {
            for (h, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * h;
                *acc = _mm256_fmadd_ps(load_bf16(pw.add(o)), _mm256_loadu_ps(px.add(o)), *acc);
            }
            i += 16;
        }
        while i + 8 <= end {
            acc[0] = _mm256_fmadd_ps(load_bf16(pw.add(i)), _mm256_loadu_ps(px.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
        while i < end {
            s += (*pw.add(i)).to_f32() * *px.add(i);
            i += 1;
        }
        total += f64::from(s);
    }
    total as f32
}

/// bf16 → f32; `src.len() == out.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
    let n = src.len();
    let (ps, po) = (src.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(po.add(i), load_bf16(ps.add(i)));
        i += 8;
    }
    while i < n {
        *po.add(i) = (*ps.add(i)).to_f32();
        i += 1;
    }
}

/// 8-bit codes (4 a word) → `scale · code + bias`; `out.len()` is a multiple of 8 and
/// `words` holds at least `out.len() / 4` words.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dequantize_q8(words: &[u32], scale: f32, bias: f32, out: &mut [f32]) {
    let (s, b) = (_mm256_set1_ps(scale), _mm256_set1_ps(bias));
    let (pw, po) = (words.as_ptr().cast::<u8>(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= out.len() {
        let codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(pw.add(i).cast::<__m128i>()));
        _mm256_storeu_ps(po.add(i), _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(codes), b));
        i += 8;
    }
}

/// 4-bit codes (8 a word, low nibble first) → `scale · code + bias`; `out.len()` is a
/// multiple of 8 and `words` holds at least `out.len() / 8` words.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dequantize_q4(words: &[u32], scale: f32, bias: f32, out: &mut [f32]) {
    let (s, b) = (_mm256_set1_ps(scale), _mm256_set1_ps(bias));
    let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    let mask = _mm256_set1_epi32(0xf);
    let po = out.as_mut_ptr();
    for (j, &word) in words.iter().take(out.len() / 8).enumerate() {
        let w = _mm256_set1_epi32(word as i32);
        let codes = _mm256_and_si256(_mm256_srlv_epi32(w, shifts), mask);
        _mm256_storeu_ps(
            po.add(8 * j),
            _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(codes), b),
        );
    }
}

/// [`crate::kernels::affine::dot_affine_on`] for up to [`INPUTS_PER_PASS`] inputs (`xs.len() == out.len()`,
/// lengths checked by the caller): picks the kernel for `bits` and the number of inputs.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_affine(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) {
    match bits {
        4 => affine_by_count::<4>(group_size, words, scales, biases, xs, out),
        _ => affine_by_count::<8>(group_size, words, scales, biases, xs, out),
    }
}

/// [`dot_affine`] with the bit width fixed: picks the input count, adds the bias terms.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_by_count<const BITS: i32>(
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) {
    let n = xs.len().min(out.len()).min(INPUTS_PER_PASS);
    let (xs, out) = (&xs[..n], &mut out[..n]);
    let bpg = group_size / BLOCK_LEN;
    let mut dots = [0f32; INPUTS_PER_PASS];
    match n {
        0 => return,
        1 => dots[..1].copy_from_slice(&affine_rows::<BITS, 1>(bpg, words, scales, xs)),
        2 => dots[..2].copy_from_slice(&affine_rows::<BITS, 2>(bpg, words, scales, xs)),
        3 => dots[..3].copy_from_slice(&affine_rows::<BITS, 3>(bpg, words, scales, xs)),
        _ => dots.copy_from_slice(&affine_rows::<BITS, 4>(bpg, words, scales, xs)),
    }
    for ((o, d), x) in out.iter_mut().zip(dots).zip(xs) {
        *o = d + bias_dot(biases, x.group_sums(group_size).unwrap_or_default());
    }
}

/// `acc[i] += scale · step · Σ q·x` per lane for block `b` of `blocks` and each input: one
/// 256-bit load (8 bits) or a zero-extension of 16 bytes (4 bits), a mask and a shift split
/// each 16-bit lane into its low and high code, and two `vpmaddwd` with the input codes give
/// exact int32 sums.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_block<const BITS: i32, const N: usize>(
    pw: *const u8,
    scale: f32,
    pq: &[*const i16; N],
    pst: &[*const f32; N],
    (b, blocks): (usize, usize),
    acc: &mut [__m256; N],
) {
    let v = if BITS == 8 {
        _mm256_loadu_si256(pw.add(b * 32).cast::<__m256i>())
    } else {
        _mm256_cvtepu8_epi16(_mm_loadu_si128(pw.add(b * 16).cast::<__m128i>()))
    };
    let mask = _mm256_set1_epi16(if BITS == 8 { 0xff } else { 0x0f });
    let lo = _mm256_and_si256(v, mask);
    let hi = _mm256_srli_epi16::<BITS>(v);
    let scale = _mm256_set1_ps(scale);
    let (even, odd) = block_offsets(blocks, b);
    for i in 0..N {
        let s = _mm256_add_epi32(
            _mm256_madd_epi16(lo, _mm256_loadu_si256(pq[i].add(even).cast::<__m256i>())),
            _mm256_madd_epi16(hi, _mm256_loadu_si256(pq[i].add(odd).cast::<__m256i>())),
        );
        let steps = _mm256_loadu_ps(pst[i].add(b * STEP_LANES));
        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(s), steps);
        acc[i] = _mm256_fmadd_ps(t, scale, acc[i]);
    }
}

/// `Σ scale·step·Σ q·x` over a row's blocks (no bias term) for `N` inputs, `bpg` blocks per
/// group: blocks alternate between two accumulators per input.
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_rows<const BITS: i32, const N: usize>(
    bpg: usize,
    words: &[u32],
    scales: &[f32],
    xs: &[QInput<'_>],
) -> [f32; N] {
    let blocks = xs[0].codes.len() / BLOCK_LEN;
    let pw = words.as_ptr().cast::<u8>();
    let pq: [*const i16; N] = std::array::from_fn(|i| xs[i].codes.as_ptr());
    let pst: [*const f32; N] = std::array::from_fn(|i| xs[i].steps.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    let mut b = 0;
    while b + 2 <= blocks {
        for (u, acc) in acc.iter_mut().enumerate() {
            let scale = scales[(b + u) / bpg];
            affine_block::<BITS, N>(pw, scale, &pq, &pst, (b + u, blocks), acc);
        }
        b += 2;
    }
    if b < blocks {
        let scale = scales[b / bpg];
        affine_block::<BITS, N>(pw, scale, &pq, &pst, (b, blocks), &mut acc[0]);
    }
    std::array::from_fn(|i| hsum(_mm256_add_ps(acc[0][i], acc[1][i])))
}

/// One of [`dot2x4`]'s passes over a chunk: the blocks of 8 at `start`, `start + 16`, … below
/// `full`, then (with `last`) the block at `full`, into one accumulator per pair.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pass2x4(
    pw: [*const f32; 2],
    px: [*const f32; 4],
    start: usize,
    full: usize,
    last: bool,
) -> [[__m256; 4]; 2] {
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let mut o = start;
    loop {
        if o >= full && !(last && o == full) {
            break;
        }
        let w0 = _mm256_loadu_ps(pw[0].add(o));
        let w1 = _mm256_loadu_ps(pw[1].add(o));
        for k in 0..4 {
            let xv = _mm256_loadu_ps(px[k].add(o));
            acc[0][k] = _mm256_fmadd_ps(w0, xv, acc[0][k]);
            acc[1][k] = _mm256_fmadd_ps(w1, xv, acc[1][k]);
        }
        if o >= full {
            break;
        }
        o += 16;
    }
    acc
}

/// Two rows `w` against four rows `x`: `out[j][k] = Σ w_j·x_k`; every slice has
/// `w[0].len()` elements. Each pair is summed in [`dot`]'s order, bit for bit: [`dot`] keeps
/// two accumulators per [`FLUSH`] chunk (the first and second 8 of every 16 values, the
/// first also taking a last block of 8), and here the chunk is walked once for each of them,
/// so only eight accumulators (one per pair) are live and each input value loaded serves
/// both weight rows.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot2x4(w: [&[f32]; 2], x: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = w[0].len();
    // Arrays written out rather than through `map`, so that nothing here is left to a call.
    let pw = [w[0].as_ptr(), w[1].as_ptr()];
    let px = [x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr()];
    let mut total = [[0f64; 4]; 2];
    let mut i0 = 0;
    while i0 < n {
        let end = (i0 + FLUSH).min(n);
        let full = i0 + (end - i0) / 16 * 16;
        let extra = full + 8 <= end;
        let first = pass2x4(pw, px, i0, full, extra);
        let second = pass2x4(pw, px, i0 + 8, full, false);
        let tail = if extra { full + 8 } else { full };
        for j in 0..2 {
            for k in 0..4 {
                let mut s = hsum(_mm256_add_ps(first[j][k], second[j][k]));
                for t in tail..end {
                    s += *pw[j].add(t) * *px[k].add(t);
                }
                total[j][k] += f64::from(s);
            }
        }
        i0 = end;
    }
    let mut out = [[0f32; 4]; 2];
    for (o, t) in out.iter_mut().zip(&total) {
        for (o, &t) in o.iter_mut().zip(t) {
            *o = t as f32;
        }
    }
    out
}

/// `Σ w·x` with bf16 `w`, four accumulators (32 values a step) so that more loads are in
/// flight; `w.len() == x.len()`. Sums in another order than [`dot_bf16`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_bf16_wide(w: &[bf16], x: &[f32]) -> f32 {
    let n = w.len();
    let (pw, px) = (w.as_ptr(), x.as_ptr());
    let mut total = 0f64;
    let mut i = 0;
    while i < n {
        let end = (i + FLUSH).min(n);
        let mut acc = [_mm256_setzero_ps(); 4];
        while i + 32 <= end {
            for (h, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * h;
                *acc = _mm256_fmadd_ps(load_bf16(pw.add(o)), _mm256_loadu_ps(px.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= end {
            acc[0] = _mm256_fmadd_ps(load_bf16(pw.add(i)), _mm256_loadu_ps(px.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < end {
            s += (*pw.add(i)).to_f32() * *px.add(i);
            i += 1;
        }
        total += f64::from(s);
    }
    total as f32
}

/// `y += a·x`; `x.len() == y.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += 8;
    }
    while i < n {
        *py.add(i) = a.mul_add(*px.add(i), *py.add(i));
        i += 1;
    }
}
