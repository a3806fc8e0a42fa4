//! AVX-512 versions of the affine int16 kernels. Every function here requires a CPU with
//! AVX-512 F, BW and VNNI; the callers in [`crate::kernels::affine`] check that at run time and pass
//! slices of the lengths each function names.

use std::arch::x86_64::*;

use std::ops::Range;

use crate::kernels::layout::{
    bias_dot, bias_tail, GroupValues, QInput, BIAS_LANES, BLOCK_LEN, INPUTS_PER_PASS,
    ROWS_PER_BLOCK, SPAN_LEN, STEP_LANES,
};

/// A prepared input form with an AVX-512 tile kernel: the int16 form ([`QInput`], here) and
/// the int8 form ([`crate::kernels::affine8::QInput8`], in `avx512_int8`). The entry points below
/// serve both.
pub(crate) trait TileInput: Sized {
    /// `Σ scale·step·Σ q·x` (no bias term) of `R` weight rows against `N` inputs, `ahead`
    /// prefetched over the row. Requires AVX-512 F, BW and VNNI; lengths checked by the
    /// caller.
    unsafe fn tile<const BITS: u32, const BPG: usize, const R: usize, const N: usize>(
        words: [&[u32]; R],
        scales: [&[f32]; R],
        xs: &[Self],
        ahead: &[u32],
    ) -> [[f32; N]; R];
    /// `Σ x` per group of `group_size` values.
    fn sums(&self, group_size: usize) -> &[f32];
}

impl TileInput for QInput<'_> {
    #[inline]
    unsafe fn tile<const BITS: u32, const BPG: usize, const R: usize, const N: usize>(
        words: [&[u32]; R],
        scales: [&[f32]; R],
        xs: &[Self],
        ahead: &[u32],
    ) -> [[f32; N]; R] {
        tile::<BITS, BPG, R, N>(words, scales, xs, ahead)
    }
    fn sums(&self, group_size: usize) -> &[f32] {
        self.group_sums(group_size).unwrap_or_default()
    }
}

/// `$run!(BITS, BPG)` for the bit width `$bits` (4, else 8) and the blocks of [`BLOCK_LEN`] per
/// group of `$group` values (1, 2, else 4), fixed at compile time.
macro_rules! by_width {
    ($bits:expr, $group:expr, $run:ident) => {
        match ($bits, $group / BLOCK_LEN) {
            (4, 1) => $run!(4, 1),
            (4, 2) => $run!(4, 2),
            (4, _) => $run!(4, 4),
            (_, 1) => $run!(8, 1),
            (_, 2) => $run!(8, 2),
            (_, _) => $run!(8, 4),
        }
    };
}

/// One weight row against up to [`INPUTS_PER_PASS`] prepared inputs (`out[k]`, as many as `xs`):
/// [`crate::kernels::affine::AffineDots::row`] and [`crate::kernels::affine8::Int8Dots::row`] on this instruction set.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_one_row<X: TileInput>(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[X],
    out: &mut [f32],
) {
    let n = xs.len().min(out.len()).min(INPUTS_PER_PASS);
    let xs = &xs[..n];
    let mut dots = [0f32; INPUTS_PER_PASS];
    let (w, s) = ([words], [scales]);
    macro_rules! run {
        ($bits:literal, $bpg:literal) => {
            match n {
                0 => {}
                1 => dots[..1].copy_from_slice(&X::tile::<$bits, $bpg, 1, 1>(w, s, xs, &[])[0]),
                2 => dots[..2].copy_from_slice(&X::tile::<$bits, $bpg, 1, 2>(w, s, xs, &[])[0]),
                3 => dots[..3].copy_from_slice(&X::tile::<$bits, $bpg, 1, 3>(w, s, xs, &[])[0]),
                _ => dots.copy_from_slice(&X::tile::<$bits, $bpg, 1, 4>(w, s, xs, &[])[0]),
            }
        };
    }
    by_width!(bits, group_size, run);
    for ((o, d), x) in out[..n].iter_mut().zip(dots).zip(xs) {
        *o = d + bias_dot(biases, x.sums(group_size));
    }
}

