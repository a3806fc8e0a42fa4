//! An OLMoE checkpoint → MLX arrays. Tensors are read and validated by the shared checkpoint
//! reader (shapes, layouts, unexpected tensors; HF per-expert and transformers-v5 experts are
//! stacked into [E, out, in] as mlx-lm's `sanitize` does), then copied into MLX. Modules with
//! `.scales` are affine-quantized and stay packed. Every float tensor (norm weights, dense
//! weights, quantized modules' scales and biases) is cast to the compute dtype, as mlx-lm's
//! `model.set_dtype` casts every floating parameter: activations then flow in that dtype.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::ffi::{Array, Dtype};
use super::model::{Attention, DecoderLayer, Embedding, Experts, Linear, Olmoe, SparseMoeBlock};
use crate::checkpoint::{CheckpointReader, ExpertProj, OlmoeArgs, WeightFiles};
use crate::error::{Error, Result};

/// Copies a host tensor into an MLX array: u32 as stored, floats in `dtype`. A float tensor is
/// copied as float32 and cast by MLX (round to nearest even, as mlx-lm's `astype`), then
/// evaluated so that the float32 copy is freed at once.
fn array(name: &str, t: &Tensor, dtype: Dtype) -> Result<Array> {
    let shape = t.dims().to_vec();
    let at = |e: Error| match e {
        Error::Tensor { msg, .. } => Error::tensor(name, msg),
        other => other,
    };
    match t.dtype() {
        DType::U32 => Array::from_slice(&t.flatten_all()?.to_vec1::<u32>()?, &shape).map_err(at),
        _ => {
            let f32s = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let a = Array::from_slice(&f32s, &shape).map_err(at)?;
            if dtype == Dtype::F32 {
                return Ok(a);
            }
            let cast = a.astype(dtype).map_err(at)?;
            Array::eval(&[&cast]).map_err(at)?;
            Ok(cast)
        }
    }
}

struct Loader<'a> {
    r: CheckpointReader<'a>,
    args: &'a OlmoeArgs,
    dtype: Dtype,
}

impl Loader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Array> {
        array(name, &self.r.tensor(name, shape)?, self.dtype)
    }

    /// The packed weight, scales and biases of a quantized module.
    fn packed(
        &self,
        module: &str,
        lead: &[usize],
        out: usize,
        inp: usize,
    ) -> Result<(Array, Array, Array, usize, u8)> {
        let (w, s, b, spec) = self.r.quantized(module, lead, out, inp)?;
        Ok((
            array(&format!("{module}.weight"), &w, self.dtype)?,
            array(&format!("{module}.scales"), &s, self.dtype)?,
            array(&format!("{module}.biases"), &b, self.dtype)?,
            spec.group_size,
            spec.bits,
        ))
    }

    fn linear(&self, module: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let bias = if bias {
            Some(self.tensor(&format!("{module}.bias"), &[out])?)
        } else {
            None
        };
        if self.r.is_quantized(module) {
            let (weight, scales, biases, group_size, bits) = self.packed(module, &[], out, inp)?;
            return Ok(Linear::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
                bias,
            });
        }
        Ok(Linear::Dense {
            weight: self.tensor(&format!("{module}.weight"), &[out, inp])?,
            bias,
        })
    }

    fn experts(&self, layer: usize, proj: ExpertProj) -> Result<Experts> {
        let module = CheckpointReader::switch_module(layer, proj);
        let (out, inp) = self.r.expert_shape(proj);
        if self.r.is_quantized(&module) {
            let (weight, scales, biases, group_size, bits) =
                self.packed(&module, &[self.args.num_experts], out, inp)?;
            return Ok(Experts::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            });
        }
        Ok(Experts::Dense(array(
            &format!("{module}.weight"),
            &self.r.experts(layer, proj)?,
            self.dtype,
        )?))
    }

    fn layer(&self, l: usize) -> Result<DecoderLayer> {
        let a = self.args;
        let (hsz, q, kv) = (
            a.hidden_size,
            a.num_attention_heads * a.head_dim,
            a.num_key_value_heads * a.head_dim,
        );
        let p = format!("model.layers.{l}");
        let attn = |n: &str, out: usize, inp: usize| {
            self.linear(&format!("{p}.self_attn.{n}"), out, inp, a.attention_bias)
        };
        Ok(DecoderLayer {
            input_layernorm: self.tensor(&format!("{p}.input_layernorm.weight"), &[hsz])?,
            self_attn: Attention {
                q_proj: attn("q_proj", q, hsz)?,
                k_proj: attn("k_proj", kv, hsz)?,
                v_proj: attn("v_proj", kv, hsz)?,
                o_proj: attn("o_proj", hsz, q)?,
                q_norm: self.tensor(&format!("{p}.self_attn.q_norm.weight"), &[q])?,
                k_norm: self.tensor(&format!("{p}.self_attn.k_norm.weight"), &[kv])?,
            },
            post_attention_layernorm: self
                .tensor(&format!("{p}.post_attention_layernorm.weight"), &[hsz])?,
            mlp: SparseMoeBlock {
                gate: self.linear(&format!("{p}.mlp.gate"), a.num_experts, hsz, false)?,
                gate_proj: self.experts(l, ExpertProj::Gate)?,
                up_proj: self.experts(l, ExpertProj::Up)?,
                down_proj: self.experts(l, ExpertProj::Down)?,
            },
        })
    }

    fn embedding(&self) -> Result<Embedding> {
        let (v, h) = (self.args.vocab_size, self.args.hidden_size);
        let module = "model.embed_tokens";
        if self.r.is_quantized(module) {
            let (weight, scales, biases, group_size, bits) = self.packed(module, &[], v, h)?;
            return Ok(Embedding::Quantized {
                weight,
                scales,
                biases,
                group_size,
                bits,
            });
        }
        Ok(Embedding::Dense(
            self.tensor(&format!("{module}.weight"), &[v, h])?,
        ))
    }
}

/// Loads the checkpoint in `dir` (config.json + safetensors, any layout athena reads) into MLX
/// arrays whose floats are in `dtype`. `on_layer(done, total)` reports progress.
pub(super) fn load(
    dir: &Path,
    dtype: Dtype,
    mut on_layer: impl FnMut(usize, usize),
) -> Result<Olmoe> {
    let args = OlmoeArgs::from_file(&dir.join("config.json"))?;
    let files = WeightFiles::open(dir)?;
    let r = CheckpointReader::new(&files, &args, &Device::Cpu, DType::F32)?;
    let loader = Loader {
        r,
        args: &args,
        dtype,
    };
    let embed_tokens = loader.embedding()?;
    let total = args.num_hidden_layers;
    let mut layers = Vec::with_capacity(total);
    for l in 0..total {
        // Arrays made from host memory hold their own copy: each layer's host tensors are
        // freed before the next is read.
        layers.push(loader.layer(l)?);
        on_layer(l + 1, total);
    }
    let norm = loader.tensor("model.norm.weight", &[args.hidden_size])?;
    let lm_head = if args.tie_word_embeddings {
        None
    } else {
        Some(loader.linear("lm_head", args.vocab_size, args.hidden_size, false)?)
    };
    loader.r.finish()?;
    Ok(Olmoe {
        args: args.clone(),
        embed_tokens,
        layers,
        norm,
        lm_head,
    })
}
