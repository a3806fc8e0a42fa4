//! LoRA adapters on MLX, computed as mlx-lm's `LoRALinear` and `LoRASwitchLinear` compute them
//! (<https://github.com/ml-explore/mlx-lm/blob/v0.32.2/mlx_lm/tuner/lora.py>):
//! `y = linear(x); z = (x @ lora_a) @ lora_b; y + scale * z`, and for the experts the same
//! with each routed row's own expert's factors through `gather_mm`. Merging adds
//! `scale · (lora_a · lora_b)ᵀ` to a float weight, as mlx-lm's `fuse` does.
//!
//! The adapter is the one [`LoraAdapter`] read for every backend (PEFT or mlx-lm), whose
//! deltas are `ΔW = scale · B·A` with A [r, in] and B [out, r]; here `lora_a = Aᵀ` and
//! `lora_b = Bᵀ`, and an expert projection's per-expert factors are stacked as mlx-lm's
//! `switch_mlp` stacks them (`lora_a` [E, r, in], `lora_b` [E, out, r]).

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::ffi::Array;
use super::model::{Experts, Linear, Olmoe};
use crate::error::{Error, Result};
use crate::lora::{AttnProj, ExpertProjKind, LoraAdapter, LoraDelta, LoraTarget};

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
}

/// A float32 host tensor as an MLX array of the same shape.
fn array(t: &Tensor) -> Result<Array> {
    Array::from_slice(&t.flatten_all()?.to_vec1::<f32>()?, t.dims())
}

fn linear_factors(d: &LoraDelta) -> Result<LoraLinear> {
    Ok(LoraLinear {
        a: array(&d.a.t()?.contiguous()?)?,
        b: array(&d.b.t()?.contiguous()?)?,
        scale: Array::scalar(d.scale as f32)?,
    })
}

/// The experts' factors stacked over all `num_experts`. Ranks are padded with zeros to the
/// largest, experts without a delta get zero factors, and when the experts' scales differ each
/// is folded into its `lora_b` (all three leave the products unchanged).
fn switch_factors(deltas: &BTreeMap<usize, &LoraDelta>, num_experts: usize) -> Result<LoraSwitch> {
    let first = deltas
        .values()
        .next()
        .ok_or_else(|| Error::internal("mlx lora", "an expert projection's LoRA without any expert"))?;
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

/// The adapter's modules, grouped as MLX holds them.
struct Grouped<'a> {
    linear: Vec<(LoraTarget, &'a LoraDelta)>,
    switch: BTreeMap<(usize, ExpertProjKind), BTreeMap<usize, &'a LoraDelta>>,
}

fn group(adapter: &LoraAdapter) -> Grouped<'_> {
    let mut g = Grouped {
        linear: Vec::new(),
        switch: BTreeMap::new(),
    };
    for (t, d) in &adapter.deltas {
        match *t {
            LoraTarget::Expert {
                layer,
                expert,
                proj,
            } => {
                g.switch
                    .entry((layer, proj))
                    .or_default()
                    .insert(expert, d);
            }
            _ => g.linear.push((t.clone(), d)),
        }
    }
    g
}

fn linear_mut<'m>(model: &'m mut Olmoe, t: &LoraTarget) -> Result<&'m mut Linear> {
    let layer = model
        .layers
        .get_mut(t.layer())
        .ok_or_else(|| Error::internal("mlx lora", format!("LoRA target `{}` past the layers", t.hf_name())))?;
    Ok(match t {
        LoraTarget::Attn { proj, .. } => {
            let a = &mut layer.self_attn;
            match proj {
                AttnProj::Q => &mut a.q_proj,
                AttnProj::K => &mut a.k_proj,
                AttnProj::V => &mut a.v_proj,
                AttnProj::O => &mut a.o_proj,
            }
        }
        LoraTarget::Router { .. } => &mut layer.mlp.gate,
        LoraTarget::Expert { .. } => {
            return Err(Error::internal("mlx lora", "an expert is not a linear layer on MLX"))
        }
    })
}

fn experts_mut(model: &mut Olmoe, layer: usize, proj: ExpertProjKind) -> Result<&mut Experts> {
    let l = model
        .layers
        .get_mut(layer)
        .ok_or_else(|| Error::internal("mlx lora", format!("LoRA target layer {layer} past the layers")))?;
    Ok(match proj {
        ExpertProjKind::Gate => &mut l.mlp.gate_proj,
        ExpertProjKind::Up => &mut l.mlp.up_proj,
        ExpertProjKind::Down => &mut l.mlp.down_proj,
    })
}

fn switch_name(layer: usize, proj: ExpertProjKind) -> String {
    format!("model.layers.{layer}.mlp.switch_mlp.{}", proj.name())
}

fn stored_quantized(module: &str) -> Error {
    Error::invalid(
        "merge_lora",
        format!(
            "`{module}` is stored quantized; a LoRA adapter can only be applied unmerged to it"
        ),
    )
}

/// Wraps every adapted module of `model` so that its output adds the adapter's update,
/// computed apart from the weights (dense or quantized).
pub(super) fn apply(model: &mut Olmoe, adapter: &LoraAdapter) -> Result<()> {
    let g = group(adapter);
    for (t, d) in &g.linear {
        let lora = linear_factors(d)?;
        let l = linear_mut(model, t)?;
        let base = std::mem::replace(l, placeholder_linear()?);
        *l = Linear::Lora {
            base: Box::new(base),
            lora,
        };
    }
    for (&(layer, proj), deltas) in &g.switch {
        let lora = switch_factors(deltas, model.args.num_experts)?;
        let e = experts_mut(model, layer, proj)?;
        let base = std::mem::replace(e, Experts::Dense(Array::scalar(0f32)?));
        *e = Experts::Lora {
            base: Box::new(base),
            lora,
        };
    }
    Ok(())
}

fn placeholder_linear() -> Result<Linear> {
    Ok(Linear::Dense {
        weight: Array::scalar(0f32)?,
        bias: None,
    })
}

/// Adds the adapter's update into the float weights of `model`, as mlx-lm's `fuse` does:
/// `W + scale · B·A` per module and `W_e + scale · B_e·A_e` per expert. A module stored
/// quantized is refused.
pub(super) fn merge(model: &mut Olmoe, adapter: &LoraAdapter) -> Result<()> {
    let g = group(adapter);
    for (t, d) in &g.linear {
        let f = linear_factors(d)?;
        let Linear::Dense { weight, .. } = linear_mut(model, t)? else {
            return Err(stored_quantized(&t.hf_name()));
        };
        // fuse: ((scale * lora_b.T) @ lora_a.T)
        let delta = f
            .scale
            .multiply(&f.b.swapaxes(-1, -2)?)?
            .matmul(&f.a.swapaxes(-1, -2)?)?;
        let w = weight.add(&delta)?;
        Array::eval(&[&w])?;
        *weight = w;
    }
    for (&(layer, proj), deltas) in &g.switch {
        let f = switch_factors(deltas, model.args.num_experts)?;
        let Experts::Dense(weight) = experts_mut(model, layer, proj)? else {
            return Err(stored_quantized(&switch_name(layer, proj)));
        };
        // fuse: weight + (scale * lora_b) @ lora_a
        let w = weight.add(&f.scale.multiply(&f.b)?.matmul(&f.a)?)?;
        Array::eval(&[&w])?;
        *weight = w;
    }
    Ok(())
}
