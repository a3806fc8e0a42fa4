//! The CPU kernel behind [`super::QMatrix::matmul`]: `y = x · Wᵀ` straight from the packed
//! codes.
//!
//! The matrix is read one row at a time through [`crate::kernels::matmul`]: each row is
//! dequantized group by group (`scale · q + bias`, SIMD for 4 and 8 bits) into a buffer that
//! stays in L1, then dotted in f32 with the input rows, the partial sums folded into f64 every
//! few hundred columns. The result differs from dequantize-then-matmul by f32 rounding only.
//!
//! [`crate::kernels::matmul`] hands 4- and 8-bit rows their inputs with the int16 form behind
//! them at every size ([`Rows::reads_prepared`]); they then skip the dequantization and run
//! integer dot products, one row's codes against up to four inputs at once
//! ([`crate::kernels::affine`]). [`super::QMatrix::matmul`] keeps the f32 path.

use std::ops::Range;

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
        let mut y = [0f32];
        if self.affine_dots(r..r + 1, &[x], &mut y, buf) {
            return y[0];
        }
        kernels::dot(self.row(r, buf), x)
    }

    fn dot_rows(&self, rows: Range<usize>, xs: &[&[f32]], out: &mut [f32], buf: &mut [f32]) {
        if !self.affine_dots(rows.clone(), xs, out, buf) {
            let n = xs.len().max(1);
            for (r, out) in rows.zip(out.chunks_exact_mut(n)) {
                for (o, x) in out.iter_mut().zip(xs) {
                    *o = self.dot(r, x, buf);
                }
            }
        }
    }

    fn reads_prepared(&self) -> bool {
        matches!(self.params.bits, 4 | 8)
    }
}

impl Packed<'_> {
    /// [`Rows::dot_rows`] on the inputs' int16 forms ([`affine::AffineDots`]): the inputs
    /// are checked once, then each weight row runs against up to [`affine::MANY`] of them at
    /// a time; `buf` (`cols` long) holds a row's scales and biases when they are stored in
    /// half precision. `false` when the width is not 4 or 8 bits, an input carries no
    /// prepared form, or a length disagrees (`out` may then be partly written).
    fn affine_dots(
        &self,
        rows: Range<usize>,
        xs: &[&[f32]],
        out: &mut [f32],
        buf: &mut [f32],
    ) -> bool {
        let (gs, bits) = (self.params.group_size, self.params.bits);
        let groups = self.cols / gs.max(1);
        let n = xs.len();
        if !matches!(bits, 4 | 8) || n == 0 || out.len() != rows.len() * n || buf.len() < 2 * groups
        {
            return false;
        }
        let Some(qs) = xs
            .iter()
            .map(|x| affine::prepared(x, self.cols))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let tier = affine::Tier::best();
        // One input of 4-bit rows: rows are taken [`affine::ROWS`] at a time, their scales
        // and biases converted into their own parts of `buf`. (8-bit rows, twice the bytes per
        // product, stream faster one at a time.)
        if n == 1 && bits == 4 && buf.len() >= 2 * affine::ROWS * groups {
            if let Some(kernel) = affine::AffineDots::new(tier, bits, gs, &qs) {
                return self.affine_rows(&kernel, rows, out, buf);
            }
        }
        let row_words = groups * self.group_words;
        let (sbuf, bbuf) = buf.split_at_mut(groups);
        for (c, qs) in qs.chunks(affine::MANY).enumerate() {
            let Some(kernel) = affine::AffineDots::new(tier, bits, gs, qs) else {
                return false;
            };
            for (r, out) in rows.clone().zip(out.chunks_exact_mut(n)) {
                let Some(words) = self.packed.get(r * row_words..(r + 1) * row_words) else {
                    return false;
                };
                let scales = self.scales.row_in(r, groups, sbuf);
                let biases = self.biases.row_in(r, groups, &mut bbuf[..groups]);
                let at = c * affine::MANY;
                if !kernel.row(words, scales, biases, &mut out[at..at + qs.len()]) {
                    return false;
                }
            }
        }
        true
    }

    /// [`Packed::affine_dots`] against one input: [`affine::ROWS`] weight rows at a time
    /// ([`affine::AffineDots::rows`]), then the last few one by one. `buf` holds at least
    /// `2 · ROWS` rows of scales.
    fn affine_rows(
        &self,
        kernel: &affine::AffineDots<'_>,
        rows: Range<usize>,
        out: &mut [f32],
        buf: &mut [f32],
    ) -> bool {
        const R: usize = affine::ROWS;
        let groups = self.cols / self.params.group_size;
        let row_words = groups * self.group_words;
        let words = |r: usize| self.packed.get(r * row_words..(r + 1) * row_words);
        let (sbuf, bbuf) = buf[..2 * R * groups].split_at_mut(R * groups);
        let mut r = rows.start;
        for out in out.chunks_mut(R) {
            if out.len() < R {
                for (o, r) in out.iter_mut().zip(r..) {
                    let Some(w) = words(r) else {
                        return false;
                    };
                    let scales = self.scales.row_in(r, groups, sbuf);
                    let biases = self.biases.row_in(r, groups, bbuf);
                    if !kernel.row(w, scales, biases, std::slice::from_mut(o)) {
                        return false;
                    }
                }
                return true;
            }
            let Some(ws) = (0..R).map(|k| words(r + k)).collect::<Option<Vec<_>>>() else {
                return false;
            };
            let mut scales = sbuf.chunks_exact_mut(groups);
            let mut biases = bbuf.chunks_exact_mut(groups);
            let s: [&[f32]; R] = std::array::from_fn(|k| {
                let b = scales.next().unwrap_or_default();
                self.scales.row_in(r + k, groups, b)
            });
            let b: [&[f32]; R] = std::array::from_fn(|k| {
                let b = biases.next().unwrap_or_default();
                self.biases.row_in(r + k, groups, b)
            });
            let w: [&[u32]; R] = std::array::from_fn(|k| ws[k]);
            let next = (r + R) * row_words..((r + 2 * R) * row_words).min(self.packed.len());
            let ahead = self.packed.get(next).unwrap_or_default();
            if !kernel.rows(w, s, b, ahead, out) {
                return false;
            }
            r += R;
        }
        true
    }
}

/// `y = x · Wᵀ`, `x` [m, cols] → `y` [m, rows]. The caller has checked `x.len() == m * cols`
/// and that `m * rows` does not overflow.
pub(super) fn matmul(w: &Packed<'_>, x: &[f32], m: usize) -> Vec<f32> {
    kernels::matmul_exact(w, x, m)
}
