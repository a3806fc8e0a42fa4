//! The one linear abstraction: every projection of the model goes through [`Linear`], so the
//! model is written once whatever the weights' representation.

use candle_core::{Module, Tensor};

use crate::error::Result;

/// A linear layer `y = x·Wᵀ + b` with `W` stored [out, in] as in the checkpoint.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Plain weights in the compute dtype.
    Dense {
        /// [out, in].
        weight: Tensor,
        /// [out].
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// A dense layer.
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense { weight, bias }
    }

    /// Applies the layer to `x` [.., in] → [.., out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense { weight, bias } => {
                let l = candle_nn::Linear::new(weight.clone(), bias.clone());
                Ok(l.forward(x)?)
            }
        }
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.dims()[0],
        }
    }
}
