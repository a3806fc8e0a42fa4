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
