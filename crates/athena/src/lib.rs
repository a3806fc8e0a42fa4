//! athena: the OLMoE model layer of a memory-managing agent.
//!
//! - [`checkpoint`] reads `config.json` and safetensors checkpoints (local or from the hub),
//!   validates them and translates every expert layout into one canonical stacked layout.
//! - [`backend::candle`] holds the OLMoE forward pass on candle, with weights immutable and
//!   sequence state in a [`backend::candle::Session`].
//! - [`generate`] holds the tokenizer, chat template, sampler and the one generation loop.
#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
pub mod error;
pub mod generate;
pub mod io;
pub mod models;

pub use error::{Error, Result};
