//! Rotary position embeddings, NeoX style (rotate-half), as transformers computes them:
//! inverse frequencies and angles in f32, cos/sin cast to the compute dtype.

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{OlmoeArgs, RopeScaling};
use crate::error::Result;

/// Precomputed cos/sin tables for every position up to the model's maximum.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Builds the tables for `args` in `dtype`.
    pub fn new(args: &OlmoeArgs, dtype: DType, device: &Device) -> Result<Self> {
        let dim = args.head_dim;
        let scale = match args.rope_scaling {
            RopeScaling::Default => 1.0f32,
            RopeScaling::Linear { factor } => factor as f32,
        };
        let inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / (args.rope_theta as f32).powf((2 * i) as f32 / dim as f32) / scale)
            .collect();
        let n = args.max_position_embeddings;
        let mut cos = Vec::with_capacity(n * dim / 2);
        let mut sin = Vec::with_capacity(n * dim / 2);
        for p in 0..n {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (n, dim / 2), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (n, dim / 2), device)?.to_dtype(dtype)?;
        Ok(Rope { cos, sin })
    }

    /// The tables at `positions` [B, T] (u32), gathered once for every layer of a step.
    pub fn at(&self, positions: &Tensor) -> Result<RopeAt> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.cos.dim(1)?;
        Ok(RopeAt {
            cos: self.cos.index_select(&flat, 0)?.reshape((b, t, half))?,
            sin: self.sin.index_select(&flat, 0)?.reshape((b, t, half))?,
        })
    }
}

/// cos/sin at one step's positions, [B, T, D/2] each.
#[derive(Debug, Clone)]
pub struct RopeAt {
    cos: Tensor,
    sin: Tensor,
}

impl RopeAt {
    /// Rotates `x` [B, heads, T, D].
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::rotary_emb::rope(
            &x.contiguous()?,
            &self.cos,
            &self.sin,
        )?)
    }

    /// cos and sin as rows [B·T, D/2], one per token row of the step (for fused kernels).
    #[cfg(feature = "cuda")]
    pub(crate) fn rows(&self) -> Result<(Tensor, Tensor)> {
        let (b, t, half) = self.cos.dims3()?;
        Ok((
            self.cos.reshape((b * t, half))?,
            self.sin.reshape((b * t, half))?,
        ))
    }
}
