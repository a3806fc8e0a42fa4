//! The MLX backend proper: device selection, loading, and the backend contract over the model
//! of `model.rs`. MLX calls are serialised by one lock per model: libmlx evaluates graphs on a
//! shared stream, and athena never has two threads inside it at once.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::batch::{rows, serialised, MlxSlots};
use super::ffi;
use super::model::{Cache, Olmoe};
use super::quantize;
use crate::backend::{Backend, BackendKind, DecodeSession, LoadSpec, Pooling, SlotBatch};
use crate::checkpoint::{hub, OlmoeArgs};
use crate::error::{Error, Result};
use crate::lora::LoraAdapter;
use crate::options::{ComputeDtype, DeviceKind, Quantization};

/// Where MLX computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlxDevice {
    /// The CPU (`mlx-cpu` on Linux). Its `gather_mm` computes float32 only, so bf16 and f16
    /// expert products are widened to float32 and rounded back (see `csrc/athena_mlx.h`).
    Cpu,
    /// Metal on Apple silicon, or CUDA in MLX's CUDA builds.
    Gpu,
}

/// MLX's default device, made once per process: the GPU when MLX has one, else the CPU.
pub(super) fn default_device() -> std::result::Result<MlxDevice, String> {
    static DEVICE: OnceLock<std::result::Result<MlxDevice, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let device = if ffi::gpu_available() {
                MlxDevice::Gpu
            } else {
                MlxDevice::Cpu
            };
            use_device(device)
                .map(|()| {
                    tracing::debug!(?device, version = %ffi::version(), "MLX device");
                    device
                })
                .map_err(|e| e.to_string())
        })
        .clone()
}

fn use_device(device: MlxDevice) -> Result<()> {
    ffi::set_device(device == MlxDevice::Gpu)
}

/// OLMoE on MLX.
pub struct MlxOlmoe {
    model: Olmoe,
    device: MlxDevice,
    lock: Mutex<()>,
}

/// Loads the checkpoint in `dir` on MLX's default device, computing in float32. mlx-lm
/// checkpoints (experts stacked as `switch_mlp`, affine-quantized modules with per-module
/// overrides) and HF checkpoints (experts stacked at load) are both read; errors name the file
/// or tensor at fault.
pub fn load_mlx(dir: &Path) -> Result<MlxOlmoe> {
    load_mlx_as(dir, ComputeDtype::F32)
}

/// [`load_mlx`] computing in `dtype`, as mlx-lm does after `model.set_dtype(dtype)`: every float
/// parameter is cast to `dtype` at load (packed quantized codes stay as they are), activations
/// flow in `dtype`, and logits are widened to float32 when read.
pub fn load_mlx_as(dir: &Path, dtype: ComputeDtype) -> Result<MlxOlmoe> {
    let device = default_device().map_err(|why| {
        Error::invalid(
            "device",
            format!("MLX could not create its default device: {why}"),
        )
    })?;
    load_on(dir, device, dtype, |_| Ok(()), &mut |_, _| {})
}

fn load_on(
    dir: &Path,
    device: MlxDevice,
    dtype: ComputeDtype,
    prepare: impl FnOnce(&mut Olmoe) -> Result<()>,
    on_layer: &mut dyn FnMut(usize, usize),
) -> Result<MlxOlmoe> {
    let _span = tracing::info_span!("load_mlx", dir = %dir.display(), ?device, ?dtype).entered();
    let mut model = super::load::load(dir, dtype.into(), on_layer)?;
    prepare(&mut model)?;
    tracing::info!(
        ?dtype,
        layers = model.args.num_hidden_layers,
        experts = model.args.num_experts,
        quantized = model.args.quantization.is_some(),
        mlx = %ffi::version(),
        "model loaded on MLX"
    );
    Ok(MlxOlmoe {
        model,
        device,
        lock: Mutex::new(()),
    })
}

