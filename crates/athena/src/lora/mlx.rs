//! mlx-lm LoRA adapters: `adapter_config.json` (as `mlx_lm.lora` writes it) +
//! `adapters.safetensors`.
//!
//! The config says `fine_tune_type: "lora"`, `num_layers` (the last that many decoder layers
//! are adapted; 0 or less means all, as mlx-lm slices `layers[-max(n, 0):]`) and
//! `lora_parameters: {rank, scale, dropout, keys?}`, where `keys` are module paths inside a
//! layer (default: every linear and switch layer). Tensors are named after the module:
//! - linear layers (`self_attn.{q,k,v,o}_proj`, the router `mlp.gate`):
//!   `model.layers.L.<key>.lora_a` [in, r] and `.lora_b` [r, out], ΔW = scale · (a·b)ᵀ;
//! - experts (`mlp.switch_mlp.{gate,up,down}_proj`, `LoRASwitchLinear`):
//!   `lora_a` [E, r, in] and `lora_b` [E, out, r], `ΔW_e = scale · b[e]·a[e]`.
//!
//! The scale is absolute (mlx-lm has no alpha).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::config_text::{check_factor, check_rank, parse_config, PyNumber, CONFIG_FILE};
use super::delta::{load_f32, open_weights, LoraDelta};
use super::target::{check_indices, describe, parse_index, AttnProj, ExpertProjKind, LoraTarget};
use crate::checkpoint::{OlmoeArgs, WeightFiles};
use crate::error::{Error, Result};

/// mlx-lm's weight file.
pub const WEIGHTS_FILE: &str = "adapters.safetensors";

#[derive(Debug, Deserialize)]
struct RawParams {
    rank: Option<PyNumber>,
    scale: Option<PyNumber>,
    alpha: Option<serde::de::IgnoredAny>,
    keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    fine_tune_type: Option<String>,
    use_dora: Option<bool>,
    #[serde(alias = "lora_layers")]
    num_layers: Option<i64>,
    lora_parameters: Option<RawParams>,
    model: Option<String>,
}

/// A module path inside one decoder layer that mlx-lm's OLMoE can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Attn(AttnProj),
    Router,
    Switch(ExpertProjKind),
}

impl Key {
    fn all() -> Vec<Key> {
        let mut v: Vec<Key> = AttnProj::ALL.map(Key::Attn).to_vec();
        v.push(Key::Router);
        v.extend(ExpertProjKind::ALL.map(Key::Switch));
        v
    }

    fn path(self) -> String {
        match self {
            Key::Attn(p) => format!("self_attn.{}", p.name()),
            Key::Router => "mlp.gate".into(),
            Key::Switch(p) => format!("mlp.switch_mlp.{}", p.name()),
        }
    }

    fn parse(path: &str) -> Option<Key> {
        Key::all().into_iter().find(|k| k.path() == path)
    }
}

