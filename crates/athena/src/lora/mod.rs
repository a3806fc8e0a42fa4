//! LoRA adapters: PEFT (`adapter_config.json` + `adapter_model.safetensors`) and mlx-lm
//! (`adapter_config.json` + `adapters.safetensors`), read, checked against the model and
//! normalised into one form: per module of OLMoE, in Hugging Face names, a low-rank update
//! `ΔW = scale · B·A` with A [r, in] and B [out, r] in f32, to be added to the module's
//! [out, in] weight (REFERENCE §3, §6).
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

pub mod mlx;
pub mod peft;
mod peft_config;
mod regex;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;

use crate::checkpoint::{OlmoeArgs, WeightFiles};
use crate::error::{Error, Result};

/// The file that describes an adapter, in both formats.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// One of the attention projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttnProj {
    /// `q_proj`: [heads·head_dim, H].
    Q,
    /// `k_proj`: [kv_heads·head_dim, H].
    K,
    /// `v_proj`: [kv_heads·head_dim, H].
    V,
    /// `o_proj`: [H, heads·head_dim].
    O,
}

impl AttnProj {
    /// All four, in checkpoint order.
    pub const ALL: [AttnProj; 4] = [AttnProj::Q, AttnProj::K, AttnProj::V, AttnProj::O];

    /// The HF module name: `q_proj`, `k_proj`, `v_proj` or `o_proj`.
    pub fn name(self) -> &'static str {
        match self {
            AttnProj::Q => "q_proj",
            AttnProj::K => "k_proj",
            AttnProj::V => "v_proj",
            AttnProj::O => "o_proj",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        AttnProj::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One of an expert's three projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpertProjKind {
    /// `gate_proj`: [I, H].
    Gate,
    /// `up_proj`: [I, H].
    Up,
    /// `down_proj`: [H, I].
    Down,
}

impl ExpertProjKind {
    /// All three, in checkpoint order.
    pub const ALL: [ExpertProjKind; 3] = [
        ExpertProjKind::Gate,
        ExpertProjKind::Up,
        ExpertProjKind::Down,
    ];

