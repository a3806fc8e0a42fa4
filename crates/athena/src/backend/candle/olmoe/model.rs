//! `OlmoeForCausalLM`: embeddings, decoder layers, final norm, lm_head.

use candle_core::{DType, Device, Tensor};

use super::super::linear::{Embedding, Linear};
use super::super::rope::Rope;
use super::super::session::Session;
use super::super::weights::Weights;
use super::layer::DecoderLayer;
use super::norm::RmsNorm;
use crate::checkpoint::OlmoeArgs;
use crate::error::{Error, Result};

/// `OlmoeForCausalLM`: embeddings, decoder layers, final norm, lm_head (tied or not).
#[derive(Debug, Clone)]
pub struct Olmoe {
    pub(super) embed_tokens: Embedding,
    pub(super) layers: Vec<DecoderLayer>,
    pub(super) norm: RmsNorm,
    pub(super) lm_head: Linear,
    pub(super) rope: Rope,
    pub(super) args: OlmoeArgs,
    pub(super) device: Device,
    pub(super) dtype: DType,
}

impl Olmoe {
    /// Builds the model from a checkpoint; `on_layer(done, total)` reports progress.
    pub(crate) fn new(
        w: &Weights,
        args: &OlmoeArgs,
        mut on_layer: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let (v, h) = (args.vocab_size, args.hidden_size);
        let embed_tokens = w.embedding()?;
        // The vocabulary-sized matrices first: converting them needs the most scratch memory,
        // which is then free again before the layers accumulate.
        let lm_head = if args.tie_word_embeddings {
            // Some exporters still write the tied copy; it must then have the embedding's shape.
            let _ = w.r.optional("lm_head.weight", &[v, h])?;
            w.tied_head(&embed_tokens)?
        } else {
            w.linear("lm_head", v, h, false, None, true)?
        };
        let mut layers = Vec::with_capacity(args.num_hidden_layers);
        for l in 0..args.num_hidden_layers {
            layers.push(DecoderLayer::new(w, args, l)?);
            on_layer(l + 1, args.num_hidden_layers);
        }
        let norm = RmsNorm::new(w.r, "model.norm", h, args.rms_norm_eps)?;
        let device = w.r.device().clone();
        let dtype = w.dtype();
        // The run-time compiled kernels, compiled and loaded now rather than in the first
        // forward pass.
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = &device {
            super::super::fused_cuda::prepare(dev)?;
            super::super::moe_cuda::prepare(dev)?;
        }
        Ok(Olmoe {
            rope: Rope::new(args, dtype, &device)?,
            embed_tokens,
            layers,
            norm,
            lm_head,
            args: args.clone(),
            device,
            dtype,
        })
    }

    /// The model's arguments.
    pub fn args(&self) -> &OlmoeArgs {
        &self.args
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Weight bytes one token's decode step reads, as the weights are held: every layer's
    /// attention and router, its routed experts (at their average size) and lm_head; the
    /// embedding row and the norms are left out.
    pub fn token_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.self_attn.weight_bytes() + l.mlp.token_weight_bytes())
            .sum::<usize>()
            + self.lm_head.weight_bytes()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh session (empty KV cache) for this model.
    pub fn session(&self) -> Session {
        Session::new(self.layers.len(), self.args.max_position_embeddings)
    }

    /// Runs a step: appends `tokens` (one list per sequence) to `session` and returns the
    /// final-norm hidden states [B, T, H] of the step's columns (left-padded on the first step).
    pub fn forward_hidden(&self, tokens: &[Vec<u32>], session: &mut Session) -> Result<Tensor> {
        let vocab = self.args.vocab_size;
        if let Some(bad) = tokens.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(Error::invalid(
                "token id",
                format!("{bad} is out of range for vocab_size {vocab}"),
            ));
        }
        let pad_id = self
            .args
            .pad_token_id
            .filter(|&p| (p as usize) < vocab)
            .unwrap_or(0);
        let (ids, width) = session.plan(tokens, pad_id)?;
        let b = tokens.len();
        let positions = Tensor::from_vec(session.positions(width), (b, width), &self.device)?;
        let mask = match session.mask(width) {
            None => None,
            Some((m, keys)) => {
                Some(Tensor::from_vec(m, (b, 1, width, keys), &self.device)?.to_dtype(self.dtype)?)
            }
        };
        let x = self
            .embed_tokens
            .forward(&ids, self.dtype, &self.device)?
            .reshape((b, width, self.args.hidden_size))?;
        // cos/sin gathered once for the step, not per layer and tensor.
        let rope = self.rope.at(&positions)?;
        let caches = &mut session.layers;
        let normed = self.run_layers(x, |l, layer, x, normed| {
            let cache = caches.get_mut(l).ok_or_else(other_model)?;
            layer.forward(x, normed, &rope, mask.as_ref(), cache)
        })?;
        session.advance(width);
        Ok(normed)
    }

    /// Runs `layer(index, layer, x, normed)` for every layer, from the embeddings `x`: each
    /// returns its stream after attention and its MoE output, whose sum (the next layer's
    /// input) is formed together with the norm that follows it (the next layer's
    /// input_layernorm, after the last the final norm; one fused launch on a GPU). Returns
    /// the final norm of the last layer's output.
    pub(super) fn run_layers(
        &self,
        x: Tensor,
        mut layer: impl FnMut(usize, &DecoderLayer, &Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let mut normed = match self.layers.first() {
            Some(first) => first.input_layernorm.forward(&x)?,
            None => self.norm.forward(&x)?,
        };
        let mut x = x;
        for (l, this) in self.layers.iter().enumerate() {
            let (h, out) = layer(l, this, &x, &normed)?;
            let next = self
                .layers
                .get(l + 1)
                .map_or(&self.norm, |n| &n.input_layernorm);
            (x, normed) = next.forward_residual(&h, &out)?;
        }
        Ok(normed)
    }

    /// Applies lm_head to hidden states [.., H] → logits [.., V] in the compute dtype.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Runs a step and returns the logits [B, T, V] of every column of the step.
    pub fn forward(&self, tokens: &[Vec<u32>], session: &mut Session) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, session)?;
        self.lm_head(&hidden)
    }

    /// Runs a step and returns only each sequence's last logits [B, V] (what decoding needs).
    pub fn forward_last(&self, tokens: &[Vec<u32>], session: &mut Session) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, session)?;
        let t = hidden.dim(1)?;
        self.lm_head(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?)
    }
}

/// The error of a session whose layers are not this model's.
pub(super) fn other_model() -> Error {
    Error::invalid("session", "a session of another model")
}
