//! athena: the OLMoE model layer of a memory-managing agent.
//!
//! - [`checkpoint`] reads `config.json` and safetensors checkpoints (local or from the hub),
//!   validates them and translates every expert layout into one canonical stacked layout.
//! - [`backend::candle`] holds the OLMoE forward pass on candle, with weights immutable and
//!   sequence state in a [`backend::candle::Session`].
//! - [`generate`] holds the tokenizer, chat template, sampler and the one generation loop.
//! - [`models::olmoe::OlmoeModel`] is what an agent uses: `load()` picks MLX when enabled and
//!   available, else candle with the trainable [`models::action_head::MemoryActionHead`], and
//!   reports why.
//!
//! ```
//! use athena::backend::BackendKind;
//! use athena::config::OlmoeConfig;
//! use athena::models::olmoe::{Memory, OlmoeModel};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/base");
//! let mut config = OlmoeConfig::for_model(dir);
//! config.use_mlx = false; // candle, the path with the action head (MLX is tried first if built in)
//! let mut model = OlmoeModel::new(config);
//! let report = model.load()?;
//! assert_eq!(report.backend, BackendKind::Candle);
//! assert!(report.action_head);
//! let memories = [Memory { id: "m1".into(), text: "The user lives in Paris.".into() }];
//! let action = model.act("The user moved to Rome.", &memories)?;
//! assert!(["ADD", "UPDATE", "DELETE", "NOOP"].contains(&action.op.as_str()));
//! let vectors = model.encode(&["a fact", "another"])?;
//! assert_eq!(vectors.len(), 2);
//! # Ok::<(), athena::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generate;
pub mod io;
pub mod kernels;
pub mod lora;
pub mod memory;
pub mod models;
pub mod options;
pub mod quant;
pub mod train;

pub use error::{Error, Result};
