//! Quantization of f32 weights into a [`QMatrix`], bit for bit as `mx.quantize` does it.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::pack;
use super::params::AffineParams;
use super::qmatrix::{InputForm, QMatrix, PAR_MIN_VALUES};
use super::scalars::Scalars;
use crate::error::{Error, Result};

/// MLX's floor on a group's step, so that a constant group still gets a nonzero scale.
const MIN_SCALE: f32 = 1e-7;

impl QMatrix {
    /// Quantizes f32 row-major weights [rows, cols] the way `mx.quantize` does (mode
    /// affine), bit for bit: per group, the extreme of larger magnitude (the "edge") becomes
    /// the bias and code 0, and the step is nudged so that the edge is an integer number of
    /// steps from zero, which makes 0.0 exactly representable whenever the group's range
    /// reaches it (`mlx/backend/cpu/quantized.cpp`, `quantize`). Every weight then comes back
    /// within half a step, except the opposite extreme of a group, which the nudged step can
    /// push just past the last code: it is clamped and may lose up to one whole step.
    ///
    /// `cols` must be a multiple of `group_size` and every weight finite; errors name `name`.
    pub fn quantize(
        name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        params: AffineParams,
    ) -> Result<Self> {
        Self::quantize_impl(name, w, rows, cols, params, false)
    }

    /// Like [`QMatrix::quantize`], with scales and biases held in f16: each group's scale and
    /// bias are rounded to f16 first and the codes are chosen against the rounded values, so
    /// a weight comes back within half a step, or at a group's far extreme (where the shifted
    /// range may clamp) within one step plus the bias's f16 rounding. A group whose scale or
    /// bias does not fit f16's range is an error (use [`QMatrix::quantize`]).
    pub fn quantize_half(
        name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        params: AffineParams,
    ) -> Result<Self> {
        Self::quantize_impl(name, w, rows, cols, params, true)
    }

    fn quantize_impl(
        name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        params: AffineParams,
        half: bool,
    ) -> Result<Self> {
        let params = params.check()?;
        if cols == 0 || !cols.is_multiple_of(params.group_size) {
            return Err(Error::invalid(
                "group_size",
                format!(
                    "cannot quantize `{name}`: its {cols} columns are not a positive multiple of \
                     the group size {}",
                    params.group_size
                ),
            ));
        }
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(Error::tensor(
                name,
                format!("has {} values, expected {rows}×{cols}", w.len()),
            ));
        }
        let packed_cols = params.packed_cols(cols)?;
        let groups = cols / params.group_size;
        let mut packed = vec![0u32; rows * packed_cols];
        let mut scales = vec![0f32; rows * groups];
        let mut biases = vec![0f32; rows * groups];
        let rows_per_task = (PAR_MIN_VALUES / cols).max(1);
        packed
            .par_chunks_mut(packed_cols * rows_per_task)
            .zip(scales.par_chunks_mut(groups * rows_per_task))
            .zip(biases.par_chunks_mut(groups * rows_per_task))
            .zip(w.par_chunks(cols * rows_per_task))
            .enumerate()
            .try_for_each(|(task, (((packed, scales), biases), w))| {
                let mut codes = vec![0u8; params.group_size];
                let first = task * rows_per_task * groups;
                let chunk = w
                    .chunks_exact(params.group_size)
                    .zip(packed.chunks_exact_mut(params.group_words()))
                    .zip(scales.iter_mut().zip(biases.iter_mut()));
                for (g, ((w, words), (scale, bias))) in chunk.enumerate() {
                    (*scale, *bias) =
                        quantize_group(w, params, half, &mut codes).map_err(|msg| {
                            let (row, g) = ((first + g) / groups, (first + g) % groups);
                            let gs = params.group_size;
                            Error::tensor(
                                name,
                                format!("row {row}, columns {}..{}: {msg}", g * gs, (g + 1) * gs),
                            )
                        })?;
                    pack::pack(params.bits, &codes, words);
                }
                Ok::<(), Error>(())
            })?;
        let q = QMatrix {
            rows,
            cols,
            params,
            packed,
            scales: Scalars::F32(scales),
            biases: Scalars::F32(biases),
            scales_dtype: DType::F32,
            input_form: InputForm::Int16,
        };
        match half {
            // The values are f16 already: the conversion is exact.
            true => q.with_half_scales(name),
            false => Ok(q),
        }
    }

    /// [`QMatrix::quantize_half`] of a 2-D weight tensor in any float dtype.
    pub fn quantize_tensor_half(name: &str, w: &Tensor, params: AffineParams) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        let data = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::quantize_half(name, &data, rows, cols, params)
    }

    /// [`QMatrix::quantize`] of a 2-D weight tensor in any float dtype.
    pub fn quantize_tensor(name: &str, w: &Tensor, params: AffineParams) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        let data = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::quantize(name, &data, rows, cols, params)
    }
}

/// MLX's affine quantization of one group: fills `codes` and returns `(scale, bias)`.
///
/// Follows `mlx/backend/cpu/quantized.cpp` operation for operation in f32 (IEEE, round half to
/// even), so codes, scales and biases come out bit-identical to `mx.quantize`.
fn quantize_group(
    w: &[f32],
    params: AffineParams,
    half: bool,
    codes: &mut [u8],
) -> std::result::Result<(f32, f32), String> {
    let n_bins = params.max_code();
    let (mut w_min, mut w_max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in w {
        if !v.is_finite() {
            return Err(format!("non-finite weight {v}"));
        }
        w_min = w_min.min(v);
        w_max = w_max.max(v);
    }
    let min_is_edge = w_min.abs() > w_max.abs();
    let step = ((w_max - w_min) / n_bins).max(MIN_SCALE);
    let mut scale = if min_is_edge { step } else { -step };
    let edge = if min_is_edge { w_min } else { w_max };
    let q0 = (edge / scale).round_ties_even();
    let mut bias = 0.0;
    if q0 != 0.0 {
        scale = edge / q0;
        bias = edge;
    }
    if !scale.is_finite() || scale == 0.0 {
        return Err(format!(
            "range [{w_min}, {w_max}] is too wide to quantize in f32"
        ));
    }
    if half {
        (scale, bias) = (round_f16(scale), round_f16(bias));
        if !scale.is_finite() || !bias.is_finite() || scale == 0.0 {
            return Err(format!(
                "range [{w_min}, {w_max}] does not fit f16 scales and biases"
            ));
        }
    }
    for (code, &v) in codes.iter_mut().zip(w) {
        *code = ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u8;
    }
    Ok((scale, bias))
}

fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}
