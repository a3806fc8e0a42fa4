//! `OlmoeAttention`: q/k/v projections, q and k norms, clip, RoPE, the KV cache, scaled dot
//! product attention with grouped-query heads, o_proj.

use candle_core::{DType, Tensor};

use super::super::linear::Linear;
use super::super::rope::RopeAt;
use super::super::session::LayerCache;
use super::super::weights::Weights;
use super::mask::repeat_kv;
use super::norm::RmsNorm;
use super::qkv_join::joint_qkv;
use crate::checkpoint::OlmoeArgs;
use crate::error::{Error, Result};
use crate::lora::{AttnProj, LoraTarget};

/// `OlmoeAttention`: q/k norms over the full projected width, optional clip, NeoX RoPE, GQA.
#[derive(Debug, Clone)]
pub(super) struct Attention {
    pub(super) q_proj: Linear,
    pub(super) k_proj: Linear,
    pub(super) v_proj: Linear,
    /// q, k and v as one [q + 2·kv, H] projection (q_proj, k_proj and v_proj are then views
    /// of it): on a GPU with the fused kernels, when all three are dense without bias.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) qkv_proj: Option<Linear>,
    pub(super) o_proj: Linear,
    pub(super) q_norm: RmsNorm,
    pub(super) k_norm: RmsNorm,
    pub(super) num_heads: usize,
    pub(super) num_kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) clip_qkv: Option<f64>,
}

impl Attention {
    pub(super) fn new(w: &Weights, args: &OlmoeArgs, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}.self_attn");
        let (h, hd) = (args.hidden_size, args.head_dim);
        let (q_width, kv_width) = (args.num_attention_heads * hd, args.num_key_value_heads * hd);
        let bias = args.attention_bias;
        let proj = |name: &str, out: usize, inp: usize, which: AttnProj| {
            let target = LoraTarget::Attn { layer, proj: which };
            w.linear(&format!("{p}.{name}"), out, inp, bias, Some(target), true)
        };
        let (q_proj, k_proj, v_proj) = (
            proj("q_proj", q_width, h, AttnProj::Q)?,
            proj("k_proj", kv_width, h, AttnProj::K)?,
            proj("v_proj", kv_width, h, AttnProj::V)?,
        );
        let (qkv_proj, [q_proj, k_proj, v_proj]) = match joint_qkv(&q_proj, &k_proj, &v_proj)? {
            Some((joint, views)) => (Some(joint), views),
            None => (None, [q_proj, k_proj, v_proj]),
        };
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            qkv_proj,
            o_proj: proj("o_proj", h, q_width, AttnProj::O)?,
            q_norm: RmsNorm::new(w.r, &format!("{p}.q_norm"), q_width, args.rms_norm_eps)?,
            k_norm: RmsNorm::new(w.r, &format!("{p}.k_norm"), kv_width, args.rms_norm_eps)?,
            num_heads: args.num_attention_heads,
            num_kv_heads: args.num_key_value_heads,
            head_dim: hd,
            clip_qkv: args.clip_qkv,
        })
    }

    /// Bytes of the four projections' weights.
    pub(super) fn weight_bytes(&self) -> usize {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
            .iter()
            .map(|l| l.weight_bytes())
            .sum()
    }

    /// Projects `x` [B, T, H] to rotated q [B, heads, T, D] and k, v [B, kv_heads, T, D].
    pub(super) fn qkv(&self, x: &Tensor, rope: &RopeAt) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let [q, k, v]: [Tensor; 3] =
            Linear::forward_each(&[&self.q_proj, &self.k_proj, &self.v_proj], x)?
                .try_into()
                .map_err(|_| Error::internal("qkv", "three projections expected"))?;
        let mut q = self.q_norm.forward(&q)?;
        let mut k = self.k_norm.forward(&k)?;
        let mut v = v;
        if let Some(c) = self.clip_qkv {
            q = q.clamp(-c, c)?;
            k = k.clamp(-c, c)?;
            v = v.clamp(-c, c)?;
        }
        let q = q
            .reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?;
        let k = k
            .reshape((b, t, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?;
        let v = v
            .reshape((b, t, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok((rope.apply(&q)?, rope.apply(&k)?, v))
    }

    /// Attends q [B, heads, T, D] over keys and values [B, kv_heads, L, D]; returns
    /// [B, heads, T, D]. The scores are scaled by 1/√D unless `scaled_q` (q comes scaled).
    pub(super) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scaled_q: bool,
    ) -> Result<Tensor> {
        if mask.is_none() && !scaled_q {
            if let Some(out) = self.decode_attention(q, k, v)? {
                return Ok(out);
            }
        }
        let k = repeat_kv(k, self.num_heads / self.num_kv_heads)?;
        let v = repeat_kv(v, self.num_heads / self.num_kv_heads)?;
        let mut scores = q.matmul(&k.t()?)?;
        if !scaled_q {
            scores = (scores * self.softmax_scale())?;
        }
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let dtype = scores.dtype();
        // The reference's f32 softmax rounded to the compute dtype; candle's CUDA kernel
        // accumulates half dtypes in f32 and rounds once, the same thing in one launch.
        let probs = if scores.device().is_cuda() {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?
        };
        Ok(probs.matmul(&v)?)
    }

    /// 1/√D, the scale of the attention scores.
    pub(super) fn softmax_scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// [B, heads, T, D] → o_proj over [B, T, heads·D].
    pub(super) fn output(&self, out: &Tensor) -> Result<Tensor> {
        let (b, _, t, _) = out.dims4()?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: &mut Option<LayerCache>,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if super::super::fused_cuda::runs(x) {
            let (b, t, h) = x.dims3()?;
            let proj = self.project(&x.reshape((b * t, h))?)?;
            let (cos, sin) = rope.rows()?;
            let (q, k, v) = self.prologue(&proj, (&cos, &sin), (b, t), cache)?;
            return self.output(&self.attend(&q, &k, &v, mask, true)?);
        }
        let (q, k, v) = self.qkv(x, rope)?;
        let (k, v) = LayerCache::append(cache, &k, &v)?;
        let out = self.attend(&q, &k, &v, mask, false)?;
        self.output(&out)
    }
}
