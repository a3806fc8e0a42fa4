//! PEFT's `adapter_config.json` for LoRA, parsed once into what changes the computation:
//! rank, alpha and their per-module patterns, rslora, and which modules and parameters it
//! targets, with PEFT's matching rules (peft 0.21: `check_target_module_exists`,
//! `get_pattern_key`, `_inject_parameters`). Options that athena does not implement are
//! refused by name.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::config_text::{check_factor, check_rank, parse_config, Ordered, PyNumber};
use super::regex::Regex;
use super::target::{AttnProj, ExpertProjKind, LoraTarget};
use crate::checkpoint::OlmoeArgs;
use crate::error::{Error, Result};

/// PEFT's shorthand for every linear layer but the output layer.
const ALL_LINEAR: &str = "all-linear";

/// One name or a list, as PEFT accepts for `target_modules` and friends.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
enum Names {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an integer or a list of integers")]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InitWeights {
    Name(String),
    /// `true`, `false` or anything else that is not a named initialisation.
    Other(serde::de::IgnoredAny),
}

/// adapter_config.json as PEFT writes it; fields that do not matter for inference
/// (dropout, task type, revision, …) are ignored.
#[derive(Debug, Deserialize)]
struct Raw {
    peft_type: Option<String>,
    r: Option<PyNumber>,
    lora_alpha: Option<PyNumber>,
    target_modules: Option<Names>,
    target_parameters: Option<Vec<String>>,
    exclude_modules: Option<Names>,
    use_rslora: Option<bool>,
    use_dora: Option<bool>,
    rank_pattern: Option<Ordered<PyNumber>>,
    alpha_pattern: Option<Ordered<PyNumber>>,
    layers_to_transform: Option<OneOrMany<i64>>,
    layers_pattern: Option<Names>,
    modules_to_save: Option<Vec<String>>,
    base_model_name_or_path: Option<String>,
    fan_in_fan_out: Option<bool>,
    bias: Option<String>,
    lora_bias: Option<bool>,
    init_lora_weights: Option<InitWeights>,
    use_qalora: Option<bool>,
    layer_replication: Option<serde_json::Value>,
    alora_invocation_tokens: Option<serde_json::Value>,
    trainable_token_indices: Option<serde_json::Value>,
    use_bdlora: Option<serde_json::Value>,
    velora_config: Option<serde_json::Value>,
    kasa_config: Option<serde_json::Value>,
    monteclora_config: Option<serde_json::Value>,
    arrow_config: Option<serde_json::Value>,
}

/// How `target_modules` (or `exclude_modules`) names modules.
#[derive(Debug)]
enum ModuleSpec {
    /// Exact names or dotted suffixes.
    List(Vec<String>),
    /// A Python regex, matched against the whole name.
    Pattern(Regex),
    /// `all-linear`.
    AllLinear,
}

/// A validated PEFT LoRA config.
#[derive(Debug)]
pub(super) struct PeftConfig {
    path: PathBuf,
    r: usize,
    alpha: f64,
    rslora: bool,
    target_modules: Option<ModuleSpec>,
    target_parameters: Vec<String>,
    exclude_modules: Option<ModuleSpec>,
    /// `layers_to_transform` when it restricts anything.
    layers: Option<Vec<i64>>,
    layers_pattern: Vec<Regex>,
    rank_pattern: Vec<(String, Regex, usize)>,
    alpha_pattern: Vec<(String, Regex, f64)>,
    /// What the config says it targets, for messages.
    summary: String,
}