/// Reads the adapter in `dir`; `text` is its config, already read.
pub(super) fn load(
    dir: &Path,
    text: &str,
    config_path: &Path,
    args: &OlmoeArgs,
) -> Result<BTreeMap<LoraTarget, LoraDelta>> {
    let raw: Raw = parse_config(text, config_path)?;
    let refuse = |msg: String| Err(Error::config(config_path, msg));
    match raw.fine_tune_type.as_deref().unwrap_or("lora") {
        "lora" => {}
        "dora" => {
            return refuse(
                "fine_tune_type `dora` (DoRA) is not supported; athena applies plain LoRA".into(),
            )
        }
        "full" => {
            return refuse("fine_tune_type `full` is a full fine-tune, not a LoRA adapter".into())
        }
        other => {
            return refuse(format!(
                "fine_tune_type `{other}` is not supported (expected \"lora\")"
            ))
        }
    }
    if raw.use_dora == Some(true) {
        return refuse("use_dora: true (DoRA) is not supported; athena applies plain LoRA".into());
    }
    let Some(num_layers) = raw.num_layers else {
        return refuse("missing `num_layers`".into());
    };
    let Some(params) = raw.lora_parameters else {
        return refuse("missing `lora_parameters`".into());
    };
    let Some(rank) = params.rank else {
        return refuse("missing `lora_parameters.rank`".into());
    };
    let rank = check_rank(config_path, "lora_parameters.rank", rank)?;
    let Some(scale) = params.scale else {
        let hint = if params.alpha.is_some() {
            " (mlx-lm uses an absolute `scale`, not `alpha`)"
        } else {
            ""
        };
        return refuse(format!("missing `lora_parameters.scale`{hint}"));
    };
    let scale = check_factor(config_path, "lora_parameters.scale", scale)?;
    let keys: BTreeSet<Key> =
        match params.keys {
            None => Key::all().into_iter().collect(),
            Some(list) => {
                list.iter()
                    .map(|k| {
                        Key::parse(k).ok_or_else(|| {
                            Error::config(
                                config_path,
                                format!(
                            "lora_parameters.keys: `{k}` is not a linear layer of mlx-lm's \
                             OLMoE that athena adapts ({})",
                            Key::all().iter().map(|k| k.path()).collect::<Vec<_>>().join(", ")
                        ),
                            )
                        })
                    })
                    .collect::<Result<_>>()?
            }
        };
    if let Some(model) = &raw.model {
        tracing::info!(base_model = %model, "mlx-lm adapter trained on");
    }
    let n = args.num_hidden_layers;
    let count = usize::try_from(num_layers.max(0)).unwrap_or(0);
    let first = if count == 0 {
        0
    } else {
        n.saturating_sub(count)
    };
    let expected: BTreeSet<(usize, Key)> = (first..n)
        .flat_map(|l| keys.iter().map(move |&k| (l, k)))
        .collect();
    if expected.is_empty() {
        return refuse("lora_parameters.keys is empty: the adapter matches zero modules".into());
    }

    let weights_path = dir.join(WEIGHTS_FILE);
    let files = open_weights(&weights_path, "an mlx-lm")?;
    let mut pairs: BTreeMap<(usize, Key), (Option<String>, Option<String>)> = BTreeMap::new();
    for name in files.names() {
        let (layer, key, is_a) = parse_name(name, args)?;
        if !expected.contains(&(layer, key)) {
            return Err(Error::tensor(
                name,
                format!(
                    "`model.layers.{layer}.{}` is not adapted by {} \
                     (num_layers {num_layers}, keys {:?})",
                    key.path(),
                    config_path.display(),
                    keys.iter().map(|k| k.path()).collect::<Vec<_>>()
                ),
            ));
        }
        let pair = pairs.entry((layer, key)).or_default();
        if is_a {
            pair.0 = Some(name.to_string());
        } else {
            pair.1 = Some(name.to_string());
        }
    }
    let mut deltas = BTreeMap::new();
    for (layer, key) in &expected {
        let module = format!("model.layers.{layer}.{}", key.path());
        let (a, b) = match pairs.remove(&(*layer, *key)) {
            Some((Some(a), Some(b))) => (a, b),
            Some((Some(a), None)) => {
                return Err(Error::tensor(
                    &a,
                    format!("has no matching `{module}.lora_b`"),
                ))
            }
            Some((None, Some(b))) => {
                return Err(Error::tensor(
                    &b,
                    format!("has no matching `{module}.lora_a`"),
                ))
            }
            _ => {
                return Err(Error::checkpoint(
                    &weights_path,
                    format!(
                        "{} adapts `{module}`, but this file has no lora_a/lora_b for it",
                        CONFIG_FILE
                    ),
                ))
            }
        };
        match *key {
            Key::Attn(proj) => {
                let t = LoraTarget::Attn {
                    layer: *layer,
                    proj,
                };
                deltas.insert(t.clone(), linear(&files, args, &t, &a, &b, rank, scale)?);
            }
            Key::Router => {
                let t = LoraTarget::Router { layer: *layer };
                deltas.insert(t.clone(), linear(&files, args, &t, &a, &b, rank, scale)?);
            }
            Key::Switch(proj) => {
                deltas.extend(switch(&files, args, *layer, proj, &a, &b, rank, scale)?);
            }
        }
    }
    Ok(deltas)
}

