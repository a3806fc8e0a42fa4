//! Products and conversions of f32 and bf16 vectors: each picks the AVX-512, AVX2+FMA or
//! portable kernel at run time. Dot products keep eight-lane f32 partial sums and fold them
//! into an f64 total every [`FLUSH`](super::layout::FLUSH) elements, so a long row is summed
//! as accurately as a short one.

use half::bf16;

use super::cpu::{has_avx2_fma, has_avx512};
use super::portable;
#[cfg(target_arch = "x86_64")]
use super::x86::{avx2, avx512_float};

/// `v` rounded to the nearest bf16 (ties to even), as f32: [`bf16::from_f32`]'s result, NaN
/// kept quiet, written without branches so that loops over slices vectorize.
#[inline]
pub fn round_bf16(v: f32) -> f32 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    f32::from_bits(if nan {
        (b | 0x0040_0000) & 0xffff_0000
    } else {
        rounded
    })
}

/// `Σ a·b` over two slices of equal length (the shorter length otherwise).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); lengths are equal.
        return unsafe { avx2::dot(a, b) };
    }
    portable::dot(a, b)
}

/// `y += a·x` over the common length.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); lengths are equal.
        return unsafe { avx2::axpy(a, x, y) };
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * *x;
    }
}

/// `[Σ w·x₀, Σ w·x₁, Σ w·x₂, Σ w·x₃]`: one weight row against four input rows, each read
/// once per step. Every `x` must be at least as long as `w`.
#[inline]
pub fn dot4(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    let n = x.iter().fold(w.len(), |n, x| n.min(x.len()));
    let w = &w[..n];
    let x = x.map(|x| &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; every slice has length n.
        return unsafe { avx2::dot4(w, x) };
    }
    x.map(|x| portable::dot(w, x))
}

/// `[[Σ w₀·x₀, …, Σ w₀·x₃], [Σ w₁·x₀, …]]`: two weight rows against four input rows, each
/// input value loaded once for both rows. Every slice must be at least as long as `w[0]`.
/// Each pair is summed in [`dot`]'s order, so it equals `dot` of that pair bit for bit.
#[inline]
pub fn dot2x4(w: [&[f32]; 2], x: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = x
        .iter()
        .fold(w[0].len().min(w[1].len()), |n, x| n.min(x.len()));
    let w = w.map(|w| &w[..n]);
    let x = x.map(|x| &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; every slice has length n.
        return unsafe { avx2::dot2x4(w, x) };
    }
    portable::dot2x4(w, x)
}

/// `Σ w·x` with `w` in bf16, widened exactly to f32 on the fly.
#[inline]
pub fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; lengths are equal.
        return unsafe { avx2::dot_bf16(w, x) };
    }
    portable::dot_bf16(w, x)
}

/// [`dot_bf16`] summed in another order, with more loads in flight (decode, where one row
/// is read once and the order need not match [`dot4`]'s). AVX2's eight-lane accumulators
/// already read the row at memory bandwidth (sixteen-lane AVX-512 ones are no faster).
#[inline]
pub fn dot_bf16_wide(w: &[bf16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; lengths are equal.
        return unsafe { avx2::dot_bf16_wide(w, x) };
    }
    portable::dot_bf16(w, x)
}

/// Widens bf16 values to f32 (exact) into `out` (as many as both hold).
#[inline]
pub fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
    let n = src.len().min(out.len());
    let (src, out) = (&src[..n], &mut out[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512 F/BW/VL are present (checked above); lengths are equal.
        unsafe { avx512_float::bf16_to_f32(src, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 is present; lengths are equal.
        unsafe { avx2::bf16_to_f32(src, out) };
        return;
    }
    for (o, s) in out.iter_mut().zip(src) {
        *o = s.to_f32();
    }
}

/// One group of MLX affine codes to weights: `out[i] = scale · code[i] + bias`, with the codes
/// of `words` packed 8 bits (4 a word) or 4 bits (8 a word, low nibble first). `out.len()`
/// codes are written; it must be a multiple of 8 and `words` must hold them. Returns `false`
/// (writing nothing) for other bit widths, which the caller unpacks itself.
#[inline]
pub fn dequantize_group(bits: u8, words: &[u32], scale: f32, bias: f32, out: &mut [f32]) -> bool {
    let per_word = match bits {
        4 => 8,
        8 => 4,
        _ => return false,
    };
    if !out.len().is_multiple_of(8) || words.len() * per_word < out.len() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; `words` holds `out.len()` codes (checked above).
        unsafe {
            match bits {
                4 => avx2::dequantize_q4(words, scale, bias, out),
                _ => avx2::dequantize_q8(words, scale, bias, out),
            }
        }
        return true;
    }
    portable::dequantize(bits, words, scale, bias, out);
    true
}
