//! Checkpoints: `config.json` arguments, safetensors files (single or sharded, validated),
//! expert layouts translated to the canonical one, and hub/cache lookup.

pub mod args;
pub mod convert;
pub mod files;
pub mod hub;
pub mod layout;

pub use args::{OlmoeArgs, RopeScaling, StorageDtype};
pub use files::WeightFiles;
pub use layout::{CheckpointReader, ExpertLayout, ExpertProj};
