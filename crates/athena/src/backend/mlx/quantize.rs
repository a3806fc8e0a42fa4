//! Load-time quantization on MLX, as `mlx_lm.convert -q` does it
//! (<https://github.com/ml-explore/mlx-lm/blob/v0.32.2/mlx_lm/utils.py>, `quantize_model`):
//! `mx.quantize` (affine) with group size 64 on every module that has a quantized form (the
//! token embedding, the attention projections, the router `mlp.gate`, the `switch_mlp`
//! experts and `lm_head`), skipping those whose input width is not a multiple of the group
//! size. mlx-lm's OLMoE has no `quant_predicate`, so nothing else is kept dense.
//!
//! The candle path's `4bit` and `8bit` mean other recipes (8-bit there uses groups of 32,
//! keeps the router and the value and output projections dense); on MLX they mean what
//! mlx-lm's `-q --q-bits 4|8` means, so the result is mlx-lm's quantized model.

use super::ffi::Array;
use super::model::{Embedding, Experts, Linear, Olmoe};
use crate::checkpoint::OlmoeArgs;
use crate::error::{Error, Result};
use crate::options::Quantization;

/// mlx-lm's default group size for affine quantization.
pub(super) const GROUP_SIZE: usize = 64;

/// The bits `q` asks for; `None` for no quantization.
pub(super) fn bits(q: Quantization) -> Option<u8> {
    match q {
        Quantization::None => None,
        Quantization::Int8 => Some(8),
        Quantization::Int4 => Some(4),
    }
}

/// Whether mlx-lm quantizes `weight`: its last axis (the input width) is a multiple of the
/// group size.
fn fits(weight: &Array) -> bool {
    weight
        .shape()
        .last()
        .is_some_and(|&w| w > 0 && w.is_multiple_of(GROUP_SIZE))
}

/// `weight` quantized and evaluated, so that the float weight can be freed.
fn packed(weight: &Array, bits: u8) -> Result<(Array, Array, Array)> {
    let (w, s, b) = weight.quantize(GROUP_SIZE, bits)?;
    Array::eval(&[&w, &s, &b])?;
    Ok((w, s, b))
}

fn linear(l: &mut Linear, bits: u8) -> Result<()> {
    let Linear::Dense { weight, bias } = l else {
        return Ok(());
    };
    if !fits(weight) {
        return Ok(());
    }
    let (w, scales, biases) = packed(weight, bits)?;
    let bias = bias.take();
    *l = Linear::Quantized {
        weight: w,
        scales,
        biases,
        group_size: GROUP_SIZE,
        bits,
        bias,
    };
    Ok(())
}

fn experts(e: &mut Experts, bits: u8) -> Result<()> {
    let Experts::Dense(weight) = e else {
        return Ok(());
    };
    if !fits(weight) {
        return Ok(());
    }
    let (weight, scales, biases) = packed(weight, bits)?;
    *e = Experts::Quantized {
        weight,
        scales,
        biases,
        group_size: GROUP_SIZE,
        bits,
    };
    Ok(())
}

fn embedding(e: &mut Embedding, bits: u8) -> Result<()> {
    let Embedding::Dense(table) = e else {
        return Ok(());
    };
    if !fits(table) {
        return Ok(());
    }
    let (weight, scales, biases) = packed(table, bits)?;
    *e = Embedding::Quantized {
        weight,
        scales,
        biases,
        group_size: GROUP_SIZE,
        bits,
    };
    Ok(())
}

/// Refuses to quantize a checkpoint that is already quantized, as `mlx_lm.convert -q` does.
pub(super) fn check_float(args: &OlmoeArgs) -> Result<()> {
    if args.quantization.is_some() {
        return Err(Error::invalid(
            "quantization",
            "the checkpoint is already quantized (its config.json has a `quantization` block); \
             load it without --quantization, or quantize the float checkpoint",
        ));
    }
    Ok(())
}

/// Quantizes `model` in place as `mlx_lm.convert -q --q-bits <bits>` does. A checkpoint that
/// is already quantized is refused, as mlx-lm refuses it.
pub(super) fn quantize(model: &mut Olmoe, bits: u8) -> Result<()> {
    check_float(&model.args)?;
    let _span = tracing::info_span!("mlx_quantize", bits, group_size = GROUP_SIZE).entered();
    embedding(&mut model.embed_tokens, bits)?;
    for layer in &mut model.layers {
        let a = &mut layer.self_attn;
        for p in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
            linear(p, bits)?;
        }
        let m = &mut layer.mlp;
        linear(&mut m.gate, bits)?;
        for e in [&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj] {
            experts(e, bits)?;
        }
    }
    if let Some(head) = &mut model.lm_head {
        linear(head, bits)?;
    }
    Ok(())
}