/// Whether a JSON value turns an option on (null, false and empty values leave it off).
fn is_set(v: &Option<serde_json::Value>) -> bool {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

impl PeftConfig {
    /// Parses and validates the text of a PEFT `adapter_config.json`.
    pub(super) fn parse(text: &str, path: &Path) -> Result<PeftConfig> {
        let raw: Raw = parse_config(text, path)?;
        let refuse = |msg: String| Err(Error::config(path, msg));

        match raw.peft_type.as_deref() {
            Some("LORA") => {}
            Some(other) => {
                return refuse(format!(
                    "peft_type `{other}` is not supported (athena reads LORA adapters)"
                ))
            }
            None => return refuse("missing `peft_type` (expected \"LORA\")".into()),
        }
        if raw.use_dora == Some(true) {
            return refuse(
                "use_dora: true (DoRA) is not supported; athena applies plain LoRA".into(),
            );
        }
        if let Some(bias) = raw.bias.as_deref() {
            if bias != "none" {
                return refuse(format!(
                    "bias `{bias}` is not supported: the adapter trains biases of the base \
                     model; athena reads bias \"none\""
                ));
            }
        }
        if raw.lora_bias == Some(true) {
            return refuse("lora_bias: true is not supported (lora_B has a bias)".into());
        }
        if let Some(m) = raw.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
            return refuse(format!(
                "modules_to_save {m:?} is not supported: the adapter carries full copies of modules"
            ));
        }
        if raw.fan_in_fan_out == Some(true) {
            return refuse(
                "fan_in_fan_out: true is for Conv1D (GPT-2 style) layers; OLMoE's modules are nn.Linear"
                    .into(),
            );
        }
        if raw.use_qalora == Some(true) {
            return refuse("use_qalora: true (QALoRA) is not supported".into());
        }
        for (field, value) in [
            ("layer_replication", &raw.layer_replication),
            ("alora_invocation_tokens", &raw.alora_invocation_tokens),
            ("trainable_token_indices", &raw.trainable_token_indices),
            ("use_bdlora", &raw.use_bdlora),
            ("velora_config", &raw.velora_config),
            ("kasa_config", &raw.kasa_config),
            ("monteclora_config", &raw.monteclora_config),
            ("arrow_config", &raw.arrow_config),
        ] {
            if is_set(value) {
                return refuse(format!(
                    "`{field}` is set: this LoRA variant is not supported"
                ));
            }
        }
        if let Some(InitWeights::Name(init)) = &raw.init_lora_weights {
            let lower = init.to_ascii_lowercase();
            let residual = ["pissa", "olora", "corda", "loftq", "lora_ga"];
            if residual.iter().any(|r| lower.starts_with(r)) {
                return refuse(format!(
                    "init_lora_weights `{init}` trains against a modified base model; convert the adapter \
                     to plain LoRA first (PEFT's save_pretrained with path_initial_model_for_weight_conversion)"
                ));
            }
        }

        let r = check_rank(path, "r", raw.r.unwrap_or(PyNumber(8.0)))?;
        let alpha = check_factor(path, "lora_alpha", raw.lora_alpha.unwrap_or(PyNumber(8.0)))?;
        let compile = |field: &str, p: &str| {
            Regex::new(p).map_err(|why| {
                Error::config(
                    path,
                    format!("`{field}`: `{p}` is not a regex athena can evaluate: {why}"),
                )
            })
        };
        // get_pattern_key: re.match(rf"(.*\.)?({key})$", name).
        let pattern_key = |field: &str, key: &str| compile(field, &format!(r"(.*\.)?({key})$"));
        let mut rank_pattern = Vec::new();
        for (key, v) in raw.rank_pattern.map(|o| o.0).unwrap_or_default() {
            let rank = check_rank(path, &format!("rank_pattern.{key}"), v)?;
            rank_pattern.push((key.clone(), pattern_key("rank_pattern", &key)?, rank));
        }
        let mut alpha_pattern = Vec::new();
        for (key, v) in raw.alpha_pattern.map(|o| o.0).unwrap_or_default() {
            let a = check_factor(path, &format!("alpha_pattern.{key}"), v)?;
            alpha_pattern.push((key.clone(), pattern_key("alpha_pattern", &key)?, a));
        }

        let spec = |field: &str, names: Option<Names>| -> Result<Option<ModuleSpec>> {
            Ok(match names {
                None => None,
                Some(Names::One(s))
                    if field == "target_modules" && s.eq_ignore_ascii_case(ALL_LINEAR) =>
                {
                    Some(ModuleSpec::AllLinear)
                }
                Some(Names::One(s)) => Some(ModuleSpec::Pattern(compile(field, &s)?)),
                Some(Names::Many(v)) => Some(ModuleSpec::List(v)),
            })
        };
        let summary = format!(
            "target_modules {}, target_parameters {}",
            match &raw.target_modules {
                None => "null".to_string(),
                Some(Names::One(s)) => format!("{s:?}"),
                Some(Names::Many(v)) => format!("{v:?}"),
            },
            match &raw.target_parameters {
                None => "null".to_string(),
                Some(v) => format!("{v:?}"),
            }
        );
        let target_modules = spec("target_modules", raw.target_modules)?;
        let exclude_modules = spec("exclude_modules", raw.exclude_modules)?;
        let layers = match raw.layers_to_transform {
            None => None,
            Some(OneOrMany::One(l)) => Some(vec![l]),
            Some(OneOrMany::Many(v)) if v.is_empty() => None,
            Some(OneOrMany::Many(v)) => Some(v),
        };
        let layers_pattern = match raw.layers_pattern {
            None => Vec::new(),
            Some(Names::One(s)) if s.is_empty() => Vec::new(),
            Some(Names::One(s)) => vec![compile("layers_pattern", &s)?],
            Some(Names::Many(v)) => v
                .iter()
                .map(|s| compile("layers_pattern", s))
                .collect::<Result<_>>()?,
        };
        if matches!(
            target_modules,
            Some(ModuleSpec::Pattern(_)) | Some(ModuleSpec::AllLinear)
        ) && layers.is_some()
        {
            return refuse(
                "`layers_to_transform` cannot be used when `target_modules` is a str \
                 (PEFT refuses it too)"
                    .into(),
            );
        }
        if !layers_pattern.is_empty() && layers.is_none() {
            return refuse("`layers_pattern` is set without `layers_to_transform`".into());
        }
        if let Some(base) = &raw.base_model_name_or_path {
            tracing::info!(base_model = %base, "PEFT adapter trained on");
        }
        Ok(PeftConfig {
            path: path.to_path_buf(),
            r,
            alpha,
            rslora: raw.use_rslora.unwrap_or(false),
            target_modules,
            target_parameters: raw.target_parameters.unwrap_or_default(),
            exclude_modules,
            layers,
            layers_pattern,
            rank_pattern,
            alpha_pattern,
            summary,
        })
    }

    /// The config file, for errors.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// What the config targets, for messages.
    pub(super) fn summary(&self) -> &str {
        &self.summary
    }

    /// PEFT's `check_target_module_exists` for a module name.
    pub(super) fn module_targeted(&self, name: &str) -> bool {
        let in_list = |list: &[String]| {
            list.iter().any(|t| {
                name == t
                    || name
                        .strip_suffix(t.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            })
        };
        match &self.exclude_modules {
            Some(ModuleSpec::Pattern(re)) if re.full_match(name) => return false,
            Some(ModuleSpec::List(list)) if in_list(list) => return false,
            _ => {}
        }
        match &self.target_modules {
            None => false,
            Some(ModuleSpec::AllLinear) => name != "lm_head" && name != "model.embed_tokens",
            Some(ModuleSpec::Pattern(re)) => re.full_match(name),
            Some(ModuleSpec::List(list)) => {
                if list.iter().any(|t| t == name) {
                    // An exact name is taken whatever layers_to_transform says.
                    return true;
                }
                if !in_list(list) {
                    return false;
                }
                match &self.layers {
                    None => true,
                    Some(layers) => self.layer_index(name).is_some_and(|l| layers.contains(&l)),
                }
            }
        }
    }

    /// PEFT's matching of `target_parameters` against a parameter name (`layers_to_transform`
    /// and `exclude_modules` do not apply to it).
    pub(super) fn param_targeted(&self, name: &str) -> bool {
        self.target_parameters.iter().any(|t| {
            name == t
                || name
                    .strip_suffix(t.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }

    /// The layer index PEFT reads from a module name for `layers_to_transform`: the first
    /// all-digit segment that follows `<segment>.` (the default), or `<layers_pattern>.`.
    fn layer_index(&self, name: &str) -> Option<i64> {
        // Positions right after each dot, where a `.<digits>.` run begins.
        let digits_after = |dot: usize| -> Option<i64> {
            let rest = &name[dot + 1..];
            let end = rest.find('.')?;
            let seg = &rest[..end];
            (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
                .then(|| seg.parse().ok())
                .flatten()
        };
        let dots: Vec<usize> = name.match_indices('.').map(|(i, _)| i).collect();
        if self.layers_pattern.is_empty() {
            // `.*?\.[^.]*\.(?P<idx>\d+)\.`: a segment preceded by a dot, then the digits.
            return dots.windows(2).find_map(|w| digits_after(w[1]));
        }
        // `(?:^|.*?\.)PATTERN\.(?P<idx>\d+)\.`: leftmost start, then the first end that fits.
        let starts = std::iter::once(0).chain(dots.iter().map(|d| d + 1));
        for start in starts {
            for &end in dots.iter().filter(|&&d| d >= start) {
                let Some(idx) = digits_after(end) else {
                    continue;
                };
                if self
                    .layers_pattern
                    .iter()
                    .any(|re| re.full_match(&name[start..end]))
                {
                    return Some(idx);
                }
            }
        }
        None
    }

    /// Rank and alpha for a module or parameter name, after `rank_pattern`/`alpha_pattern`
    /// (the first key, in file order, that matches as a dotted suffix).
    pub(super) fn rank_alpha(&self, key: &str) -> (usize, f64) {
        let r = self
            .rank_pattern
            .iter()
            .find(|(_, re, _)| re.full_match(key))
            .map_or(self.r, |p| p.2);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(_, re, _)| re.full_match(key))
            .map_or(self.alpha, |p| p.2);
        (r, alpha)
    }

    /// alpha / r, or alpha / √r with rslora.
    pub(super) fn scale(&self, r: usize, alpha: f64) -> f64 {
        if self.rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }

    /// The name whose rank and alpha apply to an attention projection or router: the
    /// parameter (`….weight`) where `target_parameters` names it, else the module.
    pub(super) fn key_for(&self, t: &LoraTarget) -> String {
        let module = t.hf_name();
        let param = format!("{module}.weight");
        if self.param_targeted(&param) {
            param
        } else {
            module
        }
    }

    /// Whether the config targets `t`: by module name (transformers 4 per-expert names) or by
    /// parameter (`….weight`, or the fused expert parameters of transformers 5).
    pub(super) fn targets(&self, t: &LoraTarget) -> bool {
        let module = t.hf_name();
        if self.module_targeted(&module) {
            return true;
        }
        match t {
            LoraTarget::Attn { .. } | LoraTarget::Router { .. } => {
                self.param_targeted(&format!("{module}.weight"))
            }
            LoraTarget::Expert { layer, proj, .. } => {
                self.param_targeted(&fused_param(*layer, *proj))
            }
        }
    }

    /// Every module of the model the config targets; zero is an error, and so is a module
    /// athena does not adapt (the embedding and the output layer).
    pub(super) fn targeted(&self, args: &OlmoeArgs) -> Result<Vec<LoraTarget>> {
        for (module, what) in [
            ("lm_head", "the output layer"),
            ("model.embed_tokens", "the embedding"),
        ] {
            if self.module_targeted(module) || self.param_targeted(&format!("{module}.weight")) {
                return Err(Error::config(
                    &self.path,
                    format!("targets `{module}` ({what}), which athena does not adapt"),
                ));
            }
        }
        let mut out = Vec::new();
        for layer in 0..args.num_hidden_layers {
            let mut all = Vec::with_capacity(5 + 3 * args.num_experts);
            all.extend(AttnProj::ALL.map(|proj| LoraTarget::Attn { layer, proj }));
            all.push(LoraTarget::Router { layer });
            for expert in 0..args.num_experts {
                all.extend(ExpertProjKind::ALL.map(|proj| LoraTarget::Expert {
                    layer,
                    expert,
                    proj,
                }));
            }
            out.extend(all.into_iter().filter(|t| self.targets(t)));
        }
        if out.is_empty() {
            return Err(Error::config(
                &self.path,
                format!(
                    "{} match zero modules of OLMoE (attention q/k/v/o_proj, router `gate`, experts \
                     gate_proj/up_proj/down_proj or the fused gate_up_proj/down_proj)",
                    self.summary
                ),
            ));
        }
        Ok(out)
    }
}

/// The transformers-5 fused parameter that holds an expert projection.
pub(super) fn fused_param(layer: usize, proj: ExpertProjKind) -> String {
    let name = match proj {
        ExpertProjKind::Gate | ExpertProjKind::Up => "gate_up_proj",
        ExpertProjKind::Down => "down_proj",
    };
    format!("model.layers.{layer}.mlp.experts.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> PeftConfig {
        let text = format!(r#"{{"peft_type": "LORA", "r": 4, "lora_alpha": 8{extra}}}"#);
        PeftConfig::parse(&text, Path::new("adapter_config.json")).unwrap()
    }

    #[test]
    fn list_targets_match_dotted_suffixes_and_layers() {
        let c = cfg(r#", "target_modules": ["q_proj", "gate"], "layers_to_transform": [1]"#);
        assert!(c.module_targeted("model.layers.1.self_attn.q_proj"));
        assert!(!c.module_targeted("model.layers.0.self_attn.q_proj"));
        assert!(c.module_targeted("model.layers.1.mlp.gate"));
        assert!(!c.module_targeted("model.layers.1.mlp.experts.0.gate_proj"));
        assert!(!c.module_targeted("model.layers.1.self_attn.xq_proj"));
        let c = cfg(r#", "target_modules": ["q_proj"], "layers_to_transform": 0"#);
        assert!(c.module_targeted("model.layers.0.self_attn.q_proj"));
        assert!(!c.module_targeted("model.layers.10.self_attn.q_proj"));
    }

    #[test]
    fn layers_pattern_and_exclusions() {
        let c = cfg(
            r#", "target_modules": ["down_proj"], "layers_to_transform": [3], "layers_pattern": "layers", "exclude_modules": ["experts.7.down_proj"]"#,
        );
        assert!(c.module_targeted("model.layers.3.mlp.experts.1.down_proj"));
        assert!(!c.module_targeted("model.layers.1.mlp.experts.3.down_proj"));
        assert!(!c.module_targeted("model.layers.3.mlp.experts.7.down_proj"));
        let c = cfg(r#", "target_modules": ".*experts\\.[0-3]\\.(gate|up)_proj""#);
        assert!(c.module_targeted("model.layers.0.mlp.experts.2.up_proj"));
        assert!(!c.module_targeted("model.layers.0.mlp.experts.4.up_proj"));
    }

    #[test]
    fn patterns_take_the_first_matching_key_in_file_order() {
        let c = cfg(
            r#", "use_rslora": true, "rank_pattern": {"v_proj": 2, "layers\\.0\\..*": 16}, "alpha_pattern": {"gate\\.weight": 3}"#,
        );
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.v_proj"), (2, 8.0));
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.q_proj"), (16, 8.0));
        assert_eq!(c.rank_alpha("model.layers.1.mlp.gate.weight"), (4, 3.0));
        assert_eq!(c.rank_alpha("model.layers.1.mlp.gate"), (4, 8.0));
        assert_eq!(c.scale(4, 8.0), 4.0);
    }

    #[test]
    fn target_parameters_ignore_layers_to_transform() {
        let c = cfg(
            r#", "target_modules": ["q_proj"], "target_parameters": ["gate_up_proj", "gate.weight"], "layers_to_transform": [1]"#,
        );
        let up0 = LoraTarget::Expert {
            layer: 0,
            expert: 4,
            proj: ExpertProjKind::Up,
        };
        assert!(c.targets(&up0));
        assert!(c.targets(&LoraTarget::Router { layer: 0 }));
        assert_eq!(
            c.key_for(&LoraTarget::Router { layer: 0 }),
            "model.layers.0.mlp.gate.weight"
        );
        let down0 = LoraTarget::Expert {
            layer: 0,
            expert: 4,
            proj: ExpertProjKind::Down,
        };
        assert!(!c.targets(&down0));
    }
}

#[cfg(test)]
mod full_size {
    use super::*;

    /// OLMoE-1B-7B's shapes: 16 layers of 64 experts, 3,152 module names to match.
    fn olmoe_7b() -> OlmoeArgs {
        OlmoeArgs::from_json(r#"{"model_type": "olmoe"}"#, Path::new("config.json")).unwrap()
    }

    #[test]
    fn regex_targets_on_a_full_size_model() {
        let text = r#"{"peft_type": "LORA",
            "target_modules": "^(?!.*lm_head).*\\.(q_proj|v_proj|[0-9]\\.down_proj)"}"#;
        let c = PeftConfig::parse(text, Path::new("adapter_config.json")).unwrap();
        assert_eq!(c.targeted(&olmoe_7b()).unwrap().len(), 16 * 2 + 16 * 10);
    }

    /// A pattern just inside the cost bound still matches every name of the model quickly
    /// (each lookahead explores the rest of the name).
    #[test]
    fn costly_patterns_stay_bounded() {
        let look = "[a-z._0-9]?".repeat(18);
        let text =
            format!(r#"{{"peft_type": "LORA", "target_modules": "(?!{look}z)model\\.layers.*"}}"#);
        let c = PeftConfig::parse(&text, Path::new("adapter_config.json")).unwrap();
        let start = std::time::Instant::now();
        assert_eq!(c.targeted(&olmoe_7b()).unwrap().len(), 16 * (5 + 64 * 3));
        // A bound that tells bounded work from a runaway search, not a speed.
        assert!(start.elapsed() < std::time::Duration::from_secs(120));
        let text = text.replace(&look, &"[a-z._0-9]?".repeat(30));
        assert!(PeftConfig::parse(&text, Path::new("adapter_config.json")).is_err());
    }
}
