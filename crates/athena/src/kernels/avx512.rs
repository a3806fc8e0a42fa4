//! AVX-512 versions of the affine int16 kernels. Every function here requires a CPU with
//! AVX-512 F, BW and VNNI; the callers in [`super::affine`] check that at run time and pass
//! slices of the lengths each function names.

use std::arch::x86_64::*;

use super::affine::{bias_dot, QInput, MANY, QBLOCK, QSPAN, STEP_LANES};

/// [`super::affine::dot_affine_on`] for up to [`MANY`] inputs (`xs.len() == out.len()`,
/// lengths checked by the caller): picks the kernel for `bits`, the group size and the
/// number of inputs.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_affine(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) {
    match bits {
        4 => by_group::<4>(group_size, words, scales, biases, xs, out),
        _ => by_group::<8>(group_size, words, scales, biases, xs, out),
    }
}

/// [`dot_affine`] with the bit width fixed: picks the group size.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn by_group<const BITS: u32>(
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) {
    match group_size / QBLOCK {
        1 => by_count::<BITS, 1>(group_size, words, scales, biases, xs, out),
        2 => by_count::<BITS, 2>(group_size, words, scales, biases, xs, out),
        _ => by_count::<BITS, 4>(group_size, words, scales, biases, xs, out),
    }
}

/// [`dot_affine`] with the bit width and blocks per group fixed: picks the input count.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn by_count<const BITS: u32, const BPG: usize>(
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) {
    let n = xs.len().min(out.len()).min(MANY);
    let (xs, out) = (&xs[..n], &mut out[..n]);
    let mut dots = [0f32; MANY];
    match n {
        0 => return,
        1 => dots[..1].copy_from_slice(&rows::<BITS, BPG, 1>(words, scales, xs)),
        2 => dots[..2].copy_from_slice(&rows::<BITS, BPG, 2>(words, scales, xs)),
        3 => dots[..3].copy_from_slice(&rows::<BITS, BPG, 3>(words, scales, xs)),
        _ => dots.copy_from_slice(&rows::<BITS, BPG, 4>(words, scales, xs)),
    }
    for ((o, d), x) in out.iter_mut().zip(dots).zip(xs) {
        *o = d + bias_dot(biases, x.group_sums(group_size).unwrap_or_default());
    }
}

/// One weight row's 64 codes of blocks `2p` and `2p + 1` (bytes at `pw`) as 16-bit lanes:
/// the codes of even columns, then of odd columns.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn unpack_pair<const BITS: u32>(pw: *const u8, p: usize) -> (__m512i, __m512i) {
    let v = if BITS == 8 {
        _mm512_loadu_si512(pw.add(p * 64).cast())
    } else {
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(pw.add(p * 32).cast()))
    };
    let mask = _mm512_set1_epi16(if BITS == 8 { 0xff } else { 0x0f });
    (_mm512_and_si512(v, mask), _mm512_srli_epi16::<BITS>(v))
}

/// The 32 codes of the lone last block `b` as [`unpack_pair`] gives them, in the low
/// sixteen 16-bit lanes (the high ones are zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn unpack_last<const BITS: u32>(pw: *const u8, b: usize) -> (__m512i, __m512i) {
    let v = if BITS == 8 {
        _mm512_maskz_loadu_epi16(0xffff, pw.add(b * 32).cast())
    } else {
        _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_loadu_si128(
            pw.add(b * 16).cast(),
        )))
    };
    let mask = _mm512_set1_epi16(if BITS == 8 { 0xff } else { 0x0f });
    (_mm512_and_si512(v, mask), _mm512_srli_epi16::<BITS>(v))
}

/// Per f32 lane, the scale of the group of blocks `2p` (lanes 0–7) and `2p + 1` (lanes 8–15)
/// for `BPG` blocks per group.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pair_scale<const BPG: usize>(ps: *const f32, p: usize) -> __m512 {
    if BPG == 1 {
        _mm512_mask_mov_ps(
            _mm512_set1_ps(*ps.add(2 * p)),
            0xff00,
            _mm512_set1_ps(*ps.add(2 * p + 1)),
        )
    } else {
        _mm512_set1_ps(*ps.add(2 * p / BPG))
    }
}