/// `model.layers.L.<key>.lora_{a,b}` → (layer, key, is a).
fn parse_name(name: &str, args: &OlmoeArgs) -> Result<(usize, Key, bool)> {
    let bad = |msg: &str| Err(Error::tensor(name, msg.to_string()));
    let Some((module, leaf)) = name.rsplit_once('.') else {
        return bad("is not an mlx-lm LoRA tensor (`<module>.lora_a` or `.lora_b`)");
    };
    let is_a = match leaf {
        "lora_a" => true,
        "lora_b" => false,
        "m" => return bad("is a DoRA magnitude; athena applies plain LoRA"),
        _ => return bad("is not an mlx-lm LoRA tensor (`<module>.lora_a` or `.lora_b`)"),
    };
    let parsed = module.strip_prefix("model.layers.").and_then(|rest| {
        let (layer, path) = rest.split_once('.')?;
        Some((parse_index(layer)?, Key::parse(path)?))
    });
    let Some((layer, key)) = parsed else {
        return Err(Error::tensor(
            name,
            format!(
                "`{module}` is not a linear layer of mlx-lm's OLMoE that athena adapts \
                 (self_attn q/k/v/o_proj, mlp.gate, mlp.switch_mlp gate/up/down_proj)"
            ),
        ));
    };
    check_indices(&LoraTarget::Router { layer }, args, name)?;
    Ok((layer, key, is_a))
}

fn linear(
    files: &WeightFiles,
    args: &OlmoeArgs,
    t: &LoraTarget,
    a: &str,
    b: &str,
    rank: usize,
    scale: f64,
) -> Result<LoraDelta> {
    let (out, inn) = t.shape(args);
    match files.shape(a)? {
        &[i, r] if i == inn && r == rank => {}
        s => {
            return Err(Error::tensor(
                a,
                format!(
                    "shape {s:?}, expected [{inn}, {rank}] (in, rank) for {}",
                    describe(t, args)
                ),
            ))
        }
    }
    match files.shape(b)? {
        &[r, o] if r == rank && o == out => {}
        s => {
            return Err(Error::tensor(
                b,
                format!(
                    "shape {s:?}, expected [{rank}, {out}] (rank, out) for {}",
                    describe(t, args)
                ),
            ))
        }
    }
    Ok(LoraDelta {
        a: load_f32(files, a)?.t()?.contiguous()?,
        b: load_f32(files, b)?.t()?.contiguous()?,
        scale,
    })
}

#[allow(clippy::too_many_arguments)]
fn switch(
    files: &WeightFiles,
    args: &OlmoeArgs,
    layer: usize,
    proj: ExpertProjKind,
    a: &str,
    b: &str,
    rank: usize,
    scale: f64,
) -> Result<Vec<(LoraTarget, LoraDelta)>> {
    let e = args.num_experts;
    let t0 = LoraTarget::Expert {
        layer,
        expert: 0,
        proj,
    };
    let (out, inn) = t0.shape(args);
    let what = format!(
        "`model.layers.{layer}.mlp.switch_mlp.{}` stacks {e} experts of [{out}, {inn}]",
        proj.name()
    );
    match files.shape(a)? {
        &[n, r, i] if n == e && r == rank && i == inn => {}
        s => {
            return Err(Error::tensor(
                a,
                format!("shape {s:?}, expected [{e}, {rank}, {inn}] (experts, rank, in); {what}"),
            ))
        }
    }
    match files.shape(b)? {
        &[n, o, r] if n == e && o == out && r == rank => {}
        s => {
            return Err(Error::tensor(
                b,
                format!("shape {s:?}, expected [{e}, {out}, {rank}] (experts, out, rank); {what}"),
            ))
        }
    }
    let a3 = load_f32(files, a)?;
    let b3 = load_f32(files, b)?;
    (0..e)
        .map(|expert| {
            Ok((
                LoraTarget::Expert {
                    layer,
                    expert,
                    proj,
                },
                LoraDelta {
                    a: a3.get(expert)?.contiguous()?,
                    b: b3.get(expert)?.contiguous()?,
                    scale,
                },
            ))
        })
        .collect()
}
