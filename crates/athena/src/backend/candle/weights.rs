//! From checkpoint tensors to the model's layers: dense, pre-quantized (mlx-lm), quantized at
//! load time, and with a LoRA adapter merged or kept apart. The model file asks for a layer by
//! its HF name and gets a [`Linear`]; every representation decision is made here.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::linear::{Embedding, Linear};
use crate::checkpoint::{CheckpointReader, ExpertProj, OlmoeArgs};
use crate::error::{Error, Result};
use crate::lora::{LoraAdapter, LoraDelta, LoraTarget};
use crate::quant::{AffineParams, InputForm, QMatrix};

/// How to build the layers.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions<'a> {
    /// Quantize dense weights at load time (attention, experts, embeddings, lm_head; the router
    /// stays dense: its top-k decisions are the most sensitive part of the model).
    pub quantize: Option<AffineParams>,
    /// A LoRA adapter to apply.
    pub lora: Option<&'a LoraAdapter>,
    /// Merge the adapter into the weights instead of computing it apart.
    pub merge_lora: bool,
    /// The prepared form quantized matrices ask of their inputs.
    pub input_form: InputForm,
}

/// What load-time quantization does with one module.
///
/// 4-bit (and below) quantizes every linear layer but the router with the parameters asked
/// for. 8-bit follows the practice of giving the most error-sensitive projections more
/// precision (llama.cpp's K-quant mixes do the same for `attn_v`): attention's value and
/// output projections stay dense — quantizing them accounts for more than half of the 8-bit
/// logit error on the test fixtures, for 3.5% of the bytes — and the experts, most of the
/// bytes and the least sensitive, use groups of 64, which pays for the dense projections.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Recipe {
    Quantize(AffineParams),
    /// Dense, in the compute dtype.
    Dense,
    /// Dense, kept in the stored dtype when that is bf16 and the compute dtype f32.
    DenseStored,
}

impl Recipe {
    fn of(module: &str, p: AffineParams) -> Recipe {
        if p.bits < 8 {
            return Recipe::Quantize(p);
        }
        if module.ends_with(".v_proj") || module.ends_with(".o_proj") {
            return Recipe::DenseStored;
        }
        if module.contains(".switch_mlp.") || module.contains(".experts.") {
            if let Ok(wider) = AffineParams::new(p.bits, p.group_size.max(64)) {
                return Recipe::Quantize(wider);
            }
        }
        Recipe::Quantize(p)
    }
}

/// Builds layers from a checkpoint.
pub(crate) struct Weights<'a> {
    pub r: &'a CheckpointReader<'a>,
    pub args: &'a OlmoeArgs,
    pub opts: BuildOptions<'a>,
    pub dtype: DType,
}

/// W + scale·B·A, computed in f32 and returned in `w`'s dtype.
fn merged(w: &Tensor, d: &LoraDelta) -> Result<Tensor> {
    let delta = (d.b.matmul(&d.a)? * d.scale)?;
    Ok((w.to_dtype(DType::F32)? + delta.to_device(w.device())?)?.to_dtype(w.dtype())?)
}

fn with_lora(base: Linear, delta: Option<&LoraDelta>, merge: bool) -> Linear {
    match delta {
        Some(d) if !merge => Linear::Lora {
            base: Box::new(base),
            a: d.a.clone(),
            b: d.b.clone(),
            scale: d.scale,
        },
        _ => base,
    }
}