/// Exact int32 products of two blocks' codes (`lo`, `hi` from [`unpack_pair`]) with an
/// input's codes at `q` (64 values, evens first): lanes 0–7 hold block `2p`'s partial sums,
/// lanes 8–15 block `2p + 1`'s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pair_products(lo: __m512i, hi: __m512i, q: *const i16) -> __m512i {
    let s = _mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(q.cast()));
    _mm512_dpwssd_epi32(s, hi, _mm512_loadu_si512(q.add(QSPAN / 2).cast()))
}

/// `acc[i] += scale · step · Σ q·x` per lane for block pair `p` and each input.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pair_step<const BITS: u32, const BPG: usize, const N: usize>(
    pw: *const u8,
    ps: *const f32,
    pq: &[*const i16; N],
    pst: &[*const f32; N],
    p: usize,
    acc: &mut [__m512; N],
) {
    let (lo, hi) = unpack_pair::<BITS>(pw, p);
    let scale = pair_scale::<BPG>(ps, p);
    for i in 0..N {
        let s = pair_products(lo, hi, pq[i].add(p * QSPAN));
        let steps = _mm512_loadu_ps(pst[i].add(p * 2 * STEP_LANES));
        let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), steps);
        acc[i] = _mm512_fmadd_ps(t, scale, acc[i]);
    }
}

/// `Σ scale·step·Σ q·x` over a row's blocks (no bias term) for `N` inputs: pairs of blocks
/// alternate between two accumulators per input, then a lone last block.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows<const BITS: u32, const BPG: usize, const N: usize>(
    words: &[u32],
    scales: &[f32],
    xs: &[QInput<'_>],
) -> [f32; N] {
    let blocks = xs[0].codes.len() / QBLOCK;
    let pw = words.as_ptr().cast::<u8>();
    let ps = scales.as_ptr();
    let pq: [*const i16; N] = std::array::from_fn(|i| xs[i].codes.as_ptr());
    let pst: [*const f32; N] = std::array::from_fn(|i| xs[i].steps.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); N]; 2];
    let pairs = blocks / 2;
    let mut p = 0;
    while p + 2 <= pairs {
        pair_step::<BITS, BPG, N>(pw, ps, &pq, &pst, p, &mut acc[0]);
        pair_step::<BITS, BPG, N>(pw, ps, &pq, &pst, p + 1, &mut acc[1]);
        p += 2;
    }
    if p < pairs {
        pair_step::<BITS, BPG, N>(pw, ps, &pq, &pst, p, &mut acc[0]);
    }
    if blocks % 2 == 1 {
        let b = blocks - 1;
        let (lo, hi) = unpack_last::<BITS>(pw, b);
        let scale = _mm512_set1_ps(*ps.add(b / BPG));
        for i in 0..N {
            let q = pq[i].add(QBLOCK * b);
            let e = _mm512_maskz_loadu_epi16(0xffff, q.cast());
            let o = _mm512_maskz_loadu_epi16(0xffff, q.add(QBLOCK / 2).cast());
            let s = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, e), hi, o);
            let steps = _mm512_maskz_loadu_ps(0x00ff, pst[i].add(STEP_LANES * b));
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), steps);
            acc[0][i] = _mm512_fmadd_ps(t, scale, acc[0][i]);
        }
    }
    std::array::from_fn(|i| _mm512_reduce_add_ps(_mm512_add_ps(acc[0][i], acc[1][i])))
}

/// [`super::affine::AffineDots::rows`] on this tier: [`ROWS`] weight rows (codes `words`,
/// per-group `scales` and `biases`) against one prepared input, whose codes and steps are
/// loaded once per block pair for all of them. `ahead` (the codes the next call will read)
/// is prefetched into L1 as the pairs go by. Lengths checked by the caller.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dot_affine_rows(
    bits: u8,
    group_size: usize,
    words: [&[u32]; ROWS],
    scales: [&[f32]; ROWS],
    biases: [&[f32]; ROWS],
    x: &QInput<'_>,
    ahead: &[u32],
    out: &mut [f32; ROWS],
) {
    let dots = match (bits, group_size / QBLOCK) {
        (4, 1) => many_rows::<4, 1>(words, scales, x, ahead),
        (4, 2) => many_rows::<4, 2>(words, scales, x, ahead),
        (4, _) => many_rows::<4, 4>(words, scales, x, ahead),
        (_, 1) => many_rows::<8, 1>(words, scales, x, ahead),
        (_, 2) => many_rows::<8, 2>(words, scales, x, ahead),
        (_, _) => many_rows::<8, 4>(words, scales, x, ahead),
    };
    let sums = x.group_sums(group_size).unwrap_or_default();
    for ((o, d), b) in out.iter_mut().zip(dots).zip(biases) {
        *o = d + bias_dot(b, sums);
    }
}

