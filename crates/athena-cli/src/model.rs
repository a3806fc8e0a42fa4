//! The values of the flags that load a model: dtype, device, quantization and backend.

use athena::config::{ComputeDtype, DeviceKind, Quantization};
use clap::ValueEnum;

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
    /// Group-wise 8-bit (MLX affine: groups of 32, experts 64; attention's v/o stay dense; on
    /// the MLX backend `mlx_lm.convert -q --q-bits 8`: every module in groups of 64).
    #[value(name = "8bit")]
    Int8,
    /// Group-wise 4-bit (MLX affine, group 64; on the MLX backend `mlx_lm.convert -q`, the
    /// router included).
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
    /// MLX through libmlx (build with `--features athena/mlx`); any `--dtype`;
    /// `--quantization` as `mlx_lm.convert -q`, LoRA adapters as mlx-lm computes them.
    Mlx,
}
