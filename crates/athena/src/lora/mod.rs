//! LoRA adapters: PEFT (`adapter_config.json` + `adapter_model.safetensors`) and mlx-lm
//! (`adapter_config.json` + `adapters.safetensors`), read, checked against the model and
//! normalised into one form: per module of OLMoE, in Hugging Face names, a low-rank update
//! `ΔW = scale · B·A` with A [r, in] and B [out, r] in f32, to be added to the module's
//! [out, in] weight, as PEFT computes it
//! (<https://github.com/huggingface/peft/blob/v0.21.2/src/peft/tuners/lora/layer.py>).
//!
//! Every expert layout becomes per-expert deltas ([`LoraTarget::Expert`]), in the per-expert
//! HF orientation (gate/up [I, H], down [H, I]):
//! - PEFT with transformers 4 wrote one pair per expert module,
//!   `base_model.model.model.layers.L.mlp.experts.E.gate_proj.lora_A.weight` [r, H];
//! - PEFT 0.21 with transformers 5 targets the fused expert parameters through
//!   `target_parameters` and writes one pair per parameter, nested wrappers adding
//!   `.base_layer`: `…mlp.experts.lora_A.weight` [E·r, in] (row e·r + k) and
//!   `…mlp.experts.lora_B.weight` [out, r·E] (column k·E + e), where `gate_up_proj` has
//!   out = 2I (gate rows first) and `down_proj` out = H; see [`peft`];
//! - mlx-lm stacks them per `switch_mlp` projection, `lora_a` [E, r, in] and `lora_b`
//!   [E, out, r]; see [`mlx`].
//!
//! The router (`mlp.gate`, [E, H]) and the attention projections have one pair each.
//!
//! ```
//! use std::path::Path;
//! use athena::checkpoint::OlmoeArgs;
//! use athena::lora::{AttnProj, LoraAdapter, LoraTarget};
//! use candle_core::Device;
//!
//! let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
//! let args = OlmoeArgs::from_file(&root.join("models/base/config.json"))?;
//! let adapter = LoraAdapter::load(&root.join("lora/peft_attn"), &args, &Device::Cpu)?;
//! assert_eq!(adapter.len(), 8);
//! let q0 = LoraTarget::Attn { layer: 0, proj: AttnProj::Q };
//! let delta = adapter.get(&q0).expect("q_proj of layer 0 is adapted");
//! assert_eq!(delta.scale, 2.0);
//! assert_eq!(delta.delta_weight()?.dims(), &[64, 64]);
//! # Ok::<(), athena::Error>(())
//! ```

mod config_text;
mod delta;
pub mod mlx;
pub mod peft;
mod peft_config;
mod regex;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::checkpoint::OlmoeArgs;
use crate::error::{Error, Result};

use config_text::python_json;
pub use config_text::CONFIG_FILE;
pub use delta::LoraDelta;
pub use target::{AttnProj, ExpertProjKind, LoraTarget};

/// Which library wrote an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterFormat {
    /// Hugging Face PEFT: `adapter_model.safetensors`.
    Peft,
    /// mlx-lm: `adapters.safetensors`.
    MlxLm,
}

/// A loaded, validated adapter: one delta per adapted module.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// The updates, by module.
    pub deltas: BTreeMap<LoraTarget, LoraDelta>,
    /// The directory it was read from.
    pub source: PathBuf,
    /// The library that wrote it.
    pub format: AdapterFormat,
}

impl LoraAdapter {
    /// Reads a PEFT adapter (adapter_config.json + adapter_model.safetensors) or an mlx-lm
    /// adapter (adapter_config.json + adapters.safetensors) from `dir`, checks it against the
    /// model, and normalises it.
    pub fn load(dir: &Path, args: &OlmoeArgs, device: &Device) -> Result<LoraAdapter> {
        let _span = tracing::info_span!("lora_load", dir = %dir.display()).entered();
        let config_path = dir.join(CONFIG_FILE);
        if !dir.is_dir() {
            return Err(Error::config(dir, "adapter directory not found"));
        }
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let text = python_json(&text);
        let format = detect(dir, &text, &config_path)?;
        let deltas = match format {
            AdapterFormat::Peft => peft::load(dir, &text, &config_path, args)?,
            AdapterFormat::MlxLm => mlx::load(dir, &text, &config_path, args)?,
        };
        let deltas = deltas
            .into_iter()
            .map(|(t, d)| {
                Ok((
                    t,
                    LoraDelta {
                        a: d.a.to_device(device)?,
                        b: d.b.to_device(device)?,
                        scale: d.scale,
                    },
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        tracing::info!(?format, modules = deltas.len(), "LoRA adapter loaded");
        Ok(LoraAdapter {
            deltas,
            source: dir.to_path_buf(),
            format,
        })
    }

    /// The update for `t`, if the adapter has one.
    pub fn get(&self, t: &LoraTarget) -> Option<&LoraDelta> {
        self.deltas.get(t)
    }

    /// Number of adapted modules (experts counted one by one).
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    /// Whether no module is adapted (never true for a loaded adapter).
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }
}

/// The format, from the config's own fields, else from the weight file present.
fn detect(dir: &Path, text: &str, config_path: &Path) -> Result<AdapterFormat> {
    #[derive(serde::Deserialize)]
    struct Probe {
        peft_type: Option<serde::de::IgnoredAny>,
        lora_parameters: Option<serde::de::IgnoredAny>,
        fine_tune_type: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_str(text)
        .map_err(|e| Error::config(config_path, format!("not a valid adapter config: {e}")))?;
    if probe.peft_type.is_some() {
        return Ok(AdapterFormat::Peft);
    }
    if probe.lora_parameters.is_some() || probe.fine_tune_type.is_some() {
        return Ok(AdapterFormat::MlxLm);
    }
    if dir.join(peft::WEIGHTS_FILE).is_file() {
        return Ok(AdapterFormat::Peft);
    }
    if dir.join(mlx::WEIGHTS_FILE).is_file() {
        return Ok(AdapterFormat::MlxLm);
    }
    Err(Error::config(
        config_path,
        "neither a PEFT adapter config (no `peft_type`) nor an mlx-lm one (no `lora_parameters`)",
    ))
}
