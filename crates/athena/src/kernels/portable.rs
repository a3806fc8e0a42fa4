//! Portable versions of the kernels: eight independent f32 lanes the compiler can vectorize
//! for whatever the target offers, folded into f64 every [`FLUSH`] elements, and the integer products of quantized rows.

use half::bf16;

use super::layout::{bias_dot, code_index, QInput, BLOCK_LEN, FLUSH};

const LANES: usize = 8;

/// `Σ a·b`, `a` and `b` of equal length.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut total = 0f64;
    for (a, b) in a.chunks(FLUSH).zip(b.chunks(FLUSH)) {
        let mut acc = [0f32; LANES];
        let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (a, b) in ac.zip(bc) {
            for k in 0..LANES {
                acc[k] += a[k] * b[k];
            }
        }
        let tail: f32 = ar.iter().zip(br).map(|(a, b)| a * b).sum();
        total += f64::from(acc.iter().sum::<f32>()) + f64::from(tail);
    }
    total as f32
}

/// `Σ w·x` with `w` in bf16, `w` and `x` of equal length.
pub(super) fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    let mut total = 0f64;
    let mut buf = [0f32; FLUSH];
    for (w, x) in w.chunks(FLUSH).zip(x.chunks(FLUSH)) {
        let buf = &mut buf[..w.len()];
        for (b, w) in buf.iter_mut().zip(w) {
            *b = w.to_f32();
        }
        total += f64::from(dot(buf, x));
    }
    total as f32
}

/// `Σ w·x` over two bf16 slices of equal length, in f32 (each product is exact).
pub(super) fn dot_bf16_pairs(w: &[bf16], x: &[bf16]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a.to_f32() * b.to_f32()).sum()
}

/// `out[i] = scale · code[i] + bias` for 4- or 8-bit codes packed low bits first.
pub(super) fn dequantize(bits: u8, words: &[u32], scale: f32, bias: f32, out: &mut [f32]) {
    let per_word = 32 / usize::from(bits);
    let mask = (1u32 << bits) - 1;
    for (&word, out) in words.iter().zip(out.chunks_mut(per_word)) {
        for (k, o) in out.iter_mut().enumerate() {
            let code = (word >> (k as u32 * u32::from(bits))) & mask;
            *o = scale * code as f32 + bias;
        }
    }
}

/// Two weight rows against four input rows, each pair as [`dot`].
pub(super) fn dot2x4(w: [&[f32]; 2], x: [&[f32]; 4]) -> [[f32; 4]; 2] {
    w.map(|w| x.map(|x| dot(w, x)))
}

/// [`crate::kernels::affine::dot_affine_on`] in plain integer arithmetic; lengths checked by
/// the caller.
pub(super) fn dot_affine(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) {
    let cols = scales.len() * group_size;
    let code = |i: usize| -> i32 {
        let bit = i * usize::from(bits);
        ((words[bit / 32] >> (bit % 32)) & ((1u32 << bits) - 1)) as i32
    };
    for (x, o) in xs.iter().zip(out.iter_mut()) {
        let mut total = 0f32;
        for b in 0..cols / BLOCK_LEN {
            let s: i32 = (b * BLOCK_LEN..(b + 1) * BLOCK_LEN)
                .map(|i| code(i) * i32::from(x.codes[code_index(cols, i)]))
                .sum();
            total += s as f32 * x.step(b) * scales[b * BLOCK_LEN / group_size];
        }
        let sums = x.group_sums(group_size).unwrap_or_default();
        *o = total + bias_dot(biases, sums);
    }
}
