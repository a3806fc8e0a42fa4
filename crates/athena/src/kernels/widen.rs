//! Half-precision values widened to f32 in bulk: a quantized row's bf16 or f16 scales and
//! biases before each block of products. half's slice conversion runs bf16 value by value
//! (and this crate is built for baseline x86-64, so a plain loop gets SSE2 at best), which
//! at decode cost about a third as much as the 4-bit products it fed.

use half::{bf16, f16};

/// `src` widened into `dst` (the shorter length): [`bf16::to_f32`]'s value for every
/// non-NaN input, and a NaN for a NaN (its payload shifted as is, not quieted).
pub fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the CPU has AVX-512 F and BW (checked just above).
        return unsafe { x86::bf16_avx512(src, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { x86::bf16_avx2(src, dst) };
    }
    bf16_plain(src, dst);
}

/// `src` widened into `dst` (the shorter length), exactly as `f16::to_f32` does.
pub fn widen_f16(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { x86::f16_avx512(src, dst) };
    }
    // half's own slice conversion uses F16C eight at a time where the CPU has it.
    let n = src.len().min(dst.len());
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&src[..n], &mut dst[..n]);
}

fn bf16_plain(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s.to_bits()) << 16);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    /// Sixteen values at a time: zero-extend to 32 bits and shift into the high half.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bf16_avx512(src: &[bf16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s.add(i).cast()));
            _mm512_storeu_ps(d.add(i), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)));
            i += 16;
        }
        super::bf16_plain(&src[i..n], &mut dst[i..n]);
    }

    /// [`bf16_avx512`] eight values at a time.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bf16_avx2(src: &[bf16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(s.add(i).cast()));
            _mm256_storeu_ps(d.add(i), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)));
            i += 8;
        }
        super::bf16_plain(&src[i..n], &mut dst[i..n]);
    }

    /// Sixteen values at a time with `vcvtph2ps`, the rest one by one.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f16_avx512(src: &[f16], dst: &mut [f32]) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 16-bit pattern, at lengths that leave each possible remainder after the
    /// sixteen-wide steps.
    #[test]
    fn widening_matches_half_on_every_bit_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for len in [all.len(), 65_519, 17, 15, 1, 0] {
            let bits = &all[all.len() - len..];
            let b: Vec<bf16> = bits.iter().map(|&x| bf16::from_bits(x)).collect();
            let h: Vec<f16> = bits.iter().map(|&x| f16::from_bits(x)).collect();
            let mut out = vec![0f32; len];
            widen_bf16(&b, &mut out);
            for (v, o) in b.iter().zip(&out) {
                match v.is_nan() {
                    true => assert!(o.is_nan(), "bf16 {:#06x}", v.to_bits()),
                    false => assert_eq!(o.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits()),
                }
            }
            widen_f16(&h, &mut out);
            for (v, o) in h.iter().zip(&out) {
                match v.is_nan() {
                    true => assert!(o.is_nan(), "f16 {:#06x}", v.to_bits()),
                    false => assert_eq!(o.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits()),
                }
            }
        }
    }

    #[test]
    fn widening_stops_at_the_shorter_slice() {
        let src = vec![bf16::from_f32(2.0); 40];
        let mut dst = vec![-1f32; 20];
        widen_bf16(&src, &mut dst);
        assert!(dst.iter().all(|&v| v == 2.0));
        let mut long = vec![-1f32; 50];
        widen_bf16(&src, &mut long);
        assert!(long[..40].iter().all(|&v| v == 2.0) && long[40..].iter().all(|&v| v == -1.0));
    }
}
