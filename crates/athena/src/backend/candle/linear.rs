//! The one linear abstraction: every projection of the model goes through [`Linear`], so the
//! model is written once whatever the weights' representation — dense, affine-quantized, or
//! either with an unmerged LoRA update.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Module, Storage, Tensor};

use crate::error::{Error, Result};
use crate::kernels::{self, Bf16Rows, F32Rows, WeightMatrix};
use crate::quant::QMatrix;

/// Up to this many input rows, f32 weights on the CPU go through the GEMV kernel; more rows
/// go to candle's GEMM, which is faster once the weights are reused across many rows.
const F32_GEMV_MAX_ROWS: usize = 4;

/// A linear layer `y = x·Wᵀ + b` with `W` stored [out, in] as in the checkpoint.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Plain weights in the compute dtype.
    Dense {
        /// [out, in].
        weight: Tensor,
        /// [out].
        bias: Option<Tensor>,
    },
    /// MLX affine-quantized weights; the matmul runs on the packed weights (CPU).
    Quantized {
        /// The packed matrix.
        weight: Arc<QMatrix>,
        /// [out].
        bias: Option<Tensor>,
    },
    /// `base(x) + scale · (x·Aᵀ)·Bᵀ`, the update computed in f32 (PEFT's unmerged LoRA).
    Lora {
        /// The frozen layer.
        base: Box<Linear>,
        /// [r, in], f32.
        a: Tensor,
        /// [out, r], f32.
        b: Tensor,
        /// α/r (or α/√r with rsLoRA, or mlx-lm's absolute scale).
        scale: f64,
    },
}

impl Linear {
    /// A dense layer.
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense { weight, bias }
    }

    /// Applies the layer to `x` [.., in] → [.., out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense { weight, bias } => {
                let m = x.dims().iter().rev().skip(1).product::<usize>();
                let use_kernel = match weight.dtype() {
                    // candle's CPU matmul has no fast bf16 path: bf16 weights always go
                    // through the kernels (bf16×f32, or bf16×bf16 on `vdpbf16ps` when the
                    // activations are bf16), which accumulate in f32 as torch does.
                    DType::BF16 => true,
                    DType::F32 => m <= F32_GEMV_MAX_ROWS,
                    _ => false,
                };
                if use_kernel && x.device().is_cpu() {
                    if let Some(y) = self.with_rows(|w| kernel_forward(w, x))? {
                        return add_bias(y?, bias.as_ref());
                    }
                }
                let l = candle_nn::Linear::new(weight.clone(), bias.clone());
                Ok(l.forward(x)?)
            }
            Linear::Quantized { weight, bias } => {
                if !x.device().is_cpu() {
                    return Err(Error::invalid(
                        "device",
                        "quantized weights run on the CPU in this version",
                    ));
                }
                let y = weight.with_rows(|w| kernel_forward(w, x))?;
                add_bias(y, bias.as_ref())
            }
            Linear::Lora { base, a, b, scale } => {
                let y = base.forward(x)?;
                let x32 = x.to_dtype(DType::F32)?;
                let delta = x32.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?;
                Ok((y + (delta * *scale)?.to_dtype(x.dtype())?)?)
            }
        }
    }

    /// Calls `f` with the layer's weights as rows for [`crate::kernels`] when they are on the
    /// CPU in a layout the kernels read in place: f32 or bf16 contiguous dense weights, or
    /// quantized ones. `None` for a LoRA-wrapped layer, other devices, dtypes or layouts.
    pub(crate) fn with_rows<R>(&self, f: impl FnOnce(&dyn WeightMatrix) -> R) -> Result<Option<R>> {
        match self {
            Linear::Dense { weight, .. } => {
                if !weight.device().is_cpu() {
                    return Ok(None);
                }
                let (_, cols) = weight.dims2()?;
                let (storage, layout) = weight.storage_and_layout();
                let Some((start, end)) = layout.contiguous_offsets() else {
                    return Ok(None);
                };
                Ok(match &*storage {
                    Storage::Cpu(CpuStorage::BF16(v)) => Some(f(&Bf16Rows {
                        data: &v[start..end],
                        cols,
                    })),
                    Storage::Cpu(CpuStorage::F32(v)) => Some(f(&F32Rows {
                        data: &v[start..end],
                        cols,
                    })),
                    _ => None,
                })
            }
            Linear::Quantized { weight, .. } => Ok(Some(weight.with_rows(f))),
            Linear::Lora { .. } => Ok(None),
        }
    }

    /// Each layer applied to the same `x` [.., in], as [`Linear::forward`] gives it. At decode
    /// sizes (up to four rows) on the CPU kernels, all run in one parallel pass
    /// ([`kernels::matmul_many`]), with the same values as one by one.
    pub fn forward_each(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let m = x.dims().iter().rev().skip(1).product::<usize>();
        let together = x.device().is_cpu()
            && m <= F32_GEMV_MAX_ROWS
            && layers.iter().all(|l| match l {
                Linear::Dense { weight, .. } => matches!(weight.dtype(), DType::F32 | DType::BF16),
                Linear::Quantized { .. } => true,
                Linear::Lora { .. } => false,
            });
        let inp = x.dims().last().copied().unwrap_or(0);
        if together {
            let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let ys = Self::with_all_rows(layers, |rows| {
                if rows.iter().any(|w| w.cols() != inp) {
                    return None;
                }
                let products: Vec<kernels::Product<'_>> = rows
                    .iter()
                    .map(|&w| kernels::Product { w, x: &xs, m })
                    .collect();
                Some(kernels::matmul_many(&products))
            })?
            .flatten();
            if let Some(ys) = ys {
                return layers
                    .iter()
                    .zip(ys)
                    .map(|(l, y)| {
                        let mut dims = x.dims().to_vec();
                        if let Some(last) = dims.last_mut() {
                            *last = l.out_features();
                        }
                        let y = Tensor::from_vec(y, dims, x.device())?.to_dtype(x.dtype())?;
                        add_bias(y, l.bias())
                    })
                    .collect();
            }
        }
        layers.iter().map(|l| l.forward(x)).collect()
    }

    /// The bias of a dense or quantized layer (a LoRA layer's lives in its base).
    fn bias(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense { bias, .. } | Linear::Quantized { bias, .. } => bias.as_ref(),
            Linear::Lora { .. } => None,
        }
    }

    /// [`Linear::with_rows`] of several layers at once: `f` gets every layer's rows, in
    /// order; `None` when one of them has none.
    pub(crate) fn with_all_rows<R>(
        layers: &[&Linear],
        f: impl FnOnce(&[&dyn WeightMatrix]) -> R,
    ) -> Result<Option<R>> {
        /// Holds the rows of `layers` after those already in `held`, then calls `f`.
        fn nest<R>(
            layers: &[&Linear],
            held: &[&dyn WeightMatrix],
            f: &mut dyn FnMut(&[&dyn WeightMatrix]) -> R,
        ) -> Result<Option<R>> {
            let Some((first, rest)) = layers.split_first() else {
                return Ok(Some(f(held)));
            };
            let nested = first.with_rows(|rows| {
                let mut held = held.to_vec();
                held.push(rows);
                nest(rest, &held, f)
            })?;
            nested.transpose().map(Option::flatten)
        }
        let mut f = Some(f);
        nest(layers, &[], &mut |rows| f.take().map(|f| f(rows))).map(Option::flatten)
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.dims()[0],
            Linear::Quantized { weight, .. } => weight.rows(),
            Linear::Lora { base, .. } => base.out_features(),
        }
    }

    /// Bytes the weights occupy in memory.
    pub fn weight_bytes(&self) -> usize {
        let tensor_bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            Linear::Dense { weight, bias } => {
                tensor_bytes(weight) + bias.as_ref().map_or(0, tensor_bytes)
            }
            Linear::Quantized { weight, bias } => {
                weight.storage_bytes() + bias.as_ref().map_or(0, tensor_bytes)
            }
            Linear::Lora { base, a, b, .. } => {
                base.weight_bytes() + tensor_bytes(a) + tensor_bytes(b)
            }
        }
    }
}