/// [`ROWS_PER_BLOCK`] weight rows against prepared inputs (`out[r · n + k]`, `n = xs.len()`, one to
/// [`INPUTS_PER_PASS`]): [`crate::kernels::affine::AffineDots::rows`] and [`crate::kernels::affine8::Int8Dots::rows`] on
/// this instruction set. Against one input the four rows run together, the input's codes loaded once
/// for all of them and `ahead` (the codes the next call will read) prefetched meanwhile;
/// against more, two rows at a time share each input load.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_rows<X: TileInput>(
    bits: u8,
    group_size: usize,
    words: [&[u32]; ROWS_PER_BLOCK],
    scales: [&[f32]; ROWS_PER_BLOCK],
    biases: [&[f32]; ROWS_PER_BLOCK],
    xs: &[X],
    ahead: &[u32],
    out: &mut [f32],
) {
    let n = xs.len().min(INPUTS_PER_PASS);
    let xs = &xs[..n];
    let mut dots = [[0f32; INPUTS_PER_PASS]; ROWS_PER_BLOCK];
    if n == 1 {
        macro_rules! run {
            ($bits:literal, $bpg:literal) => {
                for (d, t) in dots
                    .iter_mut()
                    .zip(X::tile::<$bits, $bpg, ROWS_PER_BLOCK, 1>(
                        words, scales, xs, ahead,
                    ))
                {
                    d[0] = t[0];
                }
            };
        }
        by_width!(bits, group_size, run);
    } else {
        for half in 0..ROWS_PER_BLOCK / 2 {
            let (r0, r1) = (2 * half, 2 * half + 1);
            let (w, s) = ([words[r0], words[r1]], [scales[r0], scales[r1]]);
            macro_rules! put {
                ($bits:literal, $bpg:literal, $n:literal) => {{
                    let [d0, d1] = X::tile::<$bits, $bpg, 2, $n>(w, s, xs, &[]);
                    dots[r0][..$n].copy_from_slice(&d0);
                    dots[r1][..$n].copy_from_slice(&d1);
                }};
            }
            macro_rules! run {
                ($bits:literal, $bpg:literal) => {
                    match n {
                        2 => put!($bits, $bpg, 2),
                        3 => put!($bits, $bpg, 3),
                        _ => put!($bits, $bpg, 4),
                    }
                };
            }
            by_width!(bits, group_size, run);
        }
    }
    for (r, d) in dots.iter().enumerate() {
        for (k, x) in xs.iter().enumerate() {
            out[r * n + k] = d[k] + bias_dot(biases[r], x.sums(group_size));
        }
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

/// `acc` plus the sums of pairs of products `a·b` of int16 lanes, per int32 lane: one
/// `vpdpwssd`, written out because the compiler splits the intrinsic into `vpmaddwd` and
/// `vpaddd` (twice the instructions in the decode kernel's inner loop).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    std::arch::asm!(
        "vpdpwssd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
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

/// `acc[r][k] += scale_r · step · Σ q_r·x_k` per lane for block pair `p`, every row `r` and
/// input `k`: each input's codes and steps loaded once, each row's codes unpacked once.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pair_step<const BITS: u32, const BPG: usize, const R: usize, const N: usize>(
    pw: &[*const u8; R],
    ps: &[*const f32; R],
    pq: &[*const i16; N],
    pst: &[*const f32; N],
    p: usize,
    acc: &mut [[__m512; N]; R],
) {
    let mut q0 = [_mm512_setzero_si512(); N];
    let mut q1 = [_mm512_setzero_si512(); N];
    let mut st = [_mm512_setzero_ps(); N];
    for k in 0..N {
        q0[k] = _mm512_loadu_si512(pq[k].add(p * SPAN_LEN).cast());
        q1[k] = _mm512_loadu_si512(pq[k].add(p * SPAN_LEN + SPAN_LEN / 2).cast());
        st[k] = _mm512_loadu_ps(pst[k].add(p * 2 * STEP_LANES));
    }
    for r in 0..R {
        let (lo, hi) = unpack_pair::<BITS>(pw[r], p);
        let scale = pair_scale::<BPG>(ps[r], p);
        for k in 0..N {
            let s = dpwssd(_mm512_madd_epi16(lo, q0[k]), hi, q1[k]);
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), st[k]);
            acc[r][k] = _mm512_fmadd_ps(t, scale, acc[r][k]);
        }
    }
}

