//! The candle backend as the loader sees it.

use candle_core::Device;

use super::load_olmoe;
use crate::error::Result;

/// The candle backend's provider: always compiled in; CUDA and Metal devices when built with
/// their features.
#[derive(Debug, Default, Clone, Copy)]
pub struct CandleProvider;

impl CandleProvider {
    fn device(kind: crate::config::DeviceKind) -> Result<Device> {
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
        use crate::config::Quantization;
        if config.quantization != Quantization::None {
            return Err(crate::error::Error::invalid(
                "quantization",
                format!(
                    "{:?} is not available on the candle path in this version",
                    config.quantization
                ),
            ));
        }
        if let Some(lora) = &config.lora_path {
            return Err(crate::error::Error::invalid(
                "lora_path",
                format!(
                    "{}: LoRA adapters are not available in this version",
                    lora.display()
                ),
            ));
        }
        let dir = crate::checkpoint::hub::resolve(model)?;
        let device = Self::device(config.device)?;
        let model = load_olmoe(&dir, &device, config.dtype.into(), |_, _| {})?;
        Ok(Box::new(model))
    }
}
