//! `config.json`: every field of `OlmoeForCausalLM` that changes the computation, parsed once
//! and validated. Defaults are those of transformers' `OlmoeConfig`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::quant::AffineParams;

/// The storage dtype a checkpoint declares (`dtype` or `torch_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDtype {
    /// 32-bit float.
    Float32,
    /// bfloat16.
    Bfloat16,
    /// IEEE half.
    Float16,
}

/// How RoPE frequencies are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor` (transformers' `linear` rope type).
    Linear {
        /// The divisor.
        factor: f64,
    },
}

/// The model's arguments, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OlmoeArgs {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of each expert's MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Experts per layer.
    pub num_experts: usize,
    /// Experts routed per token.
    pub num_experts_per_tok: usize,
    /// Renormalise the top-k router weights to sum to one.
    pub norm_topk_prob: bool,
    /// Clamp q, k and v to ±clip after the q/k norms.
    pub clip_qkv: Option<f64>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling kind.
    pub rope_scaling: RopeScaling,
    /// Bias on q/k/v/o projections.
    pub attention_bias: bool,
    /// lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Storage dtype declared by the checkpoint, if any.
    pub dtype: Option<StorageDtype>,
    /// End-of-sequence ids declared in config.json.
    pub eos_token_ids: Vec<u32>,
    /// Padding id declared in config.json.
    pub pad_token_id: Option<u32>,
    /// mlx-lm affine quantization declared in config.json, if the checkpoint is quantized.
    pub quantization: Option<CheckpointQuantization>,
}

/// mlx-lm's `quantization` block: a default and per-module overrides (`false` = not quantized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointQuantization {
    /// The default for every module.
    pub default: AffineParams,
    /// Overrides by module name (e.g. `model.layers.0.mlp.gate`); `None` means unquantized.
    pub overrides: std::collections::BTreeMap<String, Option<AffineParams>>,
}

impl CheckpointQuantization {
    /// The spec of `module` (a name without `.weight`), or `None` if it is left unquantized.
    pub fn spec(&self, module: &str) -> Option<AffineParams> {
        match self.overrides.get(module) {
            Some(o) => *o,
            None => Some(self.default),
        }
    }
}

fn quant_spec(
    path: &Path,
    field: &str,
    bits: Option<u64>,
    group: Option<u64>,
) -> Result<AffineParams> {
    let bits = bits.ok_or_else(|| Error::config(path, format!("`{field}` has no `bits`")))?;
    let group =
        group.ok_or_else(|| Error::config(path, format!("`{field}` has no `group_size`")))?;
    let bits = u8::try_from(bits)
        .ok()
        .filter(|b| AffineParams::BITS.contains(b))
        .ok_or_else(|| {
            Error::config(
                path,
                format!("`{field}.bits` = {bits} is not one of 2, 3, 4, 5, 6, 8"),
            )
        })?;
    let group_size = usize::try_from(group)
        .ok()
        .filter(|g| AffineParams::GROUP_SIZES.contains(g))
        .ok_or_else(|| {
            Error::config(
                path,
                format!("`{field}.group_size` = {group} is not one of 32, 64, 128"),
            )
        })?;
    // Both are among the supported values, so the parameters validate.
    AffineParams::new(bits, group_size)
}

fn parse_quantization(
    path: &Path,
    raw: &serde_json::Map<String, serde_json::Value>,
) -> Result<CheckpointQuantization> {
    use serde_json::Value;
    let num = |v: Option<&Value>| v.and_then(Value::as_u64);
    if let Some(mode) = raw.get("mode").and_then(Value::as_str) {
        if mode != "affine" {
            return Err(Error::config(
                path,
                format!("`quantization.mode` `{mode}` is not supported (only `affine`)"),
            ));
        }
    }
    let default = quant_spec(
        path,
        "quantization",
        num(raw.get("bits")),
        num(raw.get("group_size")),
    )?;
    let mut overrides = std::collections::BTreeMap::new();
    for (key, v) in raw {
        if matches!(key.as_str(), "bits" | "group_size" | "mode") {
            continue;
        }
        let field = format!("quantization.{key}");
        let spec = match v {
            Value::Bool(false) => None,
            Value::Object(o) => Some(quant_spec(
                path,
                &field,
                num(o.get("bits")),
                num(o.get("group_size")),
            )?),
            other => {
                return Err(Error::config(
                    path,
                    format!("`{field}` must be an object or false, got {other}"),
                ))
            }
        };
        overrides.insert(key.clone(), spec);
    }
    Ok(CheckpointQuantization { default, overrides })
}