/// What `OlmoeModel::load` asks of MLX: the checkpoint, device and compute dtype in `spec`,
/// quantized at load as `mlx_lm.convert -q` does (group size 64) when `spec.quantization`
/// asks, with the LoRA adapter of `spec.lora_path` applied unmerged or merged.
/// `on_layer(done, total)` reports the decoder layers read.
pub(super) fn load_for(
    spec: &LoadSpec,
    on_layer: &mut dyn FnMut(usize, usize),
) -> Result<MlxOlmoe> {
    let device = match spec.device {
        DeviceKind::Auto => {
            default_device().map_err(|why| Error::invalid("device", format!("MLX: {why}")))?
        }
        DeviceKind::Cpu => {
            use_device(MlxDevice::Cpu)?;
            MlxDevice::Cpu
        }
        DeviceKind::Metal | DeviceKind::Cuda => {
            if !ffi::gpu_available() {
                return Err(Error::invalid(
                    "device",
                    format!(
                        "{:?} was asked for, but this MLX build has no GPU",
                        spec.device
                    ),
                ));
            }
            use_device(MlxDevice::Gpu)?;
            MlxDevice::Gpu
        }
    };
    let dir = hub::resolve(&spec.model)?;
    if spec.quantization != Quantization::None {
        // Before the weights are read: a quantized checkpoint is refused at once.
        quantize::check_float(&OlmoeArgs::from_file(&dir.join("config.json"))?)?;
    }
    load_on(
        &dir,
        device,
        spec.dtype,
        |model| prepare(model, spec),
        on_layer,
    )
}

/// The LoRA adapter and load-time quantization of `spec`, in the order mlx-lm would apply
/// them to a float checkpoint: a merged adapter goes into the float weights, then the weights
/// are quantized, then an unmerged adapter wraps the (possibly quantized) layers.
fn prepare(model: &mut Olmoe, spec: &LoadSpec) -> Result<()> {
    let adapter = match &spec.lora_path {
        Some(dir) => Some(LoraAdapter::load(
            dir,
            &model.args,
            &candle_core::Device::Cpu,
        )?),
        None => None,
    };
    if let Some(a) = adapter.as_ref().filter(|_| spec.merge_lora) {
        super::adapter::merge(model, a)?;
    }
    if let Some(bits) = quantize::bits(spec.quantization) {
        quantize::quantize(model, bits)?;
    }
    if let Some(a) = adapter.as_ref().filter(|_| !spec.merge_lora) {
        super::adapter::apply(model, a)?;
    }
    if let Some(a) = &adapter {
        tracing::info!(
            modules = a.len(),
            merged = spec.merge_lora,
            source = %a.source.display(),
            "LoRA adapter applied on MLX"
        );
    }
    Ok(())
}

impl MlxOlmoe {
    /// The device the model computes on.
    pub fn device(&self) -> MlxDevice {
        self.device
    }

    fn locked(&self) -> MutexGuard<'_, ()> {
        serialised(&self.lock)
    }
}

impl Backend for MlxOlmoe {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }

    fn args(&self) -> &OlmoeArgs {
        &self.model.args
    }

    fn device(&self) -> &'static str {
        match self.device {
            MlxDevice::Cpu => "cpu",
            MlxDevice::Gpu => "gpu",
        }
    }

    fn session(&self) -> Box<dyn DecodeSession + '_> {
        Box::new(MlxSession {
            model: self,
            caches: Vec::new(),
        })
    }

    fn slots(&self) -> Box<dyn SlotBatch + '_> {
        Box::new(MlxSlots::new(&self.model, &self.lock))
    }

    fn token_weight_bytes(&self) -> Option<usize> {
        Some(self.model.token_weight_bytes())
    }

    fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let _guard = self.locked();
        let mut cache = Cache::new(self.model.layers.len());
        let h = self.model.hidden(ids, &mut cache)?;
        let logits = self.model.head(&h)?.to_f32()?;
        Ok(rows(logits, self.model.args.vocab_size))
    }

    fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        let _guard = self.locked();
        self.model.encode(batch, pooling)
    }
}

/// A decoding session on MLX: one KV cache per sequence.
struct MlxSession<'a> {
    model: &'a MlxOlmoe,
    caches: Vec<Cache>,
}

impl DecodeSession for MlxSession<'_> {
    fn step(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if tokens.is_empty() {
            return Err(Error::invalid("tokens", "an empty batch"));
        }
        if self.caches.is_empty() {
            let layers = self.model.model.layers.len();
            self.caches = tokens.iter().map(|_| Cache::new(layers)).collect();
        } else {
            if tokens.len() != self.caches.len() {
                return Err(Error::invalid(
                    "tokens",
                    format!(
                        "{} sequences, but the session holds {}",
                        tokens.len(),
                        self.caches.len()
                    ),
                ));
            }
            if tokens.iter().any(|t| t.len() != tokens[0].len()) {
                return Err(Error::invalid(
                    "tokens",
                    "after the first step every sequence takes the same number of tokens",
                ));
            }
        }
        let mut seqs: Vec<(&[u32], &mut Cache)> = tokens
            .iter()
            .map(Vec::as_slice)
            .zip(self.caches.iter_mut())
            .collect();
        let _guard = self.model.locked();
        self.model.model.last_logits(&mut seqs)
    }
}
