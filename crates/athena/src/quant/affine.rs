//! [`QMatrix`]: a weight matrix in MLX's affine quantized format, on the CPU.
//!
//! Each row (output feature) is cut into groups of `group_size` columns; group `g` of row `r`
//! stores `bits`-wide codes `q` and one `scale` and `bias`, and its weights are
//! `w = scale * q + bias`. The layout is mlx-lm's: `weight` u32 [rows, cols * bits / 32] (see
//! [`super::pack`] for the bit order), `scales` and `biases` [rows, cols / group_size].

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::scalars::Scalars;
use super::{matmul, pack};
use crate::error::{Error, Result};
pub use crate::kernels::InputForm;

/// The bit widths MLX's affine mode supports.
const BITS: [u8; 6] = [2, 3, 4, 5, 6, 8];
/// The group sizes MLX's affine mode supports.
const GROUP_SIZES: [usize; 3] = [32, 64, 128];
/// MLX's floor on a group's step, so that a constant group still gets a nonzero scale.
const MIN_SCALE: f32 = 1e-7;
/// Rows quantized or dequantized per parallel task are at least this many values.
const PAR_MIN_VALUES: usize = 1 << 16;

/// The parameters of MLX's affine quantization, as in mlx-lm's
/// `"quantization": {"group_size": 64, "bits": 4}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAffineParams")]
pub struct AffineParams {
    /// Bits per weight: 2, 3, 4, 5, 6 or 8.
    pub bits: u8,
    /// Consecutive weights of a row that share one scale and bias: 32, 64 or 128.
    pub group_size: usize,
}

/// [`AffineParams`] as written, before validation.
#[derive(Deserialize)]
struct RawAffineParams {
    bits: u8,
    group_size: usize,
}

impl TryFrom<RawAffineParams> for AffineParams {
    type Error = Error;
    fn try_from(raw: RawAffineParams) -> Result<Self> {
        AffineParams::new(raw.bits, raw.group_size)
    }
}

impl AffineParams {
    /// These parameters for a matrix of `cols` columns, or the same bits with a smaller group
    /// size (64, then 32) when `cols` needs it; `None` when no supported group size divides it.
    pub fn fitting(self, cols: usize) -> Option<AffineParams> {
        [self.group_size, 64, 32]
            .into_iter()
            .filter(|&g| g <= self.group_size && g > 0)
            .find(|&g| cols.is_multiple_of(g))
            .and_then(|g| AffineParams::new(self.bits, g).ok())
    }

    /// Validated parameters: `bits` ∈ {2, 3, 4, 5, 6, 8}, `group_size` ∈ {32, 64, 128}.
    pub fn new(bits: u8, group_size: usize) -> Result<Self> {
        if !BITS.contains(&bits) {
            return Err(Error::invalid(
                "bits",
                format!(
                    "{bits} is not supported by MLX's affine quantization (2, 3, 4, 5, 6 or 8)"
                ),
            ));
        }
        if !GROUP_SIZES.contains(&group_size) {
            return Err(Error::invalid(
                "group_size",
                format!(
                    "{group_size} is not supported by MLX's affine quantization (32, 64 or 128)"
                ),
            ));
        }
        Ok(AffineParams { bits, group_size })
    }

    /// Checks parameters that may have been built field by field.
    fn check(self) -> Result<Self> {
        AffineParams::new(self.bits, self.group_size)
    }

    /// The number of u32 words that hold one row of `cols` weights (`cols * bits / 32`);
    /// `cols` must be a positive multiple of `group_size`.
    pub fn packed_cols(&self, cols: usize) -> Result<usize> {
        self.check()?;
        if cols == 0 || !cols.is_multiple_of(self.group_size) {
            return Err(Error::invalid(
                "group_size",
                format!(
                    "{cols} columns are not a positive multiple of the group size {}",
                    self.group_size
                ),
            ));
        }
        // group_size is a multiple of 32, so the division is exact.
        Ok(cols / 32 * usize::from(self.bits))
    }