/// `Σ scale·step·Σ q·x` (no bias term) of `R` weight rows against `N` inputs: block pairs
/// alternate between two sets of accumulators, then a lone last block; `ahead` is prefetched
/// over the pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const BITS: u32, const BPG: usize, const R: usize, const N: usize>(
    words: [&[u32]; R],
    scales: [&[f32]; R],
    xs: &[QInput<'_>],
    ahead: &[u32],
) -> [[f32; N]; R] {
    if BPG == 2 {
        return tile_spans::<BITS, R, N>(words, scales.map(GroupValues::F32), xs, ahead);
    }
    let blocks = xs[0].codes.len() / BLOCK_LEN;
    let pw = words.map(|w| w.as_ptr().cast::<u8>());
    let ps = scales.map(<[f32]>::as_ptr);
    let mut pq = [std::ptr::null::<i16>(); N];
    let mut pst = [std::ptr::null::<f32>(); N];
    for k in 0..N {
        pq[k] = xs[k].codes.as_ptr();
        pst[k] = xs[k].steps.as_ptr();
    }
    // Two sets of accumulators, separate locals so that they stay in registers.
    let mut acc0 = [[_mm512_setzero_ps(); N]; R];
    let mut acc1 = [[_mm512_setzero_ps(); N]; R];
    let pairs = blocks / 2;
    let ahead = SpreadPrefetch::new(ahead, pairs.div_ceil(2));
    let mut p = 0;
    while p + 2 <= pairs {
        ahead.step(p / 2);
        pair_step::<BITS, BPG, R, N>(&pw, &ps, &pq, &pst, p, &mut acc0);
        pair_step::<BITS, BPG, R, N>(&pw, &ps, &pq, &pst, p + 1, &mut acc1);
        p += 2;
    }
    if p < pairs {
        pair_step::<BITS, BPG, R, N>(&pw, &ps, &pq, &pst, p, &mut acc0);
    }
    if blocks % 2 == 1 {
        let b = blocks - 1;
        for k in 0..N {
            let q = pq[k].add(BLOCK_LEN * b);
            let e = _mm512_maskz_loadu_epi16(0xffff, q.cast());
            let o = _mm512_maskz_loadu_epi16(0xffff, q.add(BLOCK_LEN / 2).cast());
            let steps = _mm512_maskz_loadu_ps(0x00ff, pst[k].add(STEP_LANES * b));
            for r in 0..R {
                let (lo, hi) = unpack_last::<BITS>(pw[r], b);
                let s = dpwssd(_mm512_madd_epi16(lo, e), hi, o);
                let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), steps);
                let scale = _mm512_set1_ps(*ps[r].add(b / BPG));
                acc0[r][k] = _mm512_fmadd_ps(t, scale, acc0[r][k]);
            }
        }
    }
    let mut out = [[0f32; N]; R];
    for r in 0..R {
        for k in 0..N {
            out[r][k] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r][k], acc1[r][k]));
        }
    }
    out
}

/// Groups of a row whose scales [`tile_spans`] folds with the spans' steps in one pass.
const FOLD: usize = 16;

/// [`tile`] for groups of 64 values, one span of the input each: the span's one step folded
/// into the row's group scale, [`FOLD`] groups at a time (`scale · step` per row and input),
/// so that each group costs one conversion and one multiply-add per row and input instead of
/// a multiply more. Groups alternate between two sets of accumulators; `ahead` is prefetched
/// over them.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_spans<const BITS: u32, const R: usize, const N: usize>(
    words: [&[u32]; R],
    scales: [GroupValues<'_>; R],
    xs: &[QInput<'_>],
    ahead: &[u32],
) -> [[f32; N]; R] {
    let groups = xs[0].codes.len() / SPAN_LEN;
    let pw = words.map(|w| w.as_ptr().cast::<u8>());
    let pq: [*const i16; N] = std::array::from_fn(|k| xs[k].codes.as_ptr());
    let mut acc0 = [[_mm512_setzero_ps(); N]; R];
    let mut acc1 = [[_mm512_setzero_ps(); N]; R];
    let ahead = SpreadPrefetch::new(ahead, groups.div_ceil(2));
    let mut folded = [[[0f32; FOLD]; N]; R];
    let mut g0 = 0;
    while g0 < groups {
        let count = (groups - g0).min(FOLD);
        let steps: [__m512; N] =
            std::array::from_fn(|k| load_fold(GroupValues::F32(xs[k].spans), g0, count));
        for r in 0..R {
            let scale = load_fold(scales[r], g0, count);
            for k in 0..N {
                _mm512_storeu_ps(folded[r][k].as_mut_ptr(), _mm512_mul_ps(scale, steps[k]));
            }
        }
        let mut j = 0;
        while j + 2 <= count {
            ahead.step((g0 + j) / 2);
            span_step::<BITS, R, N>(&pw, &pq, &folded, g0 + j, j, &mut acc0);
            span_step::<BITS, R, N>(&pw, &pq, &folded, g0 + j + 1, j + 1, &mut acc1);
            j += 2;
        }
        if j < count {
            ahead.step((g0 + j) / 2);
            span_step::<BITS, R, N>(&pw, &pq, &folded, g0 + j, j, &mut acc0);
        }
        g0 += count;
    }
    let mut out = [[0f32; N]; R];
    for r in 0..R {
        for k in 0..N {
            out[r][k] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r][k], acc1[r][k]));
        }
    }
    out
}