impl Weights<'_> {
    fn delta(&self, target: Option<LoraTarget>) -> Option<&LoraDelta> {
        target.and_then(|t| self.opts.lora.and_then(|l| l.get(&t)))
    }

    /// Quantizes `w`; `None` when its width fits no group size (it then stays dense).
    fn quantize_matrix(
        &self,
        name: &str,
        w: &Tensor,
        params: AffineParams,
    ) -> Result<Option<Arc<QMatrix>>> {
        let cols = w.dim(1)?;
        let Some(params) = params.fitting(cols) else {
            tracing::debug!(name, cols, "width fits no group size; kept dense");
            return Ok(None);
        };
        // At 8 bits, scales and biases in f16 halve their memory (they are a fifth of an
        // 8-bit matrix at group 32), the codes fitted to the rounded values; a matrix whose
        // range does not fit f16 keeps them in f32. At 4 bits they follow the checkpoint, as
        // mlx-lm quantizes it: bf16 for a bf16 model (`mx.quantize` of bf16 weights, bit for
        // bit: 4.5 bits a weight instead of 5), else f32 (on the test fixtures f16 moves 4-bit
        // logits measurably).
        let q = match params.bits {
            8 => QMatrix::quantize_tensor_half(name, w, params)
                .or_else(|_| QMatrix::quantize_tensor(name, w, params))?,
            _ => {
                let q = QMatrix::quantize_tensor(name, w, params)?;
                match self.args.bf16_scales() {
                    true => q.with_bf16_scales(),
                    false => q,
                }
            }
        };
        Ok(Some(Arc::new(q.with_input_form(self.opts.input_form))))
    }

    fn quantize(
        &self,
        name: &str,
        w: Tensor,
        bias: Option<Tensor>,
        params: AffineParams,
    ) -> Result<Linear> {
        Ok(match self.quantize_matrix(name, &w, params)? {
            Some(weight) => Linear::Quantized { weight, bias },
            None => Linear::dense(w.to_dtype(self.dtype)?, bias),
        })
    }

    fn stored_matrix(
        &self,
        module: &str,
        w: &Tensor,
        s: &Tensor,
        b: &Tensor,
        bits: u8,
        group: usize,
    ) -> Result<Arc<QMatrix>> {
        let q = QMatrix::from_mlx(module, w, s, b, AffineParams::new(bits, group)?)?;
        Ok(Arc::new(q.with_input_form(self.opts.input_form)))
    }

    /// The dense or quantized base of `module` with its `bias`, any LoRA merged in when asked.
    fn base(
        &self,
        module: &str,
        (out, inp): (usize, usize),
        bias: Option<Tensor>,
        delta: Option<&LoraDelta>,
        quantizable: bool,
    ) -> Result<Linear> {
        if self.r.is_quantized(module) {
            if delta.is_some() && self.opts.merge_lora {
                return Err(Error::invalid(
                    "merge_lora",
                    format!("`{module}` is stored quantized; a LoRA adapter can only be applied unmerged to it"),
                ));
            }
            let (w, s, b, spec) = self.r.quantized(module, &[], out, inp)?;
            let weight = self.stored_matrix(module, &w, &s, &b, spec.bits, spec.group_size)?;
            return Ok(Linear::Quantized { weight, bias });
        }
        let name = format!("{module}.weight");
        let merge = delta.filter(|_| self.opts.merge_lora);
        let recipe = match self.opts.quantize {
            Some(p) if quantizable => Recipe::of(module, p),
            _ => Recipe::Dense,
        };
        let mut w = match (recipe, merge) {
            // bf16 weights widen to f32 exactly, so they are kept as stored and read by the
            // bf16×f32 kernel: the same products at half the memory.
            (Recipe::DenseStored, None) => {
                let w = self.r.tensor_stored(&name, &[out, inp])?;
                if w.dtype() == DType::BF16 && self.dtype == DType::F32 && w.device().is_cpu() {
                    return Ok(Linear::dense(w, bias));
                }
                w.to_dtype(self.dtype)?
            }
            _ => self.r.tensor(&name, &[out, inp])?,
        };
        if let Some(d) = merge {
            w = merged(&w, d)?;
        }
        match recipe {
            Recipe::Quantize(p) => self.quantize(module, w, bias, p),
            Recipe::Dense | Recipe::DenseStored => Ok(Linear::dense(w, bias)),
        }
    }

    /// The linear layer `module` [out, in] (with `.bias` when `bias`), LoRA-wrapped for `target`.
    pub fn linear(
        &self,
        module: &str,
        out: usize,
        inp: usize,
        bias: bool,
        target: Option<LoraTarget>,
        quantizable: bool,
    ) -> Result<Linear> {
        let delta = self.delta(target);
        let bias = match bias {
            true => Some(self.r.tensor(&format!("{module}.bias"), &[out])?),
            false => None,
        };
        let base = self.base(module, (out, inp), bias, delta, quantizable)?;
        Ok(with_lora(base, delta, self.opts.merge_lora))
    }

    /// One [`Linear`] per expert for projection `proj` of `layer`. Dense experts share the
    /// canonical stacked [E, out, in] tensor (each is a view of it).
    pub fn experts(
        &self,
        layer: usize,
        proj: ExpertProj,
        target: impl Fn(usize) -> LoraTarget,
    ) -> Result<Vec<Linear>> {
        let e = self.args.num_experts;
        let (out, inp) = self.r.expert_shape(proj);
        let deltas: Vec<Option<&LoraDelta>> = (0..e).map(|x| self.delta(Some(target(x)))).collect();
        let merge = self.opts.merge_lora && deltas.iter().any(Option::is_some);
        let module = CheckpointReader::switch_module(layer, proj);
        let bases: Vec<Linear> = if self.r.is_quantized(&module) {
            if merge {
                return Err(Error::invalid(
                    "merge_lora",
                    format!("`{module}` is stored quantized; a LoRA adapter can only be applied unmerged to it"),
                ));
            }
            let (w, s, b, spec) = self.r.quantized(&module, &[e], out, inp)?;
            (0..e)
                .map(|x| {
                    let name = format!("{module}[{x}]");
                    let weight = self.stored_matrix(
                        &name,
                        &w.get(x)?,
                        &s.get(x)?,
                        &b.get(x)?,
                        spec.bits,
                        spec.group_size,
                    )?;
                    Ok(Linear::Quantized { weight, bias: None })
                })
                .collect::<Result<_>>()?
        } else {
            // Expert by expert: never more than one dense expert matrix converted at a time,
            // and per-expert checkpoints are copied once (not into a stack first).
            let mut bases = Vec::with_capacity(e);
            self.r.for_each_expert(layer, proj, |x, w| {
                let w = match (deltas[x], self.opts.merge_lora) {
                    (Some(d), true) => merged(&w, d)?,
                    _ => w,
                };
                bases.push(match self.opts.quantize.map(|p| Recipe::of(&module, p)) {
                    Some(Recipe::Quantize(p)) => {
                        self.quantize(&format!("{module}[{x}]"), w, None, p)?
                    }
                    _ => Linear::dense(w, None),
                });
                Ok(())
            })?;
            bases
        };
        Ok(bases
            .into_iter()
            .zip(deltas)
            .map(|(base, d)| with_lora(base, d, self.opts.merge_lora))
            .collect())
    }

    /// The token embedding table.
    pub fn embedding(&self) -> Result<Embedding> {
        let (v, h) = (self.args.vocab_size, self.args.hidden_size);
        let module = "model.embed_tokens";
        if self.r.is_quantized(module) {
            let (w, s, b, spec) = self.r.quantized(module, &[], v, h)?;
            return Ok(Embedding::Quantized(self.stored_matrix(
                module,
                &w,
                &s,
                &b,
                spec.bits,
                spec.group_size,
            )?));
        }
        // At 8 bits the embedding table stays dense: a lookup reads one row, so quantizing it
        // saves memory but no bandwidth, and its error feeds every layer (on the test fixtures
        // it pushes 8-bit logits past 5e-2 of f32). It is kept in its stored dtype (bf16 for
        // OLMoE) and rows are cast on lookup. At 4 bits (and below) it is quantized too, as
        // mlx-lm does, for memory.
        let name = format!("{module}.weight");
        match self.opts.quantize {
            Some(p) if p.bits <= 4 => {
                let table = self.r.tensor(&name, &[v, h])?;
                Ok(match self.quantize_matrix(module, &table, p)? {
                    Some(q) => Embedding::Quantized(q),
                    None => Embedding::Dense(table),
                })
            }
            Some(_) => Ok(Embedding::Dense(self.r.tensor_stored(&name, &[v, h])?)),
            None => Ok(Embedding::Dense(self.r.tensor(&name, &[v, h])?)),
        }
    }

    /// lm_head when it is tied to the embedding: the same table, quantized when asked.
    pub fn tied_head(&self, embedding: &Embedding) -> Result<Linear> {
        match (embedding, self.opts.quantize) {
            (Embedding::Dense(table), Some(p)) => self.quantize("lm_head", table.clone(), None, p),
            (e, _) => Ok(e.as_linear()),
        }
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_bit_keeps_value_and_output_dense_and_widens_expert_groups() {
        let p8 = AffineParams::new(8, 32).unwrap();
        let attn = "model.layers.3.self_attn";
        assert_eq!(
            Recipe::of(&format!("{attn}.q_proj"), p8),
            Recipe::Quantize(p8)
        );
        assert_eq!(
            Recipe::of(&format!("{attn}.k_proj"), p8),
            Recipe::Quantize(p8)
        );
        assert_eq!(
            Recipe::of(&format!("{attn}.v_proj"), p8),
            Recipe::DenseStored
        );
        assert_eq!(
            Recipe::of(&format!("{attn}.o_proj"), p8),
            Recipe::DenseStored
        );
        assert_eq!(Recipe::of("lm_head", p8), Recipe::Quantize(p8));
        let g64 = AffineParams::new(8, 64).unwrap();
        let experts = CheckpointReader::switch_module(0, ExpertProj::Down);
        assert_eq!(Recipe::of(&experts, p8), Recipe::Quantize(g64));
        let g128 = AffineParams::new(8, 128).unwrap();
        assert_eq!(Recipe::of(&experts, g128), Recipe::Quantize(g128));
    }

    #[test]
    fn four_bit_quantizes_every_module_as_asked() {
        let p4 = AffineParams::new(4, 64).unwrap();
        for m in [
            "model.layers.0.self_attn.v_proj",
            "model.layers.0.self_attn.o_proj",
            "lm_head",
            &CheckpointReader::switch_module(1, ExpertProj::Gate),
        ] {
            assert_eq!(Recipe::of(m, p4), Recipe::Quantize(p4));
        }
    }
}