/// `x · Wᵀ` through the CPU kernels: `x` [.., in] in any float dtype → [.., out] in `x`'s
/// dtype (computed in f32).
fn kernel_forward(w: &dyn WeightMatrix, x: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let inp = dims.last().copied().unwrap_or(0);
    if inp != w.cols() {
        return Err(Error::invalid(
            "input",
            format!("{inp} features for a layer that takes {}", w.cols()),
        ));
    }
    let m = dims.iter().rev().skip(1).product::<usize>();
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let y = kernels::matmul(w, &xs, m);
    if let Some(last) = dims.last_mut() {
        *last = w.rows();
    }
    Ok(Tensor::from_vec(y, dims, x.device())?.to_dtype(x.dtype())?)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => Ok(y.broadcast_add(b)?),
        None => Ok(y),
    }
}

/// Token embeddings: a dense table or an affine-quantized one (mlx-lm quantizes it too).
#[derive(Debug, Clone)]
pub enum Embedding {
    /// [vocab, hidden] in the compute dtype.
    Dense(Tensor),
    /// [vocab, hidden] quantized; rows are dequantized on lookup.
    Quantized(Arc<QMatrix>),
}

impl Embedding {
    /// Rows of `ids` (u32, flat) → [n, hidden] in `dtype`.
    pub fn forward(
        &self,
        ids: &[u32],
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        match self {
            Embedding::Dense(table) => {
                let ids = Tensor::from_slice(ids, (ids.len(),), table.device())?;
                Ok(table.index_select(&ids, 0)?.to_dtype(dtype)?)
            }
            Embedding::Quantized(q) => {
                let h = q.cols();
                let mut out = vec![0f32; ids.len() * h];
                for (row, &id) in out.chunks_mut(h).zip(ids) {
                    q.dequantize_row(id as usize, row)?;
                }
                Ok(Tensor::from_vec(out, (ids.len(), h), device)?.to_dtype(dtype)?)
            }
        }
    }

    /// The same table as an output projection (tied lm_head).
    pub fn as_linear(&self) -> Linear {
        match self {
            Embedding::Dense(t) => Linear::dense(t.clone(), None),
            Embedding::Quantized(q) => Linear::Quantized {
                weight: q.clone(),
                bias: None,
            },
        }
    }
}
