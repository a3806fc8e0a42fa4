//! The CPU kernel behind [`super::QMatrix::matmul`]: `y = x · Wᵀ` straight from the packed
//! codes.
//!
//! The matrix is read one row at a time through [`crate::kernels::matmul`]: each row is
//! dequantized group by group (`scale · q + bias`, SIMD for 4 and 8 bits) into a buffer that
//! stays in L1, then dotted in f32 with the input rows, the partial sums folded into f64 every
//! few hundred columns. The result differs from dequantize-then-matmul by f32 rounding only.
//!
//! At decode sizes [`crate::kernels::matmul`] hands a row its input with the int16 form
//! behind it; 4- and 8-bit rows then skip the dequantization and run integer dot products
//! ([`crate::kernels::affine`]). [`super::QMatrix::matmul`] keeps the f32 path.

use super::scalars::Scalars;
use super::{pack, AffineParams};
use crate::kernels::{self, affine, Rows};

/// A borrowed view of a [`super::QMatrix`]'s storage.
pub(super) struct Packed<'a> {
    pub rows: usize,
    pub cols: usize,
    pub params: AffineParams,
    /// u32 words per group.
    pub group_words: usize,
    /// [rows, cols * bits / 32].
    pub packed: &'a [u32],
    /// [rows, cols / group_size].
    pub scales: &'a Scalars,
    /// [rows, cols / group_size].
    pub biases: &'a Scalars,
}

impl Rows for Packed<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let (gs, bits) = (self.params.group_size, self.params.bits);
        let groups = self.cols / gs;
        let row_words = groups * self.group_words;
        let words = &self.packed[r * row_words..(r + 1) * row_words];
        for (g, (words, out)) in words
            .chunks_exact(self.group_words)
            .zip(buf.chunks_exact_mut(gs))
            .enumerate()
        {
            let (scale, bias) = (
                self.scales.value(r * groups + g),
                self.biases.value(r * groups + g),
            );
            if !kernels::dequantize_group(bits, words, scale, bias, out) {
                pack::unpack(bits, words, out);
                for v in out.iter_mut() {
                    *v = scale * *v + bias;
                }
            }
        }
        buf
    }

    fn dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        let (gs, bits) = (self.params.group_size, self.params.bits);
        if matches!(bits, 4 | 8) {
            if let Some(q) = affine::prepared(x, self.cols) {
                let groups = self.cols / gs;
                let row_words = groups * self.group_words;
                let words = &self.packed[r * row_words..(r + 1) * row_words];
                let (sbuf, rest) = buf.split_at_mut(groups);
                let scales = self.scales.row_in(r, groups, sbuf);
                let biases = self.biases.row_in(r, groups, &mut rest[..groups]);
                if let Some(y) = affine::dot_affine(bits, gs, words, scales, biases, q) {
                    return y;
                }
            }
        }
        kernels::dot(self.row(r, buf), x)
    }
}

/// `y = x · Wᵀ`, `x` [m, cols] → `y` [m, rows]. The caller has checked `x.len() == m * cols`
/// and that `m * rows` does not overflow.
pub(super) fn matmul(w: &Packed<'_>, x: &[f32], m: usize) -> Vec<f32> {
    kernels::matmul_exact(w, x, m)
}
