//! The MLX backend: OLMoE on Apple's MLX through libmlx, the kernels mlx-lm uses, called
//! through athena's own C ABI shim (`csrc/athena_mlx.{h,cpp}`, built by `build.rs`).
//!
//! Built only with `--features mlx`; without it the provider still exists, so backend selection
//! can name it and say why it was skipped ([`NOT_COMPILED`]). MLX is available when compiled in
//! and able to create its default device (the GPU where MLX has one, else the CPU).

#[cfg(feature = "mlx")]
mod adapter;
#[cfg(feature = "mlx")]
mod batch;
#[cfg(feature = "mlx")]
mod ffi;
#[cfg(feature = "mlx")]
mod load;
#[cfg(feature = "mlx")]
mod lora;
#[cfg(feature = "mlx")]
mod model;
#[cfg(feature = "mlx")]
mod quantize;

use super::contract::Backend;
use super::registry::{Availability, BackendProvider};
use super::spec::LoadSpec;
#[cfg(not(feature = "mlx"))]
use crate::error::Error;
use crate::error::Result;
use crate::options::BackendKind;

/// What the MLX backend reports when it is compiled out.
pub const NOT_COMPILED: &str = "not compiled in (build with --features mlx)";

/// The MLX backend's provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct MlxProvider;

#[cfg(not(feature = "mlx"))]
impl BackendProvider for MlxProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }

    fn availability(&self) -> Availability {
        Availability::NotCompiled(NOT_COMPILED.to_string())
    }

    fn load_reporting(
        &self,
        spec: &LoadSpec,
        _on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Backend>> {
        Err(Error::Resolve {
            model: spec.model.clone(),
            msg: format!("MLX backend {NOT_COMPILED}"),
        })
    }
}

#[cfg(feature = "mlx")]
mod enabled;
#[cfg(feature = "mlx")]
pub use enabled::{load_mlx, load_mlx_as, MlxDevice, MlxOlmoe};

#[cfg(feature = "mlx")]
impl BackendProvider for MlxProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }

    fn availability(&self) -> Availability {
        match enabled::default_device() {
            Ok(_) => Availability::Available,
            Err(why) => Availability::NoDevice(format!(
                "no device: MLX could not create its default device: {why}"
            )),
        }
    }

    fn load_reporting(
        &self,
        spec: &LoadSpec,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Backend>> {
        Ok(Box::new(enabled::load_for(spec, on_layer)?))
    }
}
