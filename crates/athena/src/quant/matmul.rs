//! The CPU kernel behind [`super::QMatrix::matmul`]: `y = x · Wᵀ` straight from the packed
//! codes.
//!
//! The matrix is read one row at a time through [`crate::kernels::matmul`]: each row is
//! dequantized group by group (`scale · q + bias`, SIMD for 4 and 8 bits) into a buffer that
//! stays in L1, then dotted in f32 with the input rows, the partial sums folded into f64 every
//! few hundred columns. The result differs from dequantize-then-matmul by f32 rounding only.
//!
//! [`crate::kernels::matmul`] hands 4- and 8-bit rows their inputs with the int16 form behind
//! them at every size ([`WeightMatrix::reads_prepared`]); they then skip the dequantization and run
//! integer dot products, one row's codes against up to four inputs at once
//! ([`crate::kernels::affine`]). [`super::QMatrix::matmul`] keeps the f32 path.

use std::ops::Range;

use super::pack;
use super::params::AffineParams;
use super::scalars::Scalars;
use crate::kernels::affine::RowDots;
use crate::kernels::layout::{INPUTS_PER_PASS, ROWS_PER_BLOCK};
use crate::kernels::{self, affine, affine8, panel, InstructionSet, WeightMatrix};

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
    /// The prepared form its products ask of their inputs.
    pub input_form: kernels::InputForm,
}

impl WeightMatrix for Packed<'_> {
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

    fn input_form(&self) -> kernels::InputForm {
        self.input_form
    }
}

