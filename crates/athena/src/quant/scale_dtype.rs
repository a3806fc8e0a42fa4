//! The dtype a [`QMatrix`] holds its scales and biases in: f32, or f16 and bf16 at half the
//! memory.

use candle_core::DType;

use super::qmatrix::QMatrix;
use crate::error::{Error, Result};

impl QMatrix {
    /// The same matrix with its scales and biases held in f16, halving their memory (a
    /// quarter of a 4-bit matrix's bytes at group size 64). Refused when a value does not fit
    /// f16's range.
    pub fn with_half_scales(self, name: &str) -> Result<Self> {
        let (scales, biases) = (self.scales.to_f16(), self.biases.to_f16());
        if !scales.all_finite() || !biases.all_finite() {
            return Err(Error::tensor(name, "scales or biases exceed the f16 range"));
        }
        Ok(QMatrix {
            scales,
            biases,
            scales_dtype: DType::F16,
            ..self
        })
    }

    /// The same matrix with its scales and biases rounded to bf16, as `mx.quantize` returns
    /// them for bf16 weights (codes fitted to the f32 values, scales and biases rounded after):
    /// half their memory. A matrix with a value past bf16's range stays as it is.
    pub fn with_bf16_scales(self) -> Self {
        let (scales, biases) = (self.scales.to_bf16(), self.biases.to_bf16());
        if !scales.all_finite() || !biases.all_finite() {
            return self;
        }
        QMatrix {
            scales,
            biases,
            scales_dtype: DType::BF16,
            ..self
        }
    }
}
