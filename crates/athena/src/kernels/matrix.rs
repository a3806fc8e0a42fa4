//! The weight matrices [`matmul`](super::matmul) multiplies: the [`WeightMatrix`] contract
//! (one row at a time, or the products of a range of rows with prepared inputs) and its f32
//! and bf16 implementations. Quantized matrices implement it in `crate::quant`.

use std::ops::Range;

use half::bf16;

use super::float::{bf16_to_f32, dot, dot_bf16, dot_bf16_wide};
use super::layout::InputForm;

/// A weight matrix [rows, cols] that [`matmul`] reads one row at a time.
pub trait WeightMatrix: Sync {
    /// Rows (output features).
    fn rows(&self) -> usize;
    /// Columns (input features).
    fn cols(&self) -> usize;
    /// Row `r` (in range) in f32: written into `buf` (`cols` long) or borrowed from `self`.
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32];
    /// `Σ row_r · x` for one input row; by default through [`WeightMatrix::row`]. `x` holds the
    /// row's `cols` values, possibly followed by its prepared int16 form
    /// ([`affine::prepared`]), which quantized rows use; `buf` is `cols` long scratch.
    /// Wrappers pass `x` on unchanged.
    fn dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        dot(self.row(r, buf), x)
    }
    /// `out[(r - rows.start) · n + k] = Σ row_r · xs[k]` for weight rows `rows` (in range)
    /// and `n = xs.len()` input rows, each as [`WeightMatrix::dot`] takes it (`out` holds
    /// `rows.len() · n` values, any `n`); by default one [`WeightMatrix::dot`] each. Quantized rows
    /// check the prepared inputs once and unpack each row's codes once for up to
    /// [`affine::INPUTS_PER_PASS`] of them, or, for many prepared inputs, once for all of them
    /// ([`panel`]). Wrappers forward it.
    fn dot_rows(&self, rows: Range<usize>, xs: &[&[f32]], out: &mut [f32], buf: &mut [f32]) {
        let n = xs.len().max(1);
        for (r, out) in rows.zip(out.chunks_exact_mut(n)) {
            for (o, x) in out.iter_mut().zip(xs) {
                *o = self.dot(r, x, buf);
            }
        }
    }
    /// Whether [`WeightMatrix::dot`] and [`WeightMatrix::dot_rows`] run on prepared inputs (4- and 8-bit
    /// affine rows): [`matmul`] then hands them prepared inputs at every size. `false` by
    /// default; wrappers forward it.
    fn reads_prepared(&self) -> bool {
        false
    }
    /// The prepared form [`matmul`] hands rows that read prepared inputs: int16 by default;
    /// int8 for a quantized matrix that opted into it (used where the CPU has AVX-512 VNNI).
    /// Wrappers forward it.
    fn input_form(&self) -> InputForm {
        InputForm::Int16
    }
    /// Row `r` (in range) borrowed in bf16 when the rows are stored so; `None` by default.
    /// The bf16 × bf16 products of [`matmul`] read such rows in place (others are converted
    /// to bf16 where exact); wrappers that pass rows on unchanged forward it.
    fn bf16_row(&self, _r: usize) -> Option<&[bf16]> {
        None
    }
}

/// f32 rows stored row-major.
pub struct F32Rows<'a> {
    /// [rows, cols], row-major.
    pub data: &'a [f32],
    /// Columns.
    pub cols: usize,
}

impl WeightMatrix for F32Rows<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn row<'a>(&'a self, r: usize, _buf: &'a mut [f32]) -> &'a [f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// bf16 rows stored row-major (bf16 weights with f32 activations, as llama.cpp computes them).
pub struct Bf16Rows<'a> {
    /// [rows, cols], row-major.
    pub data: &'a [bf16],
    /// Columns.
    pub cols: usize,
}

impl WeightMatrix for Bf16Rows<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        bf16_to_f32(&self.data[r * self.cols..(r + 1) * self.cols], buf);
        buf
    }
    fn dot(&self, r: usize, x: &[f32], _buf: &mut [f32]) -> f32 {
        let w = &self.data[r * self.cols..(r + 1) * self.cols];
        // A prepared input comes from `matmul`, which does not promise `dot4`'s order.
        match x.len() > self.cols {
            true => dot_bf16_wide(w, x),
            false => dot_bf16(w, x),
        }
    }
    fn bf16_row(&self, r: usize) -> Option<&[bf16]> {
        self.data.get(r * self.cols..(r + 1) * self.cols)
    }
}
