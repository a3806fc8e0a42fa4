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
        let unavailable = |what: &str, why: String| {
            crate::error::Error::invalid("device", format!("{what} is not available: {why}"))
        };
        Ok(match kind {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda => {
                if let Some(why) = cuda_missing() {
                    return Err(unavailable("cuda", why));
                }
                Device::new_cuda(0).map_err(|e| unavailable("cuda", e.to_string()))?
            }
            DeviceKind::Metal => {
                Device::new_metal(0).map_err(|e| unavailable("metal", e.to_string()))?
            }
            DeviceKind::Auto => match cuda_missing() {
                None => match Device::new_cuda(0) {
                    Ok(device) => device,
                    Err(e) => {
                        tracing::info!("device auto: cuda skipped: {e}");
                        metal_or_cpu()?
                    }
                },
                Some(why) => {
                    tracing::info!("device auto: cuda skipped: {why}");
                    metal_or_cpu()?
                }
            },
        })
    }
}

/// `auto` past CUDA: Metal when built in and present, else the CPU.
fn metal_or_cpu() -> Result<Device> {
    if candle_core::utils::metal_is_available() {
        Device::new_metal(0).map_err(|e| {
            crate::error::Error::invalid("device", format!("metal is not available: {e}"))
        })
    } else {
        Ok(Device::Cpu)
    }
}

/// Why no CUDA device can be made here, found before trying one: CUDA not compiled in, or a
/// library the CUDA build opens at run time (the driver, cuBLAS, cuBLASLt, cuRAND, NVRTC) not
/// found. `None` when they are all there.
fn cuda_missing() -> Option<String> {
    #[cfg(not(feature = "cuda"))]
    {
        Some("not compiled in (build with --features cuda)".to_string())
    }
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc;
        // SAFETY: each check opens the library with dlopen and closes it again, running no
        // code of it but its initializers, as loading it for use would.
        let found = unsafe {
            [
                (
                    "libcuda (the NVIDIA driver)",
                    cudarc::driver::sys::is_culib_present(),
                ),
                ("cuBLAS", cudarc::cublas::sys::is_culib_present()),
                ("cuBLASLt", cudarc::cublaslt::sys::is_culib_present()),
                ("cuRAND", cudarc::curand::sys::is_culib_present()),
                ("NVRTC", cudarc::nvrtc::sys::is_culib_present()),
            ]
        };
        let missing: Vec<&str> = found
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "{} not found on the library path (LD_LIBRARY_PATH, then the system's)",
                missing.join(", ")
            )
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
