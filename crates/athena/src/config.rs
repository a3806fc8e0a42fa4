//! `OlmoeConfig`: what the caller asks for. Readable from TOML or JSON; every field has a
//! documented default, so an empty file is a valid configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::action_head::ActionHeadConfig;
use crate::models::encode_batches::DEFAULT_ENCODE_BATCH_TOKENS;
pub use crate::options::{ComputeDtype, DeviceKind, Pooling, Quantization};

/// The default model: OLMoE's instruction-tuned release.
pub const DEFAULT_MODEL: &str = "allenai/OLMoE-1B-7B-0924-Instruct";

/// What the caller asks of [`crate::models::olmoe::OlmoeModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OlmoeConfig {
    /// Hub id or local directory. Default: `allenai/OLMoE-1B-7B-0924-Instruct`.
    pub model_name: String,
    /// Try MLX first when it is available. Default: `true`.
    pub use_mlx: bool,
    /// Checkpoint for the MLX path (e.g. an mlx-community conversion). Default: `model_name`.
    pub mlx_model_path: Option<String>,
    /// Quantization on the candle path. Default: `none`.
    pub quantization: Quantization,
    /// A LoRA adapter directory (PEFT or mlx-lm) applied after loading. Default: none.
    pub lora_path: Option<PathBuf>,
    /// Merge the adapter into the weights instead of computing it apart. Default: `false`.
    pub merge_lora: bool,
    /// Run quantized weights' products on int8 activations, as llama.cpp does (candle path,
    /// CPUs with AVX-512 VNNI): faster, less exact. Default: `false`.
    pub int8_activations: bool,
    /// Device for the candle path. Default: `auto`.
    pub device: DeviceKind,
    /// Compute dtype. Default: `f32`.
    pub dtype: ComputeDtype,
    /// How `encode` pools hidden states. Default: `mean`.
    pub pooling: Pooling,
    /// The most padded tokens (texts × the longest of them) one `encode` pass runs; more texts
    /// run in several passes. Default: 4096.
    pub encode_batch_tokens: usize,
    /// The memory action head attached on the candle path.
    pub action_head: ActionHeadConfig,
    /// A trained head to load instead of a freshly initialised one. Default: none.
    pub action_head_path: Option<PathBuf>,
}

impl Default for OlmoeConfig {
    fn default() -> Self {
        OlmoeConfig {
            model_name: DEFAULT_MODEL.to_string(),
            use_mlx: true,
            mlx_model_path: None,
            quantization: Quantization::None,
            lora_path: None,
            merge_lora: false,
            int8_activations: false,
            device: DeviceKind::Auto,
            dtype: ComputeDtype::F32,
            pooling: Pooling::Mean,
            encode_batch_tokens: DEFAULT_ENCODE_BATCH_TOKENS,
            action_head: ActionHeadConfig::default(),
            action_head_path: None,
        }
    }
}

impl OlmoeConfig {
    /// A default configuration for `model_name`.
    pub fn for_model(model_name: impl Into<String>) -> Self {
        OlmoeConfig {
            model_name: model_name.into(),
            ..Default::default()
        }
    }

    /// Reads a `.toml` or `.json` file (by extension; anything else is tried as TOML).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: OlmoeConfig = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| Error::config(path, e.to_string()))?
        };
        config
            .validate()
            .map_err(|e| Error::config(path, e.to_string()))?;
        Ok(config)
    }

    /// Checks the fields that can be checked without loading anything.
    pub fn validate(&self) -> Result<()> {
        if self.model_name.trim().is_empty() {
            return Err(Error::invalid("model_name", "is empty"));
        }
        if self.encode_batch_tokens == 0 {
            return Err(Error::invalid("encode_batch_tokens", "must be at least 1"));
        }
        self.action_head.validate()
    }

    /// The checkpoint the MLX path loads: `mlx_model_path` if set, else `model_name`.
    pub fn mlx_path(&self) -> &str {
        self.mlx_model_path.as_deref().unwrap_or(&self.model_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let c = OlmoeConfig::default();
        assert_eq!(c.model_name, DEFAULT_MODEL);
        assert!(c.use_mlx);
        assert_eq!(c.mlx_path(), DEFAULT_MODEL);
        assert_eq!(c.quantization, Quantization::None);
        assert_eq!(c.device, DeviceKind::Auto);
        assert_eq!(c.dtype, ComputeDtype::F32);
    }

    #[test]
    fn reads_toml_and_json_and_names_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("athena.toml");
        std::fs::write(
            &toml_path,
            "model_name = \"fixtures/x\"\nuse_mlx = false\nquantization = \"4bit\"\ndevice = \"cpu\"\n[action_head]\nseed = 7\n",
        )
        .unwrap();
        let c = OlmoeConfig::from_file(&toml_path).unwrap();
        assert!(!c.use_mlx);
        assert_eq!(c.quantization, Quantization::Int4);
        assert_eq!(c.action_head.seed, 7);
        let json_path = dir.path().join("athena.json");
        std::fs::write(&json_path, r#"{"model_name":"m","mlx_model_path":"mlx/m"}"#).unwrap();
        assert_eq!(
            OlmoeConfig::from_file(&json_path).unwrap().mlx_path(),
            "mlx/m"
        );
        std::fs::write(&json_path, r#"{"use_mxl": true}"#).unwrap();
        let err = OlmoeConfig::from_file(&json_path).unwrap_err().to_string();
        assert!(
            err.contains("athena.json") && err.contains("use_mxl"),
            "{err}"
        );
        std::fs::write(&toml_path, "quantization = \"3bit\"").unwrap();
        let err = OlmoeConfig::from_file(&toml_path).unwrap_err().to_string();
        assert!(err.contains("athena.toml") && err.contains("3bit"), "{err}");
        std::fs::write(&toml_path, "int8_activations = true").unwrap();
        assert!(OlmoeConfig::from_file(&toml_path).unwrap().int8_activations);
        std::fs::write(&toml_path, "int8_activations = \"yes\"").unwrap();
        let err = OlmoeConfig::from_file(&toml_path).unwrap_err().to_string();
        assert!(
            err.contains("athena.toml") && err.contains("int8_activations"),
            "{err}"
        );
    }
}
