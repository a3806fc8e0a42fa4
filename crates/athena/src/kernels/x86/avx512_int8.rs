//! AVX-512 VNNI kernels of [`crate::kernels::affine8`]: weight codes (unsigned) times int8 input codes
//! (signed) with `vpdpbusd`, a span of 64 values a step. Every function here requires a CPU
//! with AVX-512 F, BW and VNNI; the callers check that at run time and pass slices of the
//! lengths each function names. The entry points are [`super::avx512`]'s, through
//! [`TileInput`].

use std::arch::x86_64::*;

use super::avx512::{SpreadPrefetch, TileInput};
use crate::kernels::layout::{QInput8, SPAN_LEN};

impl TileInput for QInput8<'_> {
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

/// One weight row's 64 codes of span `p` as bytes, in the order its inputs' codes are kept:
/// 8-bit codes as stored; 4-bit codes' 32 bytes in both halves of the register, the low
/// nibbles (even columns) kept in the first half and the high nibbles (odd columns) in the
/// second.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn span_codes<const BITS: u32>(pw: *const u8, p: usize) -> __m512i {
    if BITS == 8 {
        _mm512_loadu_si512(pw.add(p * SPAN_LEN).cast())
    } else {
        let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(pw.add(p * SPAN_LEN / 2).cast()));
        let v = _mm512_mask_srli_epi64::<4>(v, 0xf0, v);
        _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
    }
}

/// Per f32 lane, the scale of the group its products belong to in span `p`, for `BPG`
/// blocks per group: in natural order (8-bit) lanes 8–15 hold the second block's products,
/// evens first (4-bit) lanes 4–7 and 12–15 do.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn span_scale<const BITS: u32, const BPG: usize>(ps: *const f32, p: usize) -> __m512 {
    if BPG == 1 {
        let second: __mmask16 = if BITS == 8 { 0xff00 } else { 0xf0f0 };
        _mm512_mask_mov_ps(
            _mm512_set1_ps(*ps.add(2 * p)),
            second,
            _mm512_set1_ps(*ps.add(2 * p + 1)),
        )
    } else {
        _mm512_set1_ps(*ps.add(2 * p / BPG))
    }
}

/// `acc[r][k] += scale · step · Σ q·x` per lane for span `p`, every row `r` and input `k`:
/// each input's codes and steps loaded once, each row's codes unpacked once.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn span_step<const BITS: u32, const BPG: usize, const R: usize, const N: usize>(
    pw: &[*const u8; R],
    ps: &[*const f32; R],
    pa: &[*const i8; N],
    pst: &[*const f32; N],
    p: usize,
    acc: &mut [[__m512; N]; R],
) {
    let mut a = [_mm512_setzero_si512(); N];
    let mut st = [_mm512_setzero_ps(); N];
    for k in 0..N {
        a[k] = _mm512_loadu_si512(pa[k].add(p * SPAN_LEN).cast());
        st[k] = _mm512_loadu_ps(pst[k].add(p * 16));
    }
    for r in 0..R {
        let w = span_codes::<BITS>(pw[r], p);
        let scale = span_scale::<BITS, BPG>(ps[r], p);
        for k in 0..N {
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a[k]);
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(s), st[k]);
            acc[r][k] = _mm512_fmadd_ps(t, scale, acc[r][k]);
        }
    }
}

/// `Σ scale·step·Σ q·x` (no bias term) of `R` weight rows against `N` inputs: spans alternate
/// between two sets of accumulators; `ahead` is prefetched over the spans.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const BITS: u32, const BPG: usize, const R: usize, const N: usize>(
    words: [&[u32]; R],
    scales: [&[f32]; R],
    xs: &[QInput8<'_>],
    ahead: &[u32],
) -> [[f32; N]; R] {
    let spans = xs[0].codes.len() / SPAN_LEN;
    let pw = words.map(|w| w.as_ptr().cast::<u8>());
    let ps = scales.map(<[f32]>::as_ptr);
    let pa: [*const i8; N] = std::array::from_fn(|k| match BITS {
        8 => xs[k].codes.as_ptr(),
        _ => xs[k].even_codes.as_ptr(),
    });
    let pst: [*const f32; N] = std::array::from_fn(|k| match BITS {
        8 => xs[k].steps.as_ptr(),
        _ => xs[k].even_steps.as_ptr(),
    });
    // Two sets of accumulators, separate locals so that they stay in registers.
    let mut acc0 = [[_mm512_setzero_ps(); N]; R];
    let mut acc1 = [[_mm512_setzero_ps(); N]; R];
    let ahead = SpreadPrefetch::new(ahead, spans.div_ceil(2));
    let mut p = 0;
    while p + 2 <= spans {
        ahead.step(p / 2);
        span_step::<BITS, BPG, R, N>(&pw, &ps, &pa, &pst, p, &mut acc0);
        span_step::<BITS, BPG, R, N>(&pw, &ps, &pa, &pst, p + 1, &mut acc1);
        p += 2;
    }
    if p < spans {
        span_step::<BITS, BPG, R, N>(&pw, &ps, &pa, &pst, p, &mut acc0);
    }
    let mut out = [[0f32; N]; R];
    for r in 0..R {
        for k in 0..N {
            out[r][k] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r][k], acc1[r][k]));
        }
    }
    out
}
