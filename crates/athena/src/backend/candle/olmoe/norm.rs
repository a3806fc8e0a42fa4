//! `OlmoeRMSNorm`.

use candle_core::{DType, Tensor, D};

use crate::checkpoint::CheckpointReader;
use crate::error::Result;

/// `OlmoeRMSNorm`: normalise in f32, cast back, then scale by the weight.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    pub(super) weight: Tensor,
    pub(super) eps: f64,
}

impl RmsNorm {
    pub(super) fn new(r: &CheckpointReader, name: &str, width: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: r.tensor(&format!("{name}.weight"), &[width])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // On a GPU the fused kernel also serves half dtypes: it rounds once, after the
        // scaling, where the reference rounds before it too (at most one unit in the last
        // place apart), and it saves the eight launches of the unfused form.
        if x.dtype() == DType::F32 || x.device().is_cuda() {
            // The fused kernel computes exactly x * rsqrt(mean(x²) + eps) * w in f32.
            return Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let variance = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }

    /// The residual stream `x + y` and its norm; on a GPU one fused launch
    /// ([`super::super::fused_cuda::add_rms_norm`], the same rounding as [`Self::forward`] there).
    pub(super) fn forward_residual(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        #[cfg(feature = "cuda")]
        if super::super::fused_cuda::runs(x) {
            return super::super::fused_cuda::add_rms_norm(x, y, &self.weight, self.eps);
        }
        let sum = (x + y)?;
        let normed = self.forward(&sum)?;
        Ok((sum, normed))
    }
}