impl Packed<'_> {
    /// [`WeightMatrix::dot_rows`] on the inputs' prepared forms: int8 ([`affine8::Int8Dots`]) when
    /// they carry that form, else int16 ([`affine::AffineDots`]). `buf` (`cols` long) holds
    /// rows' scales and biases when they are stored in half precision. `false` when the width
    /// is not 4 or 8 bits, an input carries no prepared form, or a length disagrees (`out` may
    /// then be partly written).
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
        let panels = n >= panel::PANEL_MIN && panel::supported(bits, gs, self.cols);
        let int8: Option<Vec<_>> = xs.iter().map(|x| affine8::prepared(x, self.cols)).collect();
        if let Some(qs) = int8 {
            if panels {
                let panels = qs
                    .chunks(panel::PANEL)
                    .map(|c| panel::Panel::new(bits, gs, c))
                    .collect();
                return self.panel_dots(rows, panels, out, buf);
            }
            return self.run_dots(rows, n, out, buf, |c| {
                affine8::Int8Dots::new(bits, gs, &qs[c])
            });
        }
        let int16: Option<Vec<_>> = xs.iter().map(|x| affine::prepared(x, self.cols)).collect();
        let Some(qs) = int16 else {
            return false;
        };
        // Decode: every row of the range in one call, scales read as stored.
        if let [x] = qs.as_slice() {
            let (scales, biases) = (self.scales.values(), self.biases.values());
            let words = self.packed;
            if kernels::decode::decode_rows(bits, gs, words, scales, biases, x, rows.clone(), out) {
                return true;
            }
        }
        if panels {
            let panels = qs
                .chunks(panel::PANEL)
                .map(|c| panel::Panel::new_int16(bits, gs, c))
                .collect();
            return self.panel_dots(rows, panels, out, buf);
        }
        let tier = InstructionSet::best();
        self.run_dots(rows, n, out, buf, |c| {
            affine::AffineDots::new(tier, bits, gs, &qs[c])
        })
    }

    /// [`Packed::affine_dots`] with the kernel for each chunk of up to [`INPUTS_PER_PASS`]
    /// inputs, chunk by chunk ([`Packed::run_chunk`]).
    fn run_dots<K: RowDots>(
        &self,
        rows: Range<usize>,
        n: usize,
        out: &mut [f32],
        buf: &mut [f32],
        kernel: impl Fn(Range<usize>) -> Option<K>,
    ) -> bool {
        if n <= INPUTS_PER_PASS {
            return kernel(0..n).is_some_and(|k| self.run_chunk(&k, rows, n, out, buf));
        }
        let mut part = vec![0f32; rows.len() * INPUTS_PER_PASS];
        for c in (0..n).step_by(INPUTS_PER_PASS) {
            let c = c..(c + INPUTS_PER_PASS).min(n);
            let part = &mut part[..rows.len() * c.len()];
            let done = kernel(c.clone())
                .is_some_and(|k| self.run_chunk(&k, rows.clone(), c.len(), part, buf));
            if !done {
                return false;
            }
            for (o, p) in out.chunks_exact_mut(n).zip(part.chunks_exact(c.len())) {
                o[c.clone()].copy_from_slice(p);
            }
        }
        true
    }

    /// Weight rows `rows` against the `n` inputs (up to [`INPUTS_PER_PASS`]) of `kernel`: each
    /// row in turn, or, against one input of 4-bit rows or against several, [`ROWS_PER_BLOCK`]
    /// rows at a time ([`Packed::four_rows`]).
    fn run_chunk<K: RowDots>(
        &self,
        kernel: &K,
        rows: Range<usize>,
        n: usize,
        out: &mut [f32],
        buf: &mut [f32],
    ) -> bool {
        let groups = self.cols / self.params.group_size;
        // Against one input, 8-bit rows (twice the bytes per product) stream faster one at a
        // time.
        let blocks = n > 1 || self.params.bits == 4;
        if blocks && buf.len() >= 2 * ROWS_PER_BLOCK * groups {
            return self.four_rows(kernel, rows, n, out, buf);
        }
        self.one_by_one(kernel, rows, n, out, buf)
    }

    /// Weight rows `rows` against the `n` inputs of `kernel`, one row at a time ([`RowDots::row`]).
    /// `buf` holds at least two rows of scales.
    fn one_by_one<K: RowDots>(
        &self,
        kernel: &K,
        rows: Range<usize>,
        n: usize,
        out: &mut [f32],
        buf: &mut [f32],
    ) -> bool {
        let groups = self.cols / self.params.group_size;
        let row_words = groups * self.group_words;
        if buf.len() < 2 * groups {
            return false;
        }
        let (sbuf, bbuf) = buf.split_at_mut(groups);
        for (r, out) in rows.zip(out.chunks_exact_mut(n)) {
            let Some(words) = self.packed.get(r * row_words..(r + 1) * row_words) else {
                return false;
            };
            let scales = self.scales.row_in(r, groups, sbuf);
            let biases = self.biases.row_in(r, groups, &mut bbuf[..groups]);
            if !kernel.row(words, scales, biases, out) {
                return false;
            }
        }
        true
    }

    /// Weight rows `rows` against many prepared inputs laid out in `panels` (of
    /// [`panel::PANEL`] inputs each; `None` when one could not be made), `out` [row, input]:
    /// each row unpacked once for all of them, eight rows at a time. `buf` holds at least
    /// `2 · 8` rows of scales.
    fn panel_dots(
        &self,
        rows: Range<usize>,
        panels: Option<Vec<panel::Panel>>,
        out: &mut [f32],
        buf: &mut [f32],
    ) -> bool {
        const R: usize = 8;
        let (gs, bits, cols) = (self.params.group_size, self.params.bits, self.cols);
        let Some(panels) = panels else {
            return false;
        };
        let Some(form) = panels.first().map(|p| p.form()) else {
            return false;
        };
        let n: usize = panels.iter().map(panel::Panel::len).sum();
        let groups = cols / gs;
        let row_words = groups * self.group_words;
        if buf.len() < 2 * R * groups {
            return false;
        }
        let (sbuf, bbuf) = buf[..2 * R * groups].split_at_mut(R * groups);
        let mut unpacked: [panel::Unpacked; R] = Default::default();
        let mut r = rows.start;
        while r < rows.end {
            let take = if rows.end - r >= R { R } else { 1 };
            for (k, u) in unpacked.iter_mut().enumerate().take(take) {
                let at = (r + k) * row_words;
                let unpacked = self
                    .packed
                    .get(at..at + row_words)
                    .is_some_and(|w| u.unpack(form, bits, cols, w));
                if !unpacked {
                    return false;
                }
            }
            let scales = self.scales.rows_in(r, take, groups, sbuf);
            let biases = self.biases.rows_in(r, take, groups, bbuf);
            let s = |k: usize| &scales[k * groups..(k + 1) * groups];
            let b = |k: usize| &biases[k * groups..(k + 1) * groups];
            for (p, panel) in panels.iter().enumerate() {
                let Some(at) = out.get_mut((r - rows.start) * n + p * panel::PANEL..) else {
                    return false;
                };
                let done = match take {
                    R => panel::dots::<R>(
                        bits,
                        gs,
                        panel::WeightRows {
                            rows: std::array::from_fn(|k| &unpacked[k]),
                            scales: std::array::from_fn(s),
                            biases: std::array::from_fn(b),
                        },
                        panel,
                        at,
                        n,
                    ),
                    _ => panel::dots::<1>(
                        bits,
                        gs,
                        panel::WeightRows {
                            rows: [&unpacked[0]],
                            scales: [s(0)],
                            biases: [b(0)],
                        },
                        panel,
                        at,
                        n,
                    ),
                };
                if !done {
                    return false;
                }
            }
            r += take;
        }
        true
    }

    /// [`Packed::run_dots`] against `n` inputs (up to [`INPUTS_PER_PASS`]): [`ROWS_PER_BLOCK`]
    /// weight rows at a time ([`RowDots::rows`], the codes of the next ones prefetched), then
    /// the last few one by one. `buf` holds at least `2 · ROWS_PER_BLOCK` rows of scales.
    fn four_rows<K: RowDots>(
        &self,
        kernel: &K,
        rows: Range<usize>,
        n: usize,
        out: &mut [f32],
        buf: &mut [f32],
    ) -> bool {
        const R: usize = ROWS_PER_BLOCK;
        let groups = self.cols / self.params.group_size;
        let row_words = groups * self.group_words;
        let (sbuf, bbuf) = buf[..2 * R * groups].split_at_mut(R * groups);
        let mut r = rows.start;
        for out in out.chunks_mut(R * n) {
            if out.len() < R * n {
                let last = r..r + out.len() / n.max(1);
                return self.one_by_one(kernel, last, n, out, buf);
            }
            let Some(block) = self.packed.get(r * row_words..(r + R) * row_words) else {
                return false;
            };
            let w: [&[u32]; R] =
                std::array::from_fn(|k| &block[k * row_words..(k + 1) * row_words]);
            if !matches!(self.scales, Scalars::F32(_)) {
                self.scales.prefetch_rows(r + R, R, groups);
                self.biases.prefetch_rows(r + R, R, groups);
            }
            let scales = self.scales.rows_in(r, R, groups, sbuf);
            let biases = self.biases.rows_in(r, R, groups, bbuf);
            let s: [&[f32]; R] = std::array::from_fn(|k| &scales[k * groups..(k + 1) * groups]);
            let b: [&[f32]; R] = std::array::from_fn(|k| &biases[k * groups..(k + 1) * groups]);
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