    /// The HF module name: `gate_proj`, `up_proj` or `down_proj`.
    pub fn name(self) -> &'static str {
        match self {
            ExpertProjKind::Gate => "gate_proj",
            ExpertProjKind::Up => "up_proj",
            ExpertProjKind::Down => "down_proj",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        ExpertProjKind::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Which linear module of OLMoE an adapter targets, in HF names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraTarget {
    /// `model.layers.{layer}.self_attn.{proj}`.
    Attn {
        /// Decoder layer.
        layer: usize,
        /// Which projection.
        proj: AttnProj,
    },
    /// The router, `model.layers.{layer}.mlp.gate`.
    Router {
        /// Decoder layer.
        layer: usize,
    },
    /// `model.layers.{layer}.mlp.experts.{expert}.{proj}`.
    Expert {
        /// Decoder layer.
        layer: usize,
        /// Expert index.
        expert: usize,
        /// Which projection.
        proj: ExpertProjKind,
    },
}

impl LoraTarget {
    /// The HF module name, e.g. `model.layers.0.self_attn.q_proj`, `model.layers.0.mlp.gate`,
    /// `model.layers.0.mlp.experts.5.gate_proj`.
    pub fn hf_name(&self) -> String {
        match self {
            LoraTarget::Attn { layer, proj } => {
                format!("model.layers.{layer}.self_attn.{}", proj.name())
            }
            LoraTarget::Router { layer } => format!("model.layers.{layer}.mlp.gate"),
            LoraTarget::Expert {
                layer,
                expert,
                proj,
            } => format!("model.layers.{layer}.mlp.experts.{expert}.{}", proj.name()),
        }
    }

    /// Parses an HF module name back; `None` for anything that is not one of the modules
    /// above. Layer and expert indices are not checked against a model.
    pub fn from_hf_name(name: &str) -> Option<LoraTarget> {
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer = parse_index(layer)?;
        let parts: Vec<&str> = rest.split('.').collect();
        match parts.as_slice() {
            ["self_attn", p] => Some(LoraTarget::Attn {
                layer,
                proj: AttnProj::from_name(p)?,
            }),
            ["mlp", "gate"] => Some(LoraTarget::Router { layer }),
            ["mlp", "experts", e, p] => Some(LoraTarget::Expert {
                layer,
                expert: parse_index(e)?,
                proj: ExpertProjKind::from_name(p)?,
            }),
            _ => None,
        }
    }

    /// The module's weight shape (out, in) for this model.
    pub fn shape(&self, args: &OlmoeArgs) -> (usize, usize) {
        let h = args.hidden_size;
        let q = args.num_attention_heads * args.head_dim;
        let kv = args.num_key_value_heads * args.head_dim;
        match self {
            LoraTarget::Attn { proj, .. } => match proj {
                AttnProj::Q => (q, h),
                AttnProj::K | AttnProj::V => (kv, h),
                AttnProj::O => (h, q),
            },
            LoraTarget::Router { .. } => (args.num_experts, h),
            LoraTarget::Expert { proj, .. } => match proj {
                ExpertProjKind::Gate | ExpertProjKind::Up => (args.intermediate_size, h),
                ExpertProjKind::Down => (h, args.intermediate_size),
            },
        }
    }

    /// The decoder layer the module belongs to.
    pub fn layer(&self) -> usize {
        match *self {
            LoraTarget::Attn { layer, .. }
            | LoraTarget::Router { layer }
            | LoraTarget::Expert { layer, .. } => layer,
        }
    }
}

/// A decimal index without sign or leading `+` (what Python's `str(int)` writes).
fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One low-rank update: ΔW = scale · B·A, with A [r, in], B [out, r] (f32, on the device
/// given to [`LoraAdapter::load`]).
#[derive(Debug, Clone)]
pub struct LoraDelta {
    /// [r, in].
    pub a: Tensor,
    /// [out, r].
    pub b: Tensor,
    /// The factor in front of B·A.
    pub scale: f64,
}

impl LoraDelta {
    /// The rank r.
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// The dense update scale · B·A, [out, in] f32.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }
}

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

/// Opens the adapter's weights, naming the file when it is missing.
fn open_weights(path: &Path, what: &str) -> Result<WeightFiles> {
    if !path.is_file() {
        return Err(Error::checkpoint(
            path,
            format!("missing: {what} adapter keeps its weights in this file"),
        ));
    }
    WeightFiles::open_files(&[path.to_path_buf()])
}

/// Loads `name` as f32 on the CPU, refusing non-float dtypes and NaN or infinite values.
fn load_f32(files: &WeightFiles, name: &str) -> Result<Tensor> {
    let t = files.load(name, &Device::Cpu)?;
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(Error::tensor(
            name,
            format!("dtype {:?} is not a float type", t.dtype()),
        ));
    }
    let t = t.to_dtype(DType::F32)?;
    // 0·x is 0 for every finite x and NaN for NaN and ±inf.
    let probe = (&t * 0.0)?.sum_all()?.to_scalar::<f32>()?;
    if probe != 0.0 {
        return Err(Error::tensor(name, "holds NaN or infinite values"));
    }
    Ok(t)
}

/// Python's `json.dump` writes NaN and ±Infinity as bare words, which JSON lacks; they are
/// quoted here (outside strings) so that a number field can read them and refuse them by name.
fn python_json(text: &str) -> Cow<'_, str> {
    const WORDS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    if !WORDS.iter().any(|w| text.contains(w)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(w) = WORDS.iter().find(|w| rest.starts_with(**w)) {
            let before_ok = !text[..i]
                .chars()
                .next_back()
                .is_some_and(|p| p.is_alphanumeric() || p == '_');
            let after_ok = !rest[w.len()..]
                .chars()
                .next()
                .is_some_and(|n| n.is_alphanumeric() || n == '_');
            if before_ok && after_ok {
                out.push('"');
                out.push_str(w);
                out.push('"');
                i += w.len();
                continue;
            }
        }
        out.push(c);
        i += c.len_utf8();
    }
    Cow::Owned(out)
}

/// A number as Python's json writes it: a JSON number, or NaN/Infinity quoted by
/// [`python_json`].
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(try_from = "NumOrWord")]
struct PyNumber(f64);

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum NumOrWord {
    Num(f64),
    Word(String),
}

impl TryFrom<NumOrWord> for PyNumber {
    type Error = String;
    fn try_from(v: NumOrWord) -> std::result::Result<Self, String> {
        match v {
            NumOrWord::Num(x) => Ok(PyNumber(x)),
            NumOrWord::Word(w) => match w.as_str() {
                "NaN" => Ok(PyNumber(f64::NAN)),
                "Infinity" => Ok(PyNumber(f64::INFINITY)),
                "-Infinity" => Ok(PyNumber(f64::NEG_INFINITY)),
                other => Err(format!("expected a number, got the string {other:?}")),
            },
        }
    }
}

/// A JSON object read in file order (Python dicts keep insertion order, and PEFT's
/// `rank_pattern` lookup takes the first key that matches).
#[derive(Debug, Clone)]
struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Parses a config, naming the field at fault where the text is an object (every field of
/// the raw structs is optional, so the one that fails on its own is the culprit).
fn parse_config<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let field = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .ok()
            .and_then(|map| {
                map.into_iter().find_map(|(k, v)| {
                    let one = serde_json::Map::from_iter([(k.clone(), v)]);
                    serde_json::from_value::<T>(serde_json::Value::Object(one))
                        .is_err()
                        .then_some(k)
                })
            });
        match field {
            Some(f) => Error::config(path, format!("invalid `{f}`: {e}")),
            None => Error::config(path, format!("not a valid adapter config: {e}")),
        }
    })
}

