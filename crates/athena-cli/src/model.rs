//! Flags shared by every command that loads a model, and the loading itself.

use std::path::PathBuf;

use anyhow::{Context, Result};
use athena::backend::candle::{load_olmoe_with, CandleProvider, LoadOptions, Olmoe};
use athena::backend::mlx::MlxProvider;
use athena::backend::{Backend, BackendKind, BackendProvider, DecodeSession, LoadSpec, Pooling};
use athena::checkpoint::{hub, OlmoeArgs};
use athena::config::{ComputeDtype, DeviceKind, Quantization};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

/// Compute dtype.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit float (exact parity with transformers).
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl From<DtypeArg> for ComputeDtype {
    fn from(d: DtypeArg) -> ComputeDtype {
        match d {
            DtypeArg::F32 => ComputeDtype::F32,
            DtypeArg::Bf16 => ComputeDtype::Bf16,
            DtypeArg::F16 => ComputeDtype::F16,
        }
    }
}

/// Device to run on.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    /// CUDA if built in and present, else Metal if built in and present, else CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (build with `--features cuda`).
    Cuda,
    /// The Metal GPU (build with `--features metal`).
    Metal,
}

/// Weight quantization at load time.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QuantArg {
    /// Weights as stored.
    None,
    /// Group-wise 8-bit (MLX affine: groups of 32, experts 64; attention's v/o stay dense).
    #[value(name = "8bit")]
    Int8,
    /// Group-wise 4-bit (MLX affine, group 64).
    #[value(name = "4bit")]
    Int4,
}

impl From<QuantArg> for Quantization {
    fn from(q: QuantArg) -> Quantization {
        match q {
            QuantArg::None => Quantization::None,
            QuantArg::Int8 => Quantization::Int8,
            QuantArg::Int4 => Quantization::Int4,
        }
    }
}

impl From<DeviceArg> for DeviceKind {
    fn from(d: DeviceArg) -> DeviceKind {
        match d {
            DeviceArg::Auto => DeviceKind::Auto,
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Cuda => DeviceKind::Cuda,
            DeviceArg::Metal => DeviceKind::Metal,
        }
    }
}

/// The engine that runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// candle (CPU, CUDA, Metal): every flag applies.
    Candle,
    /// MLX through libmlx (build with `--features athena/mlx`); float32 on the CPU, no
    /// load-time quantization or LoRA (mlx-lm quantized checkpoints load as they are).
    Mlx,
}

/// Which model to load and how.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A model directory, or a hub id such as `allenai/OLMoE-1B-7B-0924-Instruct`.
    #[arg(long)]
    pub model: String,
    /// Compute dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Quantize the weights at load time.
    #[arg(long, value_enum, default_value = "none")]
    pub quantization: QuantArg,
    /// A LoRA adapter directory (PEFT or mlx-lm).
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// Merge the adapter into the weights instead of computing it apart.
    #[arg(long, requires = "lora")]
    pub merge_lora: bool,
    /// Run quantized weights' products on int8 activations (faster, less exact; CPUs with
    /// AVX-512 VNNI).
    #[arg(long)]
    pub int8_activations: bool,
    /// The engine (commands that accept either).
    #[arg(long, value_enum, default_value = "candle")]
    pub backend: BackendArg,
}

/// A model loaded on the backend `--backend` names.
pub enum AnyModel {
    /// The candle engine.
    Candle(Box<Olmoe>),
    /// Another engine, behind the backend contract.
    Other(Box<dyn Backend>),
}

impl AnyModel {
    /// The compute dtype (MLX computes in float32).
    pub fn dtype(&self) -> DType {
        match self {
            AnyModel::Candle(m) => m.dtype(),
            AnyModel::Other(_) => DType::F32,
        }
    }

    fn inner(&self) -> &dyn Backend {
        match self {
            AnyModel::Candle(m) => m.as_ref(),
            AnyModel::Other(b) => b.as_ref(),
        }
    }
}

impl Backend for AnyModel {
    fn kind(&self) -> BackendKind {
        self.inner().kind()
    }
    fn args(&self) -> &OlmoeArgs {
        self.inner().args()
    }
    fn session(&self) -> Box<dyn DecodeSession + '_> {
        self.inner().session()
    }
    fn logits(&self, ids: &[u32]) -> athena::Result<Vec<Vec<f32>>> {
        self.inner().logits(ids)
    }
    fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> athena::Result<Vec<Vec<f32>>> {
        self.inner().encode(batch, pooling)
    }
    fn token_weight_bytes(&self) -> Option<usize> {
        self.inner().token_weight_bytes()
    }
}

impl ModelArgs {
    /// The local directory of the model (resolved through the HF cache for hub ids).
    pub fn dir(&self) -> Result<PathBuf> {
        Ok(hub::resolve(&self.model)?)
    }

    fn device(&self) -> Result<Device> {
        Ok(CandleProvider::device(self.device.into())?)
    }

    /// Loads the model on the backend `--backend` names.
    pub fn load_any(&self) -> Result<(PathBuf, AnyModel)> {
        match self.backend {
            BackendArg::Candle => {
                let (dir, model) = self.load()?;
                Ok((dir, AnyModel::Candle(Box::new(model))))
            }
            BackendArg::Mlx => {
                let dir = self.dir()?;
                let spec = LoadSpec {
                    device: self.device.into(),
                    dtype: self.dtype.into(),
                    quantization: self.quantization.into(),
                    lora_path: self.lora.clone(),
                    merge_lora: self.merge_lora,
                    ..LoadSpec::for_model(dir.to_string_lossy())
                };
                let model = MlxProvider
                    .load(&spec)
                    .with_context(|| format!("loading {} on MLX", dir.display()))?;
                Ok((dir, AnyModel::Other(model)))
            }
        }
    }

    /// Loads the model on candle, with a progress bar on stderr.
    pub fn load(&self) -> Result<(PathBuf, Olmoe)> {
        if self.backend != BackendArg::Candle {
            anyhow::bail!(
                "--backend {:?}: this command runs on candle only (`athena logits` and `athena bench` take --backend mlx)",
                self.backend
            );
        }
        let dir = self.dir()?;
        let device = self.device()?;
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(dir.display().to_string());
        let opts = LoadOptions {
            quantization: self.quantization.into(),
            lora_path: self.lora.clone(),
            merge_lora: self.merge_lora,
            int8_activations: self.int8_activations,
        };
        let model = load_olmoe_with(
            &dir,
            &device,
            ComputeDtype::from(self.dtype).into(),
            &opts,
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )
        .with_context(|| format!("loading {}", dir.display()))?;
        bar.finish_and_clear();
        Ok((dir, model))
    }
}
