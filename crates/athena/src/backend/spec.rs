//! What a backend is asked to load: the checkpoint and how to run it, as plain values. The
//! model layer builds it from the caller's configuration, so backends never read that
//! configuration themselves.

use std::path::PathBuf;

use crate::options::{ComputeDtype, DeviceKind, Quantization};

/// A load request for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSpec {
    /// Hub id or local directory of the checkpoint.
    pub model: String,
    /// Where to run.
    pub device: DeviceKind,
    /// Compute dtype.
    pub dtype: ComputeDtype,
    /// Load-time quantization.
    pub quantization: Quantization,
    /// A PEFT or mlx-lm LoRA adapter directory.
    pub lora_path: Option<PathBuf>,
    /// Merge the adapter into the weights instead of computing it apart.
    pub merge_lora: bool,
    /// Run quantized weights' products on int8 activations.
    pub int8_activations: bool,
}

impl LoadSpec {
    /// A request for `model` with every option at its default.
    pub fn for_model(model: impl Into<String>) -> Self {
        LoadSpec {
            model: model.into(),
            device: DeviceKind::default(),
            dtype: ComputeDtype::default(),
            quantization: Quantization::default(),
            lora_path: None,
            merge_lora: false,
            int8_activations: false,
        }
    }
}