/// One id or a list of ids, as `eos_token_id` may be written.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct RawRope {
    rope_type: Option<String>,
    /// The older spelling of `rope_type`; transformers may save both.
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
}

/// config.json as written by transformers (v4 and v5) and mlx-lm.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(alias = "num_local_experts")]
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    norm_topk_prob: Option<bool>,
    clip_qkv: Option<f64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RawRope>,
    rope_scaling: Option<RawRope>,
    attention_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    dtype: Option<String>,
    torch_dtype: Option<String>,
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
    quantization: Option<serde_json::Map<String, serde_json::Value>>,
    quantization_config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Upper bounds that keep a hostile config from asking for absurd allocations.
const MAX_DIM: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;
const MAX_LAYERS: usize = 4096;
const MAX_EXPERTS: usize = 1 << 14;
const MAX_POSITIONS: usize = 1 << 24;
/// Entries of the RoPE cos/sin tables built at load (max positions × head_dim).
const MAX_ROPE_ENTRIES: usize = 1 << 30;

/// The field whose value does not parse, where the text is a JSON object: every field is
/// optional, so the one that fails on its own is the culprit (serde's message does not say).
fn bad_field(text: &str) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    map.into_iter()
        .find(|(k, v)| {
            let one = serde_json::Map::from_iter([(k.clone(), v.clone())]);
            serde_json::from_value::<RawConfig>(serde_json::Value::Object(one)).is_err()
        })
        .map(|(k, _)| k)
}

