//! The MLX backend (Apple's MLX through libmlx). This build does not include it: the type
//! still exists, so backend selection can name it and say why it was skipped.

use super::registry::{Availability, BackendProvider};
use super::{Backend, BackendKind};
use crate::config::OlmoeConfig;
use crate::error::{Error, Result};

/// What the MLX backend reports when it is compiled out.
pub const NOT_COMPILED: &str = "not compiled in (build with --features mlx)";

/// The MLX backend's provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct MlxProvider;

impl BackendProvider for MlxProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }

    fn availability(&self) -> Availability {
        Availability::NotCompiled(NOT_COMPILED.to_string())
    }

    fn load(&self, _config: &OlmoeConfig, model: &str) -> Result<Box<dyn Backend>> {
        Err(Error::Resolve {
            model: model.to_string(),
            msg: format!("MLX backend {NOT_COMPILED}"),
        })
    }
}
