//! Half-precision values widened to f32 in bulk on AVX-512 and AVX2 (the dispatcher is
//! [`crate::kernels::widen_bf16`] and [`crate::kernels::widen_f16`]).

use std::arch::x86_64::*;

use half::{bf16, f16};

/// Sixteen values at a time: zero-extend to 32 bits and shift into the high half.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn bf16_avx512(src: &[bf16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s.add(i).cast()));
        _mm512_storeu_ps(d.add(i), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)));
        i += 16;
    }
    bf16_tail(&src[i..n], &mut dst[i..n]);
}

/// [`bf16_avx512`] eight values at a time.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bf16_avx2(src: &[bf16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(s.add(i).cast()));
        _mm256_storeu_ps(d.add(i), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)));
        i += 8;
    }
    bf16_tail(&src[i..n], &mut dst[i..n]);
}

/// Sixteen values at a time with `vcvtph2ps`, the rest one by one.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn f16_avx512(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(
            d.add(i),
            _mm512_cvtph_ps(_mm256_loadu_si256(s.add(i).cast())),
        );
        i += 16;
    }
    for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = s.to_f32();
    }
}

/// The values past the last whole vector, one by one (a bf16 is the high half of an f32).
fn bf16_tail(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s.to_bits()) << 16);
    }
}
