//! `OlmoeDecoderLayer`.

use candle_core::Tensor;

use super::super::moe::SparseMoeBlock;
use super::super::rope::RopeAt;
use super::super::session::LayerCache;
use super::super::weights::Weights;
use super::attention::Attention;
use super::norm::RmsNorm;
use crate::checkpoint::OlmoeArgs;
use crate::error::Result;

/// `OlmoeDecoderLayer`: pre-norm attention, then pre-norm sparse MoE, both residual.
#[derive(Debug, Clone)]
pub(super) struct DecoderLayer {
    pub(super) self_attn: Attention,
    pub(super) mlp: SparseMoeBlock,
    pub(super) input_layernorm: RmsNorm,
    pub(super) post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    pub(super) fn new(w: &Weights, args: &OlmoeArgs, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let eps = args.rms_norm_eps;
        let norm = |name: &str| RmsNorm::new(w.r, &format!("{p}.{name}"), args.hidden_size, eps);
        Ok(DecoderLayer {
            self_attn: Attention::new(w, args, layer)?,
            mlp: SparseMoeBlock::new(w, args, layer)?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
        })
    }

    /// The layer on the residual stream `x` [B, T, H], given `normed`, its input_layernorm:
    /// returns the stream after attention and the MoE block's output. Their sum is the
    /// layer's output, which the caller forms together with the norm that follows it.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        normed: &Tensor,
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: &mut Option<LayerCache>,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.self_attn.forward(normed, rope, mask, cache)?;
        let (h, out) = self.post_attention_layernorm.forward_residual(x, &attn)?;
        Ok((h, self.mlp.forward(&out)?))
    }
}
