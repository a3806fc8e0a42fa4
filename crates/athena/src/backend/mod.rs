//! Backends that run OLMoE, and the contract they meet over plain data: token ids in;
//! logits, hidden states or tokens out. No tensor type crosses this boundary, so the candle
//! engine and the MLX engine are interchangeable behind it.
//!
//! [`candle`] is the trainable path.

pub mod candle;
pub mod mlx;
pub mod registry;

pub use registry::{Availability, BackendProvider};

use serde::{Deserialize, Serialize};

use crate::checkpoint::OlmoeArgs;
use crate::error::Result;

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

/// A loaded model, whatever engine runs it.
pub trait Backend: Send + Sync {
    /// The engine.
    fn kind(&self) -> BackendKind;
    /// The model's arguments.
    fn args(&self) -> &OlmoeArgs;
    /// A fresh decoding session with an empty KV cache.
    fn session(&self) -> Box<dyn DecodeSession + '_>;
    /// Float32 logits [n][vocab] of every position of one sequence.
    fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>>;
    /// Final-norm hidden states pooled per sequence: [batch][hidden].
    fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>>;
}

/// The state of a batch of sequences being decoded.
pub trait DecodeSession {
    /// Appends `tokens` (one list per sequence; lengths may differ on the first step only)
    /// and returns each sequence's last float32 logits [batch][vocab].
    fn step(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}