/// Values `at..at + count` (`count` ≤ [`FOLD`], the rest of the lanes zero) as f32 lanes,
/// widened from bf16 or f16 as stored.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn load_fold(v: GroupValues<'_>, at: usize, count: usize) -> __m512 {
    let mask: __mmask16 = match count {
        FOLD => 0xffff,
        c => (1u16 << c) - 1,
    };
    match v {
        GroupValues::F32(v) => _mm512_maskz_loadu_ps(mask, v.as_ptr().add(at)),
        GroupValues::Bf16(v) => {
            let w = _mm512_cvtepu16_epi32(half_lanes(v.as_ptr().cast(), at, count));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
        }
        GroupValues::F16(v) => _mm512_cvtph_ps(half_lanes(v.as_ptr().cast(), at, count)),
    }
}

/// 16-bit values `at..at + count` of `p` (`count` ≤ [`FOLD`]) in the low lanes, zeros above.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn half_lanes(p: *const u16, at: usize, count: usize) -> __m256i {
    if count == FOLD {
        return _mm256_loadu_si256(p.add(at).cast());
    }
    let mut h = [0u16; FOLD];
    std::ptr::copy_nonoverlapping(p.add(at), h.as_mut_ptr(), count);
    _mm256_loadu_si256(h.as_ptr().cast())
}

/// [`crate::kernels::decode::decode_rows`] on AVX-512: 4-bit rows four at a time through
/// [`tile_spans`], the rest (and 8-bit rows) one by one, the next block prefetched meanwhile,
/// each output its row's tile plus the bias term as [`dot_rows`] and [`dot_one_row`] add it.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn decode_rows<const BITS: u32>(
    packed: &[u32],
    row_words: usize,
    scales: GroupValues<'_>,
    biases: GroupValues<'_>,
    x: &QInput<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) {
    // 4-bit rows four at a time, sharing each load of the input, then the last few one by
    // one; 8-bit rows (twice the bytes per product) stream faster one by one.
    let r = match BITS {
        4 => row_blocks::<BITS, ROWS_PER_BLOCK>(
            packed,
            row_words,
            scales,
            biases,
            x,
            rows.clone(),
            out,
        ),
        _ => rows.start,
    };
    let rest = &mut out[r - rows.start..];
    row_blocks::<BITS, 1>(packed, row_words, scales, biases, x, r..rows.end, rest);
}

/// [`decode_rows`]' whole blocks of `R` rows from `rows.start`, the next block's codes,
/// scales and biases prefetched meanwhile; returns the first row it left.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn row_blocks<const BITS: u32, const R: usize>(
    packed: &[u32],
    row_words: usize,
    scales: GroupValues<'_>,
    biases: GroupValues<'_>,
    x: &QInput<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> usize {
    let groups = x.codes.len() / SPAN_LEN;
    let sums = x.sums[1];
    let xs = std::slice::from_ref(x);
    let mut r = rows.start;
    while r + R <= rows.end {
        let next =
            ((r + R) * row_words).min(packed.len())..((r + 2 * R) * row_words).min(packed.len());
        // The next block's scales and biases too: read first in its fold, a miss would stall.
        let ahead = (r + R) * groups..(r + 2 * R) * groups;
        scales.prefetch(ahead.clone());
        biases.prefetch(ahead);
        let block = &packed[r * row_words..(r + R) * row_words];
        let mut words = [block; R];
        let mut rows_scales = [scales; R];
        for k in 0..R {
            words[k] = &block[k * row_words..(k + 1) * row_words];
            rows_scales[k] = scales.slice((r + k) * groups..(r + k + 1) * groups);
        }
        let t = tile_spans::<BITS, R, 1>(words, rows_scales, xs, &packed[next]);
        for (k, t) in t.iter().enumerate() {
            let b = biases.slice((r + k) * groups..(r + k + 1) * groups);
            out[r + k - rows.start] = t[0] + bias_dot_as_stored(b, sums);
        }
        r += R;
    }
    r
}

