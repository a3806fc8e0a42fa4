//! The candle backend as the loader sees it.

use candle_core::Device;

use crate::error::Result;

/// The candle backend's provider: always compiled in; CUDA and Metal devices when built with
/// their features.
#[derive(Debug, Default, Clone, Copy)]
pub struct CandleProvider;

impl CandleProvider {
    /// The candle device for `kind`: `auto` takes CUDA, then Metal, when built in and present.
    pub fn device(kind: crate::config::DeviceKind) -> Result<Device> {
        use crate::config::DeviceKind;
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

impl crate::backend::registry::BackendProvider for CandleProvider {
    fn kind(&self) -> crate::backend::BackendKind {
        crate::backend::BackendKind::Candle
    }

    fn availability(&self) -> crate::backend::registry::Availability {
        crate::backend::registry::Availability::Available
    }

    fn load(
        &self,
        config: &crate::config::OlmoeConfig,
        model: &str,
    ) -> Result<Box<dyn crate::backend::Backend>> {
        let dir = crate::checkpoint::hub::resolve(model)?;
        let device = Self::device(config.device)?;
        let opts = super::LoadOptions {
            quantization: config.quantization,
            lora_path: config.lora_path.clone(),
            merge_lora: config.merge_lora,
            int8_activations: config.int8_activations,
        };
        let model = super::load_olmoe_with(&dir, &device, config.dtype.into(), &opts, |_, _| {})?;
        Ok(Box::new(model))
    }
}
