//! Half-precision values widened to f32 in bulk: a quantized row's bf16 or f16 scales and
//! biases before each block of products. half's slice conversion runs bf16 value by value
//! (and this crate is built for baseline x86-64, so a plain loop gets SSE2 at best), which
//! at decode cost about a third as much as the 4-bit products it fed.

use half::{bf16, f16};

#[cfg(target_arch = "x86_64")]
use super::x86::widen as x86;
use super::{cpu, layout::GroupValues};

/// `src` widened into `dst` (the shorter length): [`bf16::to_f32`]'s value for every
/// non-NaN input, and a NaN for a NaN (its payload shifted as is, not quieted).
pub fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu::has_avx512() {
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
    if cpu::has_avx512() {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { x86::f16_avx512(src, dst) };
    }
    // half's own slice conversion uses F16C eight at a time where the CPU has it.
    let n = src.len().min(dst.len());
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&src[..n], &mut dst[..n]);
}

/// One matrix's scales or biases as f32, in bulk.
impl GroupValues<'_> {
    /// The values as f32, borrowed or widened into `buf` (at least as long).
    #[inline]
    pub(crate) fn widened<'b>(&'b self, buf: &'b mut [f32]) -> &'b [f32] {
        match *self {
            GroupValues::F32(v) => v,
            GroupValues::Bf16(v) => {
                widen_bf16(v, buf);
                &buf[..v.len()]
            }
            GroupValues::F16(v) => {
                widen_f16(v, buf);
                &buf[..v.len()]
            }
        }
    }
}

fn bf16_plain(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s.to_bits()) << 16);
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