/// Checks a rank read from a config: a positive integer.
fn check_rank(path: &Path, field: &str, r: PyNumber) -> Result<usize> {
    let v = r.0;
    if !v.is_finite() || v.fract() != 0.0 || v < 0.0 || v > (1u64 << 32) as f64 {
        return Err(Error::config(
            path,
            format!("`{field}` = {v} is not a positive integer rank"),
        ));
    }
    if v == 0.0 {
        return Err(Error::config(
            path,
            format!("`{field}` = 0: a LoRA rank must be positive"),
        ));
    }
    Ok(v as usize)
}

/// Checks an alpha or scale read from a config: finite and not zero.
fn check_factor(path: &Path, field: &str, x: PyNumber) -> Result<f64> {
    let v = x.0;
    if !v.is_finite() {
        return Err(Error::config(
            path,
            format!("`{field}` = {v} is not finite"),
        ));
    }
    if v == 0.0 {
        return Err(Error::config(
            path,
            format!("`{field}` = 0 would make the adapter a no-op"),
        ));
    }
    Ok(v)
}

/// The module's name in a message, with its shape.
fn describe(t: &LoraTarget, args: &OlmoeArgs) -> String {
    let (o, i) = t.shape(args);
    format!("`{}` [{o}, {i}]", t.hf_name())
}

/// Refuses a layer or expert index past the model's.
fn check_indices(t: &LoraTarget, args: &OlmoeArgs, tensor: &str) -> Result<()> {
    if t.layer() >= args.num_hidden_layers {
        return Err(Error::tensor(
            tensor,
            format!(
                "layer {} but the model has {} layers",
                t.layer(),
                args.num_hidden_layers
            ),
        ));
    }
    if let LoraTarget::Expert { expert, .. } = t {
        if *expert >= args.num_experts {
            return Err(Error::tensor(
                tensor,
                format!(
                    "expert {expert} but the model has {} experts",
                    args.num_experts
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_round_trip() {
        let targets = [
            LoraTarget::Attn {
                layer: 3,
                proj: AttnProj::O,
            },
            LoraTarget::Router { layer: 0 },
            LoraTarget::Expert {
                layer: 15,
                expert: 63,
                proj: ExpertProjKind::Down,
            },
        ];
        for t in targets {
            assert_eq!(LoraTarget::from_hf_name(&t.hf_name()), Some(t.clone()));
        }
        for bad in [
            "model.layers.0.mlp.experts.gate_up_proj",
            "model.layers.x.mlp.gate",
            "model.layers.+1.mlp.gate",
            "lm_head",
            "model.layers.0.self_attn.q_norm",
        ] {
            assert_eq!(LoraTarget::from_hf_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn python_literals_are_quoted_outside_strings() {
        let text =
            r#"{"a": NaN, "b": -Infinity, "c": "NaN and Infinity", "d": [Infinity], "NaNx": 1}"#;
        assert_eq!(
            python_json(text),
            r#"{"a": "NaN", "b": "-Infinity", "c": "NaN and Infinity", "d": ["Infinity"], "NaNx": 1}"#
        );
        assert!(matches!(python_json("{\"a\": 1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn ordered_maps_keep_file_order() {
        let m: Ordered<u32> = serde_json::from_str(r#"{"z": 1, "a": 2, "m": 3}"#).unwrap();
        let keys: Vec<_> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }
}
