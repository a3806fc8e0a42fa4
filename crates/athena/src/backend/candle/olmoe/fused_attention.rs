//! Attention's fused path on a GPU ([`super::super::fused_cuda`]): q, k and v as one
//! projection, joined once at load, and one prologue launch (norms, clip, RoPE, the KV cache
//! write, q scaled) in place of a dozen small ops.

#[cfg(feature = "cuda")]
use candle_core::Tensor;

#[cfg(feature = "cuda")]
use super::super::rope::RopeAt;
#[cfg(feature = "cuda")]
use super::super::session::LayerCache;
#[cfg(feature = "cuda")]
use super::attention::Attention;
#[cfg(feature = "cuda")]
use super::mask::step_mask;
#[cfg(feature = "cuda")]
use crate::error::Result;

#[cfg(feature = "cuda")]
impl Attention {
    /// The q, k and v projections of token rows `x` [R, H].
    pub(super) fn project(&self, x: &Tensor) -> Result<super::super::fused_cuda::Projections> {
        use super::super::fused_cuda::Projections;
        Ok(match &self.qkv_proj {
            Some(qkv) => Projections::Joint(qkv.forward(x)?),
            None => Projections::Apart(
                self.q_proj.forward(x)?,
                self.k_proj.forward(x)?,
                self.v_proj.forward(x)?,
            ),
        })
    }

    /// From the projections of `b` sequences × `t` new rows and their cos/sin rows: writes k
    /// and v into `cache` and returns q [B, heads, T, D] (scaled by 1/√D) and the keys and
    /// values of every column so far.
    pub(super) fn prologue(
        &self,
        proj: &super::super::fused_cuda::Projections,
        (cos, sin): (&Tensor, &Tensor),
        (b, t): (usize, usize),
        cache: &mut Option<LayerCache>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        use super::super::fused_cuda::{Prologue, StepDims};
        let past = cache.as_ref().map_or(0, LayerCache::len);
        let shape = (b, self.num_kv_heads, t, self.head_dim);
        let c = LayerCache::reserve(cache, shape, cos.dtype(), cos.device())?;
        let q = Prologue {
            proj,
            q_norm: &self.q_norm.weight,
            k_norm: &self.k_norm.weight,
            eps: self.q_norm.eps,
            clip: self.clip_qkv,
            cos,
            sin,
            dims: StepDims {
                batch: b,
                tokens: t,
                heads: self.num_heads,
                kv_heads: self.num_kv_heads,
                head_dim: self.head_dim,
            },
            q_scale: self.softmax_scale(),
            past,
        }
        .run(c.buffer())?;
        let (k, v) = c.filled(t)?;
        Ok((q, k, v))
    }

    /// [`Attention::forward_each`] on the fused path: one prologue launch per sequence.
    pub(super) fn forward_each_fused(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        lens: &[usize],
        caches: &mut [&mut Option<LayerCache>],
    ) -> Result<Tensor> {
        let (_, rows, h) = x.dims3()?;
        let proj = self.project(&x.reshape((rows, h))?)?;
        let (cos, sin) = rope.rows()?;
        let mut outs = Vec::with_capacity(caches.len());
        let mut offset = 0;
        for (cache, &t) in caches.iter_mut().zip(lens) {
            let mask = step_mask(cache, t, x.dtype(), x.device())?;
            let (cos, sin) = (cos.narrow(0, offset, t)?, sin.narrow(0, offset, t)?);
            let part = proj.rows(offset, t)?;
            let (q, k, v) = self.prologue(&part, (&cos, &sin), (1, t), cache)?;
            outs.push(self.attend(&q, &k, &v, mask.as_ref(), true)?);
            offset += t;
        }
        self.output(&Tensor::cat(&outs, 2)?)
    }
}
