//! The candle backend as the loader sees it.

use candle_core::Device;

use super::load::{load_olmoe_with, LoadOptions};
use crate::backend::{Availability, Backend, BackendProvider, LoadSpec};
use crate::error::Result;
use crate::options::{BackendKind, DeviceKind};

/// The candle backend's provider: always compiled in; CUDA and Metal devices when built with
/// their features.
#[derive(Debug, Default, Clone, Copy)]
pub struct CandleProvider;

impl CandleProvider {
    /// The candle device for `kind`: `auto` takes CUDA, then Metal, when built in and present.
    pub fn device(kind: DeviceKind) -> Result<Device> {
        let unavailable = |what: &str, e: candle_core::Error| {
            crate::error::Error::invalid("device", format!("{what} is not available: {e}"))
        };
        Ok(match kind {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda => Device::new_cuda(0).map_err(|e| unavailable("cuda", e))?,
            DeviceKind::Metal => Device::new_metal(0).map_err(|e| unavailable("metal", e))?,
            DeviceKind::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Device::new_cuda(0).map_err(|e| unavailable("cuda", e))?
                } else if candle_core::utils::metal_is_available() {
                    Device::new_metal(0).map_err(|e| unavailable("metal", e))?
                } else {
                    Device::Cpu
                }
            }
        })
    }
}

impl BackendProvider for CandleProvider {
    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    fn availability(&self) -> Availability {
        Availability::Available
    }

    fn load(&self, spec: &LoadSpec) -> Result<Box<dyn Backend>> {
        self.load_reporting(spec, &mut |_, _| {})
    }

    fn load_reporting(
        &self,
        spec: &LoadSpec,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Backend>> {
        let dir = crate::checkpoint::hub::resolve(&spec.model)?;
        let device = Self::device(spec.device)?;
        let opts = LoadOptions {
            quantization: spec.quantization,
            lora_path: spec.lora_path.clone(),
            merge_lora: spec.merge_lora,
            int8_activations: spec.int8_activations,
        };
        let model = load_olmoe_with(&dir, &device, spec.dtype.into(), &opts, on_layer)?;
        Ok(Box::new(model))
    }
}