    /// Words per group: `group_size * bits / 32`.
    fn group_words(self) -> usize {
        self.group_size / 32 * usize::from(self.bits)
    }

    /// The largest code, `2^bits - 1`.
    fn max_code(self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }
}

/// A [rows, cols] matrix (rows = out features) in MLX's affine format, on the CPU.
///
/// Scales and biases are kept in the dtype they were stored in when that is f16 or bf16 (both
/// widen to f32 exactly, at half the memory), else as f32; `scales_dtype` records the stored
/// dtype so the matrix can be written back as it came.
#[derive(Debug, Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    params: AffineParams,
    /// [rows, cols * bits / 32], row-major.
    packed: Vec<u32>,
    /// [rows, cols / group_size], row-major.
    scales: Scalars,
    /// [rows, cols / group_size], row-major.
    biases: Scalars,
    scales_dtype: DType,
    /// The prepared form [`crate::kernels::matmul`] gives this matrix's inputs.
    input_form: InputForm,
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
    fn groups(&self) -> usize {
        self.cols / self.params.group_size
    }

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

    /// Reads a quantized Linear from an mlx-lm checkpoint: `weight` u32 [rows, cols * bits /
    /// 32], `scales` and `biases` [rows, cols / group_size] in any float dtype. The number of
    /// columns comes from the scales' shape. Errors name the tensor, e.g.
    /// `model.layers.0.self_attn.q_proj.scales`.
    pub fn from_mlx(
        name: &str,
        weight: &Tensor,
        scales: &Tensor,
        biases: &Tensor,
        params: AffineParams,
    ) -> Result<Self> {
        let params = params.check()?;
        let weight_name = format!("{name}.weight");
        let scales_name = format!("{name}.scales");
        let biases_name = format!("{name}.biases");
        if weight.dtype() != DType::U32 {
            return Err(Error::tensor(
                weight_name,
                format!(
                    "is {:?}; a quantized weight is packed in U32",
                    weight.dtype()
                ),
            ));
        }
        let (rows, packed_cols) = weight.dims2().map_err(|_| {
            Error::tensor(
                &weight_name,
                format!("has shape {:?}, expected 2 dims", weight.dims()),
            )
        })?;
        let (scale_rows, groups) = scales.dims2().map_err(|_| {
            Error::tensor(
                &scales_name,
                format!("has shape {:?}, expected 2 dims", scales.dims()),
            )
        })?;
        if scales.dims() != biases.dims() {
            return Err(Error::tensor(
                biases_name,
                format!(
                    "has shape {:?} but the scales have {:?}",
                    biases.dims(),
                    scales.dims()
                ),
            ));
        }
        if scale_rows != rows || groups == 0 {
            return Err(Error::tensor(
                scales_name,
                format!(
                    "has shape {:?}, expected [{rows}, cols / {}] for a weight of {rows} rows",
                    scales.dims(),
                    params.group_size
                ),
            ));
        }
        let cols = groups.checked_mul(params.group_size).ok_or_else(|| {
            Error::tensor(
                &scales_name,
                format!("{groups} groups overflow the column count"),
            )
        })?;
        let expected = params.packed_cols(cols)?;
        if packed_cols != expected {
            return Err(Error::tensor(
                weight_name,
                format!(
                    "is {packed_cols} words wide, but {groups} groups of {} columns at {} bits \
                     pack into {expected}",
                    params.group_size, params.bits
                ),
            ));
        }
        let scales_dtype = scales.dtype();
        let scales = stored_scalars(scales, &scales_name, groups)?;
        let biases = stored_scalars(biases, &biases_name, groups)?;
        let packed = weight.flatten_all()?.to_vec1::<u32>()?;
        Ok(QMatrix {
            rows,
            cols,
            params,
            packed,
            scales,
            biases,
            scales_dtype,
            input_form: InputForm::Int16,
        })
    }

    /// The three tensors in mlx-lm's layout for writing a checkpoint: `weight` U32 [rows,
    /// cols * bits / 32], `scales` and `biases` in `dtype` (F32, F16 or BF16) [rows,
    /// cols / group_size], all on the CPU.
    pub fn to_mlx(&self, dtype: DType) -> Result<(Tensor, Tensor, Tensor)> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::invalid(
                "dtype",
                format!("scales and biases are stored as F32, F16 or BF16, not {dtype:?}"),
            ));
        }
        let groups = self.groups();
        let packed_cols = groups * self.params.group_words();
        let weight = Tensor::from_vec(self.packed.clone(), (self.rows, packed_cols), &Device::Cpu)?;
        let scales = Tensor::from_vec(self.scales.to_f32_vec(), (self.rows, groups), &Device::Cpu)?
            .to_dtype(dtype)?;
        let biases = Tensor::from_vec(self.biases.to_f32_vec(), (self.rows, groups), &Device::Cpu)?
            .to_dtype(dtype)?;
        Ok((weight, scales, biases))
    }

    /// The whole matrix in f32, [rows * cols] row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let rows_per_task = (PAR_MIN_VALUES / self.cols).max(1);
        out.par_chunks_mut(self.cols * rows_per_task)
            .enumerate()
            .for_each(|(task, rows)| {
                for (i, row) in rows.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_into(task * rows_per_task + i, row);
                }
            });
        out
    }

    /// Row `row` in f32 into `out` (`cols` long): a quantized embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        if row >= self.rows {
            return Err(Error::invalid(
                "row",
                format!("{row} is out of range for a matrix of {} rows", self.rows),
            ));
        }
        if out.len() != self.cols {
            return Err(Error::invalid(
                "out",
                format!(
                    "has {} values, expected one row of {}",
                    out.len(),
                    self.cols
                ),
            ));
        }
        self.dequantize_into(row, out);
        Ok(())
    }

    /// Dequantizes row `row` (in range) into `out` (`cols` long).
    fn dequantize_into(&self, row: usize, out: &mut [f32]) {
        let groups = self.groups();
        let group_words = self.params.group_words();
        let (Some(words), Some(scales), Some(biases)) = (
            self.packed.chunks_exact(groups * group_words).nth(row),
            self.scales.row(row, groups),
            self.biases.row(row, groups),
        ) else {
            return;
        };
        for (((words, &scale), &bias), out) in words
            .chunks_exact(group_words)
            .zip(scales.iter())
            .zip(biases.iter())
            .zip(out.chunks_exact_mut(self.params.group_size))
        {
            pack::unpack(self.params.bits, words, out);
            for v in out.iter_mut() {
                *v = scale * *v + bias;
            }
        }
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

    fn packed_view(&self) -> matmul::Packed<'_> {
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

    /// The same matrix with its scales and biases held in f16, halving their memory (a
    /// quarter of a 4-bit matrix's bytes at group size 64). Refused when a value does not fit
    /// f16's range.
    pub fn with_half_scales(self, name: &str) -> Result<Self> {
        let (scales, biases) = (self.scales.to_f16(), self.biases.to_f16());
        if !scales.all_finite() || !biases.all_finite() {
            return Err(Error::tensor(name, "scales or biases exceed the f16 range"));
        }
        Ok(QMatrix {
            scales,
            biases,
            scales_dtype: DType::F16,
            ..self
        })
    }

    /// The same matrix with its scales and biases rounded to bf16, as `mx.quantize` returns
    /// them for bf16 weights (codes fitted to the f32 values, scales and biases rounded after):
    /// half their memory. A matrix with a value past bf16's range stays as it is.
    pub fn with_bf16_scales(self) -> Self {
        let (scales, biases) = (self.scales.to_bf16(), self.biases.to_bf16());
        if !scales.all_finite() || !biases.all_finite() {
            return self;
        }
        QMatrix {
            scales,
            biases,
            scales_dtype: DType::BF16,
            ..self
        }
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

/// Scales or biases as a checkpoint stores them: f16 and bf16 kept in their dtype (both widen
/// to f32 exactly, at half the memory), others as f32; checked finite, errors naming `name`.
fn stored_scalars(t: &Tensor, name: &str, groups: usize) -> Result<Scalars> {
    let t = &t.flatten_all()?;
    let scalars = match t.dtype() {
        DType::BF16 => Scalars::Bf16(t.to_vec1::<half::bf16>()?),
        DType::F16 => Scalars::F16(t.to_vec1::<half::f16>()?),
        _ => Scalars::F32(float_values(t, name)?),
    };
    if let Some(i) = (0..scalars.len()).find(|&i| !scalars.value(i).is_finite()) {
        return Err(Error::tensor(
            name,
            format!(
                "has a non-finite value {} at [{}, {}]",
                scalars.value(i),
                i / groups,
                i % groups
            ),
        ));
    }
    Ok(scalars)
}

/// The values of a float tensor as f32, rejecting other dtypes; `name` is the tensor's full name.
fn float_values(t: &Tensor, name: &str) -> Result<Vec<f32>> {
    if !t.dtype().is_float() {
        return Err(Error::tensor(
            name,
            format!(
                "is {:?}; scales and biases must be floating point",
                t.dtype()
            ),
        ));
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const ALL_GROUP_SIZES: [usize; 3] = GROUP_SIZES;

    fn params(bits: u8, gs: usize) -> AffineParams {
        AffineParams::new(bits, gs).unwrap()
    }

    /// Random weights whose rows differ in scale and offset, plus a few special groups.
    fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let row = i / cols;
                let scale = [0.02, 1.0, 7.0][row % 3];
                let offset = if row % 4 == 3 { 0.5 } else { 0.0 };
                scale * rng.random_range(-1.0f32..1.0) + offset
            })
            .collect();
        w[..32].fill(0.0);
        if rows > 1 {
            w[cols..cols + 32].fill(-0.25);
        }
        w
    }

    fn q(w: &[f32], rows: usize, cols: usize, p: AffineParams) -> QMatrix {
        QMatrix::quantize("t", w, rows, cols, p).unwrap()
    }

    fn naive_matmul(w: &[f32], rows: usize, cols: usize, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * rows];
        for i in 0..m {
            for r in 0..rows {
                y[i * rows + r] = (0..cols).map(|k| x[i * cols + k] * w[r * cols + k]).sum();
            }
        }
        y
    }

    #[test]
    fn params_validate_and_name_the_field() {
        for bits in [0, 1, 7, 9, 16] {
            let err = AffineParams::new(bits, 64).unwrap_err();
            assert!(matches!(err, Error::Invalid { field: "bits", .. }), "{err}");
        }
        for gs in [0, 16, 48, 256] {
            let err = AffineParams::new(4, gs).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Invalid {
                        field: "group_size",
                        ..
                    }
                ),
                "{err}"
            );
        }
        let p = params(3, 64);
        assert_eq!(p.packed_cols(128).unwrap(), 12);
        assert_eq!(params(5, 32).packed_cols(32).unwrap(), 5);
        assert_eq!(params(6, 128).packed_cols(256).unwrap(), 48);
        assert!(matches!(
            p.packed_cols(96).unwrap_err(),
            Error::Invalid {
                field: "group_size",
                ..
            }
        ));
        assert!(p.packed_cols(0).is_err());
        let raw = AffineParams {
            bits: 7,
            group_size: 64,
        };
        assert!(matches!(
            raw.packed_cols(64).unwrap_err(),
            Error::Invalid { field: "bits", .. }
        ));
    }

    #[test]
    fn params_deserialize_from_mlx_config_and_validate() {
        let p: AffineParams =
            serde_json::from_str(r#"{"group_size": 64, "bits": 4, "mode": "affine"}"#).unwrap();
        assert_eq!(p, params(4, 64));
        let err = serde_json::from_str::<AffineParams>(r#"{"group_size": 64, "bits": 7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bits"), "{err}");
        let err = serde_json::from_str::<AffineParams>(r#"{"group_size": 100, "bits": 4}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("group_size"), "{err}");
    }

    #[test]
    fn quantize_dequantize_error_is_within_half_a_step() {
        let (rows, cols) = (12, 256);
        let w = weights(rows, cols, 1);
        for bits in BITS {
            for gs in ALL_GROUP_SIZES {
                let m = q(&w, rows, cols, params(bits, gs));
                let d = m.dequantize();
                let n_bins = m.params.max_code();
                let mut codes = vec![0f32; gs];
                for (i, (&orig, &back)) in w.iter().zip(&d).enumerate() {
                    let (r, c) = (i / cols, i % cols);
                    let g = r * (cols / gs) + c / gs;
                    let step = m.scales.value(g).abs();
                    let row_words = cols / 32 * usize::from(bits);
                    let gw = m.params.group_words();
                    let words = &m.packed[r * row_words + (c / gs) * gw..][..gw];
                    pack::unpack(bits, words, &mut codes);
                    let code = codes[c % gs];
                    let err = (orig - back).abs();
                    let slack = 1e-6 * (orig.abs() + m.biases.value(g).abs()) + 1e-12;
                    // MLX shrinks the step so that the edge of larger magnitude is an integer
                    // number of steps from zero; the opposite extreme can then fall just past
                    // the last code and be clamped, losing up to one whole step.
                    let bound = if code == n_bins { step } else { step / 2.0 };
                    assert!(
                        err <= bound + slack,
                        "bits {bits} gs {gs} [{r}, {c}]: {orig} -> {back} (step {step}, code {code})"
                    );
                }
            }
        }
    }

    #[test]
    fn quantize_keeps_the_edge_and_zero_exact() {
        let cols = 64;
        let mut w: Vec<f32> = (0..cols).map(|i| (i as f32 - 20.0) * 0.037).collect();
        w[3] = 0.0;
        let edge = w[cols - 1];
        for bits in BITS {
            let d = q(&w, 1, cols, params(bits, 64)).dequantize();
            assert_eq!(d[cols - 1], edge, "bits {bits}: the edge is the bias");
            assert_eq!(d[3], 0.0, "bits {bits}: zero is on the grid");
        }
        // Constant and all-zero groups come back exactly.
        for v in [0.0f32, 0.375, -3.5] {
            let w = vec![v; 32];
            for bits in BITS {
                let d = q(&w, 1, 32, params(bits, 32)).dequantize();
                assert!(d.iter().all(|&x| x == v), "bits {bits} constant {v}: {d:?}");
            }
        }
    }

    #[test]
    fn quantize_rejects_bad_shapes_and_values_naming_the_tensor() {
        let w = vec![0.5f32; 2 * 48];
        let err = QMatrix::quantize("blk.q_proj", &w, 2, 48, params(4, 32)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "group_size",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("blk.q_proj"), "{err}");

        let err = QMatrix::quantize("blk.q_proj", &w, 4, 32, params(4, 32)).unwrap_err();
        assert!(
            matches!(&err, Error::Tensor { name, .. } if name == "blk.q_proj"),
            "{err}"
        );

        let mut w = vec![0.5f32; 2 * 64];
        w[64 + 40] = f32::NAN;
        let err = QMatrix::quantize("blk.q_proj", &w, 2, 64, params(4, 32)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("blk.q_proj") && msg.contains("row 1, columns 32..64"),
            "{msg}"
        );

        let mut w = vec![0.0f32; 32];
        w[0] = f32::MAX;
        w[1] = -f32::MAX;
        let err = QMatrix::quantize("big", &w, 1, 32, params(8, 32)).unwrap_err();
        assert!(err.to_string().contains("too wide"), "{err}");
    }

    #[test]
    fn matmul_matches_dequantize_then_matmul() {
        let (rows, cols) = (10, 256);
        let w = weights(rows, cols, 2);
        for bits in BITS {
            for gs in ALL_GROUP_SIZES {
                let m = q(&w, rows, cols, params(bits, gs));
                let dw = m.dequantize();
                for n in [1usize, 3, 17] {
                    let mut rng = StdRng::seed_from_u64(n as u64 * 31 + u64::from(bits));
                    let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
                    let got = m.matmul(&x, n).unwrap();
                    let want = naive_matmul(&dw, rows, cols, &x, n);
                    assert_close(
                        &got,
                        &want,
                        &x,
                        &dw,
                        rows,
                        cols,
                        &format!("b{bits} g{gs} m{n}"),
                    );
                }
            }
        }
    }

    /// `got` within 1e-5 of `want`, relative to the magnitude of the summed products
    /// `Σ |x·w|` of each output (an output's own value can cancel to ~0).
    fn assert_close(
        got: &[f32],
        want: &[f32],
        x: &[f32],
        w: &[f32],
        rows: usize,
        cols: usize,
        what: &str,
    ) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (j, (&g, &e)) in got.iter().zip(want).enumerate() {
            let (i, r) = (j / rows, j % rows);
            let mag: f32 = (0..cols)
                .map(|k| (x[i * cols + k] * w[r * cols + k]).abs())
                .sum();
            assert!(
                (g - e).abs() <= 1e-5 * mag + 1e-30,
                "{what} y[{i}, {r}]: {g} vs {e} (Σ|xw| {mag})"
            );
        }
    }

    #[test]
    fn matmul_large_runs_parallel_and_tiled() {
        // 48 rows × 4096 cols × 17 inputs is past the parallel threshold, and 4096 columns
        // make the input tiles shorter than 17 rows.
        let (rows, cols, n) = (48, 4096, 17);
        let w = weights(rows, cols, 3);
        let mut rng = StdRng::seed_from_u64(9);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        for (bits, gs) in [(4, 64), (3, 128), (8, 32)] {
            let m = q(&w, rows, cols, params(bits, gs));
            let dw = m.dequantize();
            let got = m.matmul(&x, n).unwrap();
            let want = naive_matmul(&dw, rows, cols, &x, n);
            assert_close(
                &got,
                &want,
                &x,
                &dw,
                rows,
                cols,
                &format!("large b{bits} g{gs}"),
            );
            // One input row at a time gives the same rows as the batch, bit for bit.
            for i in [0, 16] {
                let one = m.matmul(&x[i * cols..(i + 1) * cols], 1).unwrap();
                assert_eq!(one, got[i * rows..(i + 1) * rows], "row {i}");
            }
        }
    }

    /// bf16 scales and biases are the f32 ones rounded, and the products read them through
    /// the same kernels: equal to the dequantized rows' exact products.
    #[test]
    fn bf16_scales_are_the_rounded_values_and_multiply_alike() {
        let (rows, cols) = (9, 256);
        let w = weights(rows, cols, 13);
        let x = weights(1, cols, 14);
        for (bits, gs) in [(4, 64), (8, 64), (4, 32)] {
            let m = QMatrix::quantize("w", &w, rows, cols, params(bits, gs)).unwrap();
            let b = m.clone().with_bf16_scales();
            assert_eq!(b.scales_dtype(), DType::BF16);
            for i in 0..m.scales.len() {
                let (s, bs) = (m.scales.value(i), b.scales.value(i));
                assert_eq!(bs, half::bf16::from_f32(s).to_f32(), "scale {i}");
                let (z, bz) = (m.biases.value(i), b.biases.value(i));
                assert_eq!(bz, half::bf16::from_f32(z).to_f32(), "bias {i}");
            }
            let deq = b.dequantize();
            let got = b.matmul(&x, 1).unwrap();
            for (r, g) in got.iter().enumerate() {
                let want: f32 = deq[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| a * b)
                    .sum();
                assert!(
                    (g - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "b{bits} row {r}: {g} vs {want}"
                );
            }
        }
    }

    /// A value past bf16's range (f32's largest rounds up to infinity in bf16) leaves the
    /// matrix's scales and biases in f32 rather than turning them into infinities.
    #[test]
    fn bf16_scales_past_bf16_range_stay_f32() {
        let mut w = weights(2, 64, 15);
        w[3] = f32::MAX;
        let m = QMatrix::quantize("w", &w, 2, 64, params(4, 64)).unwrap();
        let past = |v: f32| half::bf16::from_f32(v).is_infinite();
        assert!(past(m.scales.value(0)) || past(m.biases.value(0)));
        let kept = m.clone().with_bf16_scales();
        assert_eq!(kept.scales_dtype(), DType::F32);
        assert_eq!((kept.scales, kept.biases), (m.scales, m.biases));
    }

    #[test]
    fn quantize_half_keeps_every_weight_within_half_a_step() {
        let (rows, cols) = (6, 256);
        let w = weights(rows, cols, 11);
        for (bits, gs) in [(8, 32), (4, 64)] {
            let m = QMatrix::quantize_half("w", &w, rows, cols, params(bits, gs)).unwrap();
            assert_eq!(m.scales_dtype(), DType::F16);
            let back = m.dequantize();
            for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
                let (step, bias) = (m.scales.value(i / gs).abs(), m.biases.value(i / gs));
                // One step plus the bias's f16 rounding (half an f16 ulp: 2⁻¹¹ relative) at a
                // clamped extreme, plus f32 rounding.
                let slack = step + bias.abs() * 2f32.powi(-11);
                assert!(
                    (a - b).abs() <= slack + 1e-6 * a.abs().max(1.0),
                    "b{bits} [{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn matmul_checks_the_input_length() {
        let m = q(&weights(2, 64, 4), 2, 64, params(4, 64));
        let err = m.matmul(&[0.0; 100], 2).unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "x", .. }), "{err}");
        assert!(m.matmul(&[], 0).unwrap().is_empty());
        let err = m.matmul(&[0.0; 64], usize::MAX).unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "x", .. }), "{err}");
    }

    #[test]
    fn dequantize_row_matches_the_whole_matrix() {
        let (rows, cols) = (5, 128);
        let m = q(&weights(rows, cols, 5), rows, cols, params(5, 32));
        let all = m.dequantize();
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut row).unwrap();
            assert_eq!(row, all[r * cols..(r + 1) * cols]);
        }
        let err = m.dequantize_row(rows, &mut row).unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "row", .. }), "{err}");
        let err = m.dequantize_row(0, &mut row[..10]).unwrap_err();
        assert!(matches!(err, Error::Invalid { field: "out", .. }), "{err}");
    }

    #[test]
    fn mlx_tensors_round_trip() {
        let (rows, cols) = (6, 192);
        let m = q(&weights(rows, cols, 6), rows, cols, params(6, 64));
        let (w, s, b) = m.to_mlx(DType::F32).unwrap();
        assert_eq!(w.dims(), &[rows, 36]);
        assert_eq!(w.dtype(), DType::U32);
        assert_eq!(s.dims(), &[rows, 3]);
        let back = QMatrix::from_mlx("t", &w, &s, &b, m.params()).unwrap();
        assert_eq!((back.rows(), back.cols()), (rows, cols));
        assert_eq!(back.packed, m.packed);
        assert_eq!(back.scales, m.scales);
        assert_eq!(back.biases, m.biases);

        let (w, s, b) = m.to_mlx(DType::BF16).unwrap();
        assert_eq!(s.dtype(), DType::BF16);
        let half = QMatrix::from_mlx("t", &w, &s, &b, m.params()).unwrap();
        assert_eq!(half.scales_dtype(), DType::BF16);
        assert!(
            matches!(half.scales, Scalars::Bf16(_)),
            "bf16 scales are kept as stored"
        );
        assert_eq!(half.storage_bytes(), m.storage_bytes() - 2 * 2 * rows * 3);
        assert_eq!(half.packed, m.packed);
        for (h, f) in half.scales.to_f32_vec().iter().zip(&m.scales.to_f32_vec()) {
            assert!((h - f).abs() <= f.abs() / 128.0, "{h} vs {f}");
        }
        assert!(matches!(
            m.to_mlx(DType::U8).unwrap_err(),
            Error::Invalid { field: "dtype", .. }
        ));
    }

    #[test]
    fn from_mlx_rejects_bad_tensors_naming_them() {
        let (rows, cols) = (4, 128);
        let p = params(4, 64);
        let m = q(&weights(rows, cols, 7), rows, cols, p);
        let (w, s, b) = m.to_mlx(DType::F16).unwrap();
        let name = "model.layers.0.self_attn.q_proj";
        let named = |err: Error, suffix: &str| match err {
            Error::Tensor { name: n, msg } => {
                assert_eq!(n, format!("{name}.{suffix}"), "{msg}");
                msg
            }
            other => panic!("expected a tensor error on {suffix}, got {other}"),
        };

        // Weight not packed in U32.
        let wf = w.to_dtype(DType::F32).unwrap();
        named(
            QMatrix::from_mlx(name, &wf, &s, &b, p).unwrap_err(),
            "weight",
        );
        // Packed width that does not match the scales (as if read at the wrong bits).
        let msg = named(
            QMatrix::from_mlx(name, &w, &s, &b, params(8, 64)).unwrap_err(),
            "weight",
        );
        assert!(
            msg.contains("16 words wide") && msg.contains("into 32"),
            "{msg}"
        );
        let narrow = w.narrow(1, 0, 8).unwrap();
        named(
            QMatrix::from_mlx(name, &narrow, &s, &b, p).unwrap_err(),
            "weight",
        );
        // Weight not 2-D.
        let flat = w.flatten_all().unwrap();
        named(
            QMatrix::from_mlx(name, &flat, &s, &b, p).unwrap_err(),
            "weight",
        );
        // Scales with the wrong number of rows, or not 2-D.
        let s3 = s.narrow(0, 0, 3).unwrap();
        let b3 = b.narrow(0, 0, 3).unwrap();
        named(
            QMatrix::from_mlx(name, &w, &s3, &b3, p).unwrap_err(),
            "scales",
        );
        let s1 = s.flatten_all().unwrap();
        named(
            QMatrix::from_mlx(name, &w, &s1, &b, p).unwrap_err(),
            "scales",
        );
        // Biases that disagree with the scales.
        named(
            QMatrix::from_mlx(name, &w, &s, &b3, p).unwrap_err(),
            "biases",
        );
        // Scales that are not floating point, or not finite.
        let su = s.to_dtype(DType::U32).unwrap();
        let bu = b.to_dtype(DType::U32).unwrap();
        named(
            QMatrix::from_mlx(name, &w, &su, &bu, p).unwrap_err(),
            "scales",
        );
        let mut bad = m.scales.to_f32_vec();
        bad[5] = f32::INFINITY;
        let sb = Tensor::from_vec(bad, (rows, 2), &Device::Cpu).unwrap();
        let msg = named(
            QMatrix::from_mlx(name, &w, &sb, &b, p).unwrap_err(),
            "scales",
        );
        assert!(msg.contains("[2, 1]"), "{msg}");
        let mut bad = m.biases.to_f32_vec();
        bad[0] = f32::NAN;
        let bb = Tensor::from_vec(bad, (rows, 2), &Device::Cpu).unwrap();
        named(
            QMatrix::from_mlx(name, &w, &s, &bb, p).unwrap_err(),
            "biases",
        );
        // Half-precision scalars are kept as stored and checked as well.
        let sh = sb.to_dtype(DType::BF16).unwrap();
        let msg = named(
            QMatrix::from_mlx(name, &w, &sh, &b, p).unwrap_err(),
            "scales",
        );
        assert!(msg.contains("inf") && msg.contains("[2, 1]"), "{msg}");
    }

    #[test]
    fn storage_is_bits_per_weight_plus_group_parameters() {
        let (rows, cols) = (8, 256);
        let m = q(&weights(rows, cols, 8), rows, cols, params(4, 64));
        assert_eq!(m.storage_bytes(), rows * cols / 2 + rows * (cols / 64) * 8);
    }
}