/// [`bias_dot`] of a row's biases as stored (widened as they are read) with an input's
/// group sums, its lanes in one register: the same sums, bit for bit.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn bias_dot_as_stored(biases: GroupValues<'_>, sums: &[f32]) -> f32 {
    let whole = sums.len() / BIAS_LANES * BIAS_LANES;
    let mut acc = _mm512_setzero_ps();
    for at in (0..whole).step_by(BIAS_LANES) {
        let b = load_fold(biases, at, BIAS_LANES);
        acc = _mm512_add_ps(
            acc,
            _mm512_mul_ps(b, _mm512_loadu_ps(sums.as_ptr().add(at))),
        );
    }
    // The lanes folded in halves, as `bias_total` adds them.
    let a = _mm512_castps_pd(acc);
    let h = _mm256_add_ps(
        _mm256_castpd_ps(_mm512_castpd512_pd256(a)),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(a)),
    );
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let e = _mm_add_ps(q, _mm_movehl_ps(q, q));
    let total = _mm_cvtss_f32(_mm_add_ss(e, _mm_movehdup_ps(e)));
    let tail = (whole..sums.len()).map(|i| biases.value(i));
    total + bias_tail(tail, &sums[whole..])
}

/// `acc[r][k] += folded[r][k][j] · Σ q_r·x_k` per lane for group (and span) `g`, every row
/// `r` and input `k`: each input's codes loaded once, each row's codes unpacked once.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn span_step<const BITS: u32, const R: usize, const N: usize>(
    pw: &[*const u8; R],
    pq: &[*const i16; N],
    folded: &[[[f32; FOLD]; N]; R],
    g: usize,
    j: usize,
    acc: &mut [[__m512; N]; R],
) {
    let mut q0 = [_mm512_setzero_si512(); N];
    let mut q1 = [_mm512_setzero_si512(); N];
    for k in 0..N {
        q0[k] = _mm512_loadu_si512(pq[k].add(g * SPAN_LEN).cast());
        q1[k] = _mm512_loadu_si512(pq[k].add(g * SPAN_LEN + SPAN_LEN / 2).cast());
    }
    for r in 0..R {
        let (lo, hi) = unpack_pair::<BITS>(pw[r], g);
        for k in 0..N {
            let s = dpwssd(_mm512_madd_epi16(lo, q0[k]), hi, q1[k]);
            let scale = _mm512_set1_ps(folded[r][k][j]);
            acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r][k]);
        }
    }
}

/// Prefetches of a slice spread over the steps of a loop: the cache lines of `ahead` asked for
/// a few at each of `steps` steps, all of them by the last.
pub(crate) struct SpreadPrefetch {
    p: *const i8,
    lines: usize,
    per_step: usize,
}

impl SpreadPrefetch {
    pub(crate) fn new(ahead: &[u32], steps: usize) -> SpreadPrefetch {
        let lines = std::mem::size_of_val(ahead).div_ceil(64);
        SpreadPrefetch {
            p: ahead.as_ptr().cast::<i8>(),
            lines,
            per_step: lines.div_ceil(steps.max(1)),
        }
    }

    /// Asks for step `i`'s lines (a prefetch never faults, whatever the address).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(crate) unsafe fn step(&self, i: usize) {
        for k in 0..self.per_step {
            let line = i * self.per_step + k;
            if line < self.lines {
                _mm_prefetch::<_MM_HINT_T0>(self.p.wrapping_add(64 * line));
            }
        }
    }
}

/// The largest `|v|` of `xs` (its values finite).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn max_abs(xs: &[f32]) -> f32 {
    let (n, p) = (xs.len(), xs.as_ptr());
    let mut m = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let len = (n - i).min(16);
        let mask: __mmask16 = (((1u32 << len) - 1) & 0xffff) as __mmask16;
        m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, p.add(i))));
        i += len;
    }
    _mm512_reduce_max_ps(m)
}

/// [`crate::kernels::affine::block_codes_plain`] sixteen pairs at once: the block's even and odd
/// values split by two permutes, scaled, rounded to nearest (ties to even, as `code` rounds)
/// and saturated to int16. `xb` holds [`BLOCK_LEN`] values, `ev` and `od` half as many.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn block_codes(xb: &[f32], inv: f32, ev: &mut [i16], od: &mut [i16]) {
    let a = _mm512_loadu_ps(xb.as_ptr());
    let b = _mm512_loadu_ps(xb.as_ptr().add(16));
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    let s = _mm512_set1_ps(inv);
    for (idx, out) in [(evens, ev.as_mut_ptr()), (odds, od.as_mut_ptr())] {
        let v = _mm512_mul_ps(_mm512_permutex2var_ps(a, idx, b), s);
        let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        _mm256_storeu_si256(out.cast(), _mm512_cvtsepi32_epi16(q));
    }
}
