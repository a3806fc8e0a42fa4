//! [`QMatrix`]: a weight matrix in MLX's affine quantized format, on the CPU.
//!
//! Each row (output feature) is cut into groups of `group_size` columns; group `g` of row `r`
//! stores `bits`-wide codes `q` and one `scale` and `bias`, and its weights are
//! `w = scale * q + bias`. The layout is mlx-lm's: `weight` u32 [rows, cols * bits / 32] (see
//! [`super::pack`] for the bit order), `scales` and `biases` [rows, cols / group_size].
//!
//! This file holds the type, its accessors and its products; making one is in `quantize`
//! and `mlx_io`, reading it back in `dequantize` and `mlx_io`, the dtype of its scales and
//! biases in `scale_dtype`.

use candle_core::DType;

use super::matmul;
use super::params::AffineParams;
use super::scalars::Scalars;
use crate::error::{Error, Result};
pub use crate::kernels::InputForm;

/// Rows quantized or dequantized per parallel task are at least this many values.
pub(super) const PAR_MIN_VALUES: usize = 1 << 16;

/// A [rows, cols] matrix (rows = out features) in MLX's affine format, on the CPU.
///
/// Scales and biases are kept in the dtype they were stored in when that is f16 or bf16 (both
/// widen to f32 exactly, at half the memory), else as f32; `scales_dtype` records the stored
/// dtype so the matrix can be written back as it came.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) params: AffineParams,
    /// [rows, cols * bits / 32], row-major.
    pub(super) packed: Vec<u32>,
    /// [rows, cols / group_size], row-major.
    pub(super) scales: Scalars,
    /// [rows, cols / group_size], row-major.
    pub(super) biases: Scalars,
    pub(super) scales_dtype: DType,
    /// The prepared form [`crate::kernels::matmul`] gives this matrix's inputs.
    pub(super) input_form: InputForm,
}

impl QMatrix {
    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bits and group size.
    pub fn params(&self) -> AffineParams {
        self.params
    }

    /// The dtype the scales and biases were stored in (f32 for [`QMatrix::quantize`]).
    pub fn scales_dtype(&self) -> DType {
        self.scales_dtype
    }

    /// Groups per row.
    pub(super) fn groups(&self) -> usize {
        self.cols / self.params.group_size
    }

    /// `y = x · Wᵀ` for `x` [m, cols] row-major → `y` [m, rows] row-major.
    ///
    /// Works row by row without dequantizing the matrix: each row is dequantized into a small
    /// buffer and dotted with the input rows, so it differs from dequantize-then-matmul by f32
    /// rounding only. Large products run on rayon's pool, split by output rows.
    pub fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if m.checked_mul(self.cols) != Some(x.len()) {
            return Err(Error::invalid(
                "x",
                format!("has {} values, expected {m}×{}", x.len(), self.cols),
            ));
        }
        if m.checked_mul(self.rows).is_none() {
            return Err(Error::invalid(
                "x",
                format!("{m}×{} outputs overflow", self.rows),
            ));
        }
        Ok(matmul::matmul(&self.packed_view(), x, m))
    }

    /// Calls `f` with the matrix as rows for [`crate::kernels::matmul`] (dequantized one row
    /// at a time, never as a whole). Its products through [`crate::kernels::matmul`] run on the
    /// inputs' int16 form.
    pub fn with_rows<R>(&self, f: impl FnOnce(&dyn crate::kernels::WeightMatrix) -> R) -> R {
        f(&self.packed_view())
    }

    pub(super) fn packed_view(&self) -> matmul::Packed<'_> {
        matmul::Packed {
            rows: self.rows,
            cols: self.cols,
            params: self.params,
            group_words: self.params.group_words(),
            packed: &self.packed,
            scales: &self.scales,
            biases: &self.biases,
            input_form: self.input_form,
        }
    }

    /// The same matrix with its products through [`crate::kernels::matmul`] run on inputs in
    /// `form`: [`InputForm::Int8`] trades the int16 form's accuracy (about 2⁻¹⁶ of each
    /// block's largest input) for int8's (2⁻⁸) and about twice the integer throughput, as
    /// llama.cpp's Q8 activations do. [`QMatrix::matmul`] stays exact either way.
    pub fn with_input_form(mut self, form: InputForm) -> Self {
        self.input_form = form;
        self
    }

    /// The prepared form its products ask of their inputs.
    pub fn input_form(&self) -> InputForm {
        self.input_form
    }

    /// Bytes held in memory: the packed codes plus the scales and biases.
    pub fn storage_bytes(&self) -> usize {
        std::mem::size_of_val(self.packed.as_slice()) + self.scales.bytes() + self.biases.bytes()
    }
}
