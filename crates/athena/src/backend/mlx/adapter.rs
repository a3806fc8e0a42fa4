//! A LoRA adapter put on the MLX model: each adapted layer wrapped with its factors
//! (`super::lora`), or the update merged into its float weight as mlx-lm's `fuse` does
//! (<https://github.com/ml-explore/mlx-lm/blob/v0.32.2/mlx_lm/tuner/lora.py>). The adapter is
//! the [`LoraAdapter`] every backend reads (PEFT or mlx-lm), so both formats apply.

use std::collections::BTreeMap;

use super::ffi::Array;
use super::lora::{stack_experts, LoraLinear};
use super::model::{Experts, Linear, Olmoe};
use crate::error::{Error, Result};
use crate::lora::{AttnProj, ExpertProjKind, LoraAdapter, LoraDelta, LoraTarget};

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
                g.switch.entry((layer, proj)).or_default().insert(expert, d);
            }
            _ => g.linear.push((t.clone(), d)),
        }
    }
    g
}

fn linear_mut<'m>(model: &'m mut Olmoe, t: &LoraTarget) -> Result<&'m mut Linear> {
    let layer = model.layers.get_mut(t.layer()).ok_or_else(|| {
        Error::internal(
            "mlx lora",
            format!("LoRA target `{}` past the layers", t.hf_name()),
        )
    })?;
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
            return Err(Error::internal(
                "mlx lora",
                "an expert is not a linear layer on MLX",
            ))
        }
    })
}

fn experts_mut(model: &mut Olmoe, layer: usize, proj: ExpertProjKind) -> Result<&mut Experts> {
    let l = model.layers.get_mut(layer).ok_or_else(|| {
        Error::internal(
            "mlx lora",
            format!("LoRA target layer {layer} past the layers"),
        )
    })?;
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
        let lora = LoraLinear::new(d)?;
        let l = linear_mut(model, t)?;
        let base = std::mem::replace(l, placeholder_linear()?);
        *l = Linear::Lora {
            base: Box::new(base),
            lora,
        };
    }
    for (&(layer, proj), deltas) in &g.switch {
        let lora = stack_experts(deltas, model.args.num_experts)?;
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
        let f = LoraLinear::new(d)?;
        let Linear::Dense { weight, .. } = linear_mut(model, t)? else {
            return Err(stored_quantized(&t.hf_name()));
        };
        let w = weight.add(&f.delta()?)?;
        Array::eval(&[&w])?;
        *weight = w;
    }
    for (&(layer, proj), deltas) in &g.switch {
        let f = stack_experts(deltas, model.args.num_experts)?;
        let Experts::Dense(weight) = experts_mut(model, layer, proj)? else {
            return Err(stored_quantized(&switch_name(layer, proj)));
        };
        let w = weight.add(&f.delta()?)?;
        Array::eval(&[&w])?;
        *weight = w;
    }
    Ok(())
}