/// Weight rows [`dot_affine_rows`] runs together.
pub(super) const ROWS: usize = 4;

/// `acc[r] += scale_r · step · Σ q_r·x` per lane for block pair `p` and each of the rows,
/// with the input's codes and steps loaded once.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_pair_step<const BITS: u32, const BPG: usize>(
    pw: &[*const u8; ROWS],
    ps: &[*const f32; ROWS],
    pq: *const i16,
    pst: *const f32,
    p: usize,
    acc: &mut [__m512; ROWS],
) {
    let q0 = _mm512_loadu_si512(pq.add(p * QSPAN).cast());
    let q1 = _mm512_loadu_si512(pq.add(p * QSPAN + QSPAN / 2).cast());
    let steps = _mm512_loadu_ps(pst.add(p * 2 * STEP_LANES));
    for r in 0..ROWS {
        let (lo, hi) = unpack_pair::<BITS>(pw[r], p);
        let s = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, q0), hi, q1);
        let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), steps);
        acc[r] = _mm512_fmadd_ps(t, pair_scale::<BPG>(ps[r], p), acc[r]);
    }
}

/// `Σ scale·step·Σ q·x` (no bias term) of [`ROWS`] weight rows against one input: pairs of
/// blocks alternate between two accumulators per row, then a lone last block.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn many_rows<const BITS: u32, const BPG: usize>(
    words: [&[u32]; ROWS],
    scales: [&[f32]; ROWS],
    x: &QInput<'_>,
    ahead: &[u32],
) -> [f32; ROWS] {
    let blocks = x.codes.len() / QBLOCK;
    let pw = words.map(|w| w.as_ptr().cast::<u8>());
    let ps = scales.map(<[f32]>::as_ptr);
    let (pq, pst) = (x.codes.as_ptr(), x.steps.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); ROWS]; 2];
    let pairs = blocks / 2;
    // Cache lines of `ahead` to prefetch every two pairs, so that all are asked for by the
    // last pairs.
    let lines = std::mem::size_of_val(ahead).div_ceil(64);
    let per_step = lines.div_ceil(pairs.div_ceil(2).max(1));
    let pa = ahead.as_ptr().cast::<i8>();
    let mut p = 0;
    while p + 2 <= pairs {
        for k in 0..per_step {
            let line = p / 2 * per_step + k;
            if line < lines {
                _mm_prefetch::<_MM_HINT_T0>(pa.add(64 * line));
            }
        }
        rows_pair_step::<BITS, BPG>(&pw, &ps, pq, pst, p, &mut acc[0]);
        rows_pair_step::<BITS, BPG>(&pw, &ps, pq, pst, p + 1, &mut acc[1]);
        p += 2;
    }
    if p < pairs {
        rows_pair_step::<BITS, BPG>(&pw, &ps, pq, pst, p, &mut acc[0]);
    }
    if blocks % 2 == 1 {
        let b = blocks - 1;
        let q = pq.add(QBLOCK * b);
        let e = _mm512_maskz_loadu_epi16(0xffff, q.cast());
        let o = _mm512_maskz_loadu_epi16(0xffff, q.add(QBLOCK / 2).cast());
        let steps = _mm512_maskz_loadu_ps(0x00ff, pst.add(STEP_LANES * b));
        for r in 0..ROWS {
            let (lo, hi) = unpack_last::<BITS>(pw[r], b);
            let s = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), lo, e), hi, o);
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), steps);
            acc[0][r] = _mm512_fmadd_ps(t, _mm512_set1_ps(*ps[r].add(b / BPG)), acc[0][r]);
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(_mm512_add_ps(acc[0][r], acc[1][r])))
}