impl OlmoeArgs {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` is used in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| {
            let msg = match bad_field(text) {
                Some(field) => format!("invalid `{field}`: {e}"),
                None => format!("not a valid config.json: {e}"),
            };
            Error::config(path, msg)
        })?;
        let bad = |msg: String| Error::config(path, msg);

        match raw.model_type.as_deref() {
            Some("olmoe") => {}
            Some(other) => {
                return Err(bad(format!(
                    "unsupported model_type `{other}` (athena runs `olmoe`)"
                )))
            }
            None => return Err(bad("missing field `model_type` (expected `olmoe`)".into())),
        }
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(bad(format!(
                    "unsupported hidden_act `{act}` (only `silu` is implemented)"
                )));
            }
        }

        let hidden_size = raw.hidden_size.unwrap_or(2048);
        let num_attention_heads = raw.num_attention_heads.unwrap_or(16);
        let num_hidden_layers = raw.num_hidden_layers.unwrap_or(16);
        let num_experts = raw.num_experts.unwrap_or(64);
        let num_experts_per_tok = raw.num_experts_per_tok.unwrap_or(8);
        let vocab_size = raw.vocab_size.unwrap_or(50304);
        let intermediate_size = raw.intermediate_size.unwrap_or(2048);
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(4096);

        for (field, v, max) in [
            ("hidden_size", hidden_size, MAX_DIM),
            ("intermediate_size", intermediate_size, MAX_DIM),
            ("num_hidden_layers", num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", num_attention_heads, MAX_DIM),
            ("num_key_value_heads", num_key_value_heads, MAX_DIM),
            ("num_experts", num_experts, MAX_EXPERTS),
            ("num_experts_per_tok", num_experts_per_tok, MAX_EXPERTS),
            ("vocab_size", vocab_size, MAX_VOCAB),
            (
                "max_position_embeddings",
                max_position_embeddings,
                MAX_POSITIONS,
            ),
        ] {
            if v == 0 {
                return Err(bad(format!("`{field}` must be positive, got 0")));
            }
            if v > max {
                return Err(bad(format!(
                    "`{field}` = {v} is beyond the supported maximum {max}"
                )));
            }
        }
        if !hidden_size.is_multiple_of(num_attention_heads) && raw.head_dim.is_none() {
            return Err(bad(format!(
                "`hidden_size` {hidden_size} is not divisible by `num_attention_heads` {num_attention_heads}"
            )));
        }
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(bad(format!(
                "`num_attention_heads` {num_attention_heads} is not a multiple of `num_key_value_heads` {num_key_value_heads}"
            )));
        }
        if num_experts_per_tok > num_experts {
            return Err(bad(format!(
                "`num_experts_per_tok` {num_experts_per_tok} exceeds `num_experts` {num_experts}"
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(hidden_size / num_attention_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) || head_dim > MAX_DIM {
            return Err(bad(format!(
                "`head_dim` must be a positive even number, got {head_dim}"
            )));
        }
        if max_position_embeddings.saturating_mul(head_dim) > MAX_ROPE_ENTRIES {
            return Err(bad(format!(
                "`max_position_embeddings` {max_position_embeddings} × `head_dim` {head_dim} is beyond the supported maximum {MAX_ROPE_ENTRIES} RoPE table entries"
            )));
        }

        // transformers 5 writes rope_parameters; older configs write rope_theta and rope_scaling.
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(bad(format!(
                "`rope_theta` must be positive and finite, got {rope_theta}"
            )));
        }
        // Both are checked, so that neither hides an unsupported scaling behind the other.
        let scaling = |field: &str, r: &RawRope| -> Result<RopeScaling> {
            match r.rope_type.as_deref().or(r.legacy_type.as_deref()) {
                None | Some("default") => Ok(RopeScaling::Default),
                Some("linear") => {
                    let factor = r.factor.ok_or_else(|| {
                        bad(format!("rope scaling `linear` in `{field}` needs a `factor`"))
                    })?;
                    if !(factor.is_finite() && factor > 0.0) {
                        return Err(bad(format!(
                            "rope scaling `factor` in `{field}` must be positive, got {factor}"
                        )));
                    }
                    Ok(RopeScaling::Linear { factor })
                }
                Some(other) => Err(bad(format!(
                    "unsupported rope scaling type `{other}` in `{field}` (implemented: default, linear)"
                ))),
            }
        };
        let from_parameters = raw
            .rope_parameters
            .as_ref()
            .map(|r| scaling("rope_parameters", r))
            .transpose()?;
        let from_scaling = raw
            .rope_scaling
            .as_ref()
            .map(|r| scaling("rope_scaling", r))
            .transpose()?;
        let rope_scaling = match (from_parameters, from_scaling) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(format!(
                    "`rope_parameters` ({a:?}) and `rope_scaling` ({b:?}) disagree"
                )))
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => RopeScaling::Default,
        };

        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-5);
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(bad(format!(
                "`rms_norm_eps` must be finite and ≥ 0, got {rms_norm_eps}"
            )));
        }
        if let Some(c) = raw.clip_qkv {
            if !(c.is_finite() && c > 0.0) {
                return Err(bad(format!(
                    "`clip_qkv` must be positive and finite, got {c}"
                )));
            }
        }
        let dtype = match raw.dtype.as_deref().or(raw.torch_dtype.as_deref()) {
            None => None,
            Some("float32") => Some(StorageDtype::Float32),
            Some("bfloat16") => Some(StorageDtype::Bfloat16),
            Some("float16") => Some(StorageDtype::Float16),
            Some(other) => return Err(bad(format!("unsupported dtype `{other}`"))),
        };
        let eos_token_ids = match raw.eos_token_id {
            None => vec![],
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
        };

        Ok(OlmoeArgs {
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            num_experts,
            num_experts_per_tok,
            norm_topk_prob: raw.norm_topk_prob.unwrap_or(false),
            clip_qkv: raw.clip_qkv,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            attention_bias: raw.attention_bias.unwrap_or(false),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            vocab_size,
            max_position_embeddings,
            dtype,
            eos_token_ids,
            pad_token_id: raw.pad_token_id,
            quantization: match raw
                .quantization
                .as_ref()
                .or(raw.quantization_config.as_ref())
            {
                None => None,
                Some(q) => {
                    if let Some(method) = q.get("quant_method") {
                        return Err(bad(format!(
                            "quantization method {method} is not supported (athena reads mlx-lm affine checkpoints)"
                        )));
                    }
                    Some(parse_quantization(path, q)?)
                }
            },
        })
    }

    /// Whether mlx-lm, quantizing this checkpoint, keeps scales and biases in bf16: it
    /// quantizes the weights in their declared dtype, and `mx.quantize` of bf16 weights returns
    /// bf16 scales and biases. Otherwise athena keeps them in f32.
    pub fn bf16_scales(&self) -> bool {
        self.dtype == Some(StorageDtype::Bfloat16)
    }

    /// Parameters in the checkpoint (embedding, attention, router, experts, norms, head).
    pub fn total_params(&self) -> u64 {
        let (h, v) = (self.hidden_size as u64, self.vocab_size as u64);
        let embed = v * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        embed + head + h + self.num_hidden_layers as u64 * self.layer_params(self.num_experts)
    }

    /// Parameters read to compute one token (only the routed experts count).
    pub fn active_params(&self) -> u64 {
        let (h, v) = (self.hidden_size as u64, self.vocab_size as u64);
        // One embedding row is read; the head is read whole.
        h + v * h + h + self.num_hidden_layers as u64 * self.layer_params(self.num_experts_per_tok)
    }

    fn layer_params(&self, experts: usize) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let bias = if self.attention_bias {
            q + 2 * kv + h
        } else {
            0
        };
        let attn = h * q + 2 * h * kv + q * h + bias + q + kv;
        let router = self.num_experts as u64 * h;
        let expert = 3 * h * self.intermediate_size as u64;
        attn + router + experts as u64 * expert + 2 * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<OlmoeArgs> {
        OlmoeArgs::from_json(json, Path::new("config.json"))
    }

    const OLMOE: &str = r#"{"model_type":"olmoe","hidden_size":2048,"intermediate_size":1024,
        "num_hidden_layers":16,"num_attention_heads":16,"num_key_value_heads":16,"num_experts":64,
        "num_experts_per_tok":8,"vocab_size":50304,"max_position_embeddings":4096,
        "rope_theta":10000.0,"rms_norm_eps":1e-05,"eos_token_id":50279,"pad_token_id":1,
        "tie_word_embeddings":false,"torch_dtype":"bfloat16","clip_qkv":null}"#;

    #[test]
    fn mlx_quantization_block_with_overrides() {
        let a = parse(
            r#"{"model_type":"olmoe","quantization":{"group_size":64,"bits":4,"mode":"affine",
            "model.layers.0.mlp.gate":{"group_size":64,"bits":8},"lm_head":false}}"#,
        )
        .unwrap();
        let q = a.quantization.unwrap();
        assert_eq!(
            q.spec("model.layers.1.self_attn.q_proj"),
            Some(AffineParams::new(4, 64).unwrap())
        );
        assert_eq!(
            q.spec("model.layers.0.mlp.gate"),
            Some(AffineParams::new(8, 64).unwrap())
        );
        assert_eq!(q.spec("lm_head"), None);
        for (json, needle) in [
            (
                r#"{"model_type":"olmoe","quantization":{"group_size":64,"bits":7}}"#,
                "bits` = 7",
            ),
            (
                r#"{"model_type":"olmoe","quantization":{"group_size":48,"bits":4}}"#,
                "group_size` = 48",
            ),
            (
                r#"{"model_type":"olmoe","quantization":{"group_size":64,"bits":4,"mode":"mxfp4"}}"#,
                "mxfp4",
            ),
            (
                r#"{"model_type":"olmoe","quantization_config":{"quant_method":"bitsandbytes"}}"#,
                "bitsandbytes",
            ),
            (
                r#"{"model_type":"olmoe","quantization":{"group_size":64,"bits":4,"lm_head":3}}"#,
                "quantization.lm_head",
            ),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "expected `{needle}` in `{err}`");
        }
    }

    #[test]
    fn olmoe_1b_7b_parameter_counts() {
        let a = parse(OLMOE).unwrap();
        assert_eq!(a.head_dim, 128);
        assert_eq!(a.dtype, Some(StorageDtype::Bfloat16));
        // allenai/OLMoE-1B-7B-0924: 6.92B total, ≈1.28B active incl. embeddings/head.
        let total = a.total_params() as f64 / 1e9;
        assert!((total - 6.919).abs() < 0.01, "total {total}");
        let active = a.active_params() as f64 / 1e9;
        assert!((1.1..1.4).contains(&active), "active {active}");
    }

    #[test]
    fn rope_parameters_win_and_linear_scaling_parses() {
        let a = parse(
            r#"{"model_type":"olmoe","rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":500000.0}}"#,
        )
        .unwrap();
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        // transformers may save both spellings of the type.
        let a = parse(
            r#"{"model_type":"olmoe","rope_scaling":{"type":"linear","rope_type":"linear","factor":2.0}}"#,
        )
        .unwrap();
        assert_eq!(a.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    }

    #[test]
    fn refuses_bad_configs_by_field() {
        for (json, needle) in [
            (r#"{"model_type":"llama"}"#, "model_type `llama`"),
            (r#"{"hidden_size":8}"#, "model_type"),
            (
                r#"{"model_type":"olmoe","num_attention_heads":0}"#,
                "num_attention_heads",
            ),
            (
                r#"{"model_type":"olmoe","num_hidden_layers":0}"#,
                "num_hidden_layers",
            ),
            (r#"{"model_type":"olmoe","num_experts":0}"#, "num_experts"),
            (r#"{"model_type":"olmoe","vocab_size":0}"#, "vocab_size"),
            (
                r#"{"model_type":"olmoe","hidden_size":100,"num_attention_heads":16}"#,
                "not divisible",
            ),
            (
                r#"{"model_type":"olmoe","num_experts":4,"num_experts_per_tok":8}"#,
                "exceeds",
            ),
            (
                r#"{"model_type":"olmoe","hidden_act":"gelu"}"#,
                "hidden_act `gelu`",
            ),
            (
                r#"{"model_type":"olmoe","rope_scaling":{"type":"yarn","factor":4.0}}"#,
                "`yarn`",
            ),
            (
                r#"{"model_type":"olmoe","num_attention_heads":16,"num_key_value_heads":5}"#,
                "multiple",
            ),
            (
                r#"{"model_type":"olmoe","hidden_size":99999999999}"#,
                "maximum",
            ),
            (
                r#"{"model_type":"olmoe","torch_dtype":"int4"}"#,
                "dtype `int4`",
            ),
            (
                r#"{"model_type":"olmoe","hidden_size":"big"}"#,
                "hidden_size",
            ),
            (
                r#"{"model_type":"olmoe","rope_parameters":{"rope_type":"default"},"rope_scaling":{"type":"yarn","factor":4.0}}"#,
                "`yarn` in `rope_scaling`",
            ),
            (
                r#"{"model_type":"olmoe","max_position_embeddings":0}"#,
                "max_position_embeddings",
            ),
            (
                r#"{"model_type":"olmoe","max_position_embeddings":1099511627776}"#,
                "max_position_embeddings",
            ),
            (
                r#"{"model_type":"olmoe","max_position_embeddings":16000000,"head_dim":1024}"#,
                "RoPE table",
            ),
            ("not json", "not a valid config.json"),
        ] {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains("config.json"), "{err}");
            assert!(err.contains(needle), "expected `{needle}` in `{err}`");
        }
    }
}
