//! The choices a caller makes about how a model runs: which engine, which device, which
//! compute dtype, which quantization, how `encode` pools. Plain values shared by the
//! configuration, the backends and the errors; this module imports nothing of athena.

use serde::{Deserialize, Serialize};

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Apple's MLX through libmlx.
    Mlx,
    /// candle (CPU, CUDA, Metal): the trainable path.
    Candle,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Mlx => "mlx",
            BackendKind::Candle => "candle",
        })
    }
}

/// How `encode` pools a sequence's final-norm hidden states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over the sequence's real tokens.
    #[default]
    Mean,
    /// The last real token.
    Last,
}

/// Weight quantization applied at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Quantization {
    /// Weights as stored (or converted to `dtype`).
    #[default]
    #[serde(rename = "none")]
    None,
    /// Group-wise 8-bit.
    #[serde(rename = "8bit")]
    Int8,
    /// Group-wise 4-bit.
    #[serde(rename = "4bit")]
    Int4,
}

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// CUDA if compiled in and present, else Metal if compiled in and present, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
    /// The Metal GPU.
    Metal,
}

/// Compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// 32-bit float: exact parity with transformers.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl From<ComputeDtype> for candle_core::DType {
    fn from(d: ComputeDtype) -> Self {
        match d {
            ComputeDtype::F32 => candle_core::DType::F32,
            ComputeDtype::Bf16 => candle_core::DType::BF16,
            ComputeDtype::F16 => candle_core::DType::F16,
        }
    }
}
