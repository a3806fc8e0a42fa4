//! A [`QMatrix`] read from and written to the tensors of an mlx-lm checkpoint.

use candle_core::{DType, Device, Tensor};

use super::params::AffineParams;
use super::qmatrix::{InputForm, QMatrix};
use super::scalars::Scalars;
use crate::error::{Error, Result};

impl QMatrix {
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
