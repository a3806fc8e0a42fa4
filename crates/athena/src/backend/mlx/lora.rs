//! LoRA factors on MLX, computed as mlx-lm's `LoRALinear` and `LoRASwitchLinear` compute them
//! (<https://github.com/ml-explore/mlx-lm/blob/v0.32.2/mlx_lm/tuner/lora.py>):
//! `y = linear(x); z = (x @ lora_a) @ lora_b; y + scale * z`, and for the experts the same
//! with each routed row's own expert's factors through `gather_mm`; and the dense update that
//! mlx-lm's `fuse` adds to a float weight.
//!
//! The factors come from the [`LoraDelta`]s that `crate::lora` reads for every backend (PEFT
//! or mlx-lm), `ΔW = scale · B·A` with A [r, in] and B [out, r]: here `lora_a = Aᵀ` and
//! `lora_b = Bᵀ`, and an expert projection's per-expert factors are stacked as mlx-lm's
//! `switch_mlp` stacks them (`lora_a` [E, r, in], `lora_b` [E, out, r]).

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::ffi::Array;
use crate::error::{Error, Result};
use crate::lora::LoraDelta;

/// A linear layer's low-rank factors: `lora_a` [in, r], `lora_b` [r, out].
pub(super) struct LoraLinear {
    a: Array,
    b: Array,
    scale: Array,
}

/// An expert projection's stacked factors: `lora_a` [E, r, in], `lora_b` [E, out, r].
pub(super) struct LoraSwitch {
    a: Array,
    b: Array,
    scale: Array,
}

impl LoraLinear {
    /// `y + scale · ((x @ lora_a) @ lora_b)`, `y` being the base layer's output for `x`.
    pub(super) fn forward(&self, x: &Array, y: &Array) -> Result<Array> {
        let z = x.matmul(&self.a)?.matmul(&self.b)?;
        y.add(&self.scale.multiply(&z)?)
    }

    /// Bytes of both factors.
    pub(super) fn bytes(&self) -> usize {
        self.a.nbytes() + self.b.nbytes()
    }

    /// The factors of `d`.
    pub(super) fn new(d: &LoraDelta) -> Result<LoraLinear> {
        Ok(LoraLinear {
            a: array(&d.a.t()?.contiguous()?)?,
            b: array(&d.b.t()?.contiguous()?)?,
            scale: Array::scalar(d.scale as f32)?,
        })
    }

    /// The [out, in] update `fuse` adds: `(scale · lora_bᵀ) @ lora_aᵀ`.
    pub(super) fn delta(&self) -> Result<Array> {
        self.scale
            .multiply(&self.b.swapaxes(-1, -2)?)?
            .matmul(&self.a.swapaxes(-1, -2)?)
    }
}

impl LoraSwitch {
    /// `y + scale · z`, z the rows `x` [.., 1, in] through their experts' `lora_a` then
    /// `lora_b`, `y` the experts' own output.
    pub(super) fn forward(
        &self,
        x: &Array,
        indices: &Array,
        sorted: bool,
        y: &Array,
    ) -> Result<Array> {
        let z = x.gather_mm(&self.a.swapaxes(-1, -2)?, indices, sorted)?;
        let z = z.gather_mm(&self.b.swapaxes(-1, -2)?, indices, sorted)?;
        y.add(&self.scale.multiply(&z)?)
    }

    /// Bytes of both stacks.
    pub(super) fn bytes(&self) -> usize {
        self.a.nbytes() + self.b.nbytes()
    }

    /// The [E, out, in] update `fuse` adds: `(scale · lora_b) @ lora_a`.
    pub(super) fn delta(&self) -> Result<Array> {
        self.scale.multiply(&self.b)?.matmul(&self.a)
    }
}

/// A float32 host tensor as an MLX array of the same shape.
fn array(t: &Tensor) -> Result<Array> {
    Array::from_slice(&t.flatten_all()?.to_vec1::<f32>()?, t.dims())
}

/// The experts' factors, `deltas` by expert index, stacked over all `num_experts`. Ranks are
/// padded with zeros to the largest, experts without a delta get zero factors, and when the
/// experts' scales differ each is folded into its `lora_b` (none of which changes a product).
pub(super) fn stack_experts(
    deltas: &BTreeMap<usize, &LoraDelta>,
    num_experts: usize,
) -> Result<LoraSwitch> {
    let first = deltas.values().next().ok_or_else(|| {
        Error::internal("mlx lora", "an expert projection's LoRA without any expert")
    })?;
    let (inp, out) = (first.a.dims()[1], first.b.dims()[0]);
    let rank = deltas.values().map(|d| d.rank()).max().unwrap_or(0);
    let one_scale = deltas.values().all(|d| d.scale == first.scale);
    let mut a = vec![0f32; num_experts * rank * inp];
    let mut b = vec![0f32; num_experts * out * rank];
    for (&e, d) in deltas {
        let r = d.rank();
        let fold = if one_scale { 1.0 } else { d.scale as f32 };
        let da = d.a.flatten_all()?.to_vec1::<f32>()?;
        let db = d.b.flatten_all()?.to_vec1::<f32>()?;
        // A [r, in] fills rows 0..r of the expert's [rank, in]; B [out, r] columns 0..r of
        // its [out, rank].
        a[e * rank * inp..][..r * inp].copy_from_slice(&da);
        for o in 0..out {
            let row = &mut b[(e * out + o) * rank..][..r];
            for (dst, &src) in row.iter_mut().zip(&db[o * r..(o + 1) * r]) {
                *dst = fold * src;
            }
        }
    }
    Ok(LoraSwitch {
        a: Array::from_slice(&a, &[num_experts, rank, inp])?,
        b: Array::from_slice(&b, &[num_experts, out, rank])?,
        scale: Array::scalar(if one_scale { first.scale as f32 } else { 1.0 })?,
    })
}
