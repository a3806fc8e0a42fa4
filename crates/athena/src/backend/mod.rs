//! Backends that run OLMoE, and the contract they meet over plain data: token ids in;
//! logits, hidden states or tokens out. No tensor type crosses this boundary, so the candle
//! engine and the MLX engine are interchangeable behind it.
//!
//! [`candle`] is the trainable path.

pub mod candle;
mod contract;
pub mod mlx;
pub mod registry;
mod spec;

pub use crate::options::{BackendKind, Pooling};
pub(crate) use contract::{check_step, take_slot};
pub use contract::{Backend, DecodeSession, DeviceMemory, Slot, SlotBatch};
pub use registry::{Availability, BackendProvider};
pub use spec::LoadSpec;
