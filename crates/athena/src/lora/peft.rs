//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`.
//!
//! Tensor names are `base_model.model.<module>.lora_A.weight` [r, in] and
//! `….lora_B.weight` [out, r] (some writers keep the adapter name: `….lora_A.default.weight`),
//! with ΔW = scale · B·A and scale = alpha / r, or alpha / √r with `use_rslora`; `rank_pattern`
//! and `alpha_pattern` override r and alpha per module.
//!
//! What PEFT writes for OLMoE's experts depends on the transformers version it ran with:
//! - transformers 4 (experts are `nn.Linear` modules):
//!   `…mlp.experts.{e}.{gate,up,down}_proj.lora_{A,B}.weight`, one pair per expert; the router
//!   `…mlp.gate.lora_{A,B}.weight`.
//! - transformers 5 (experts fused into `mlp.experts.gate_up_proj` [E, 2I, H] and
//!   `mlp.experts.down_proj` [E, H, I]; the router a custom module with a `weight`):
//!   PEFT 0.21 rewrites the targets `gate`, `gate_proj`, `up_proj` and `down_proj` into
//!   `target_parameters: ["gate.weight", "gate_up_proj", "down_proj"]` (with rank_pattern and
//!   alpha_pattern `.*\.gate_up_proj` = 2r and 2·alpha) and wraps each parameter in a
//!   `ParamWrapper`. Wrappers on one module nest, the later outside, so with both expert
//!   parameters targeted the file holds `…mlp.experts.lora_{A,B}.weight` (down_proj) and
//!   `…mlp.experts.base_layer.lora_{A,B}.weight` (gate_up_proj). For a parameter [E, out, in]
//!   A is [E·r, in] with expert-major rows (e·r + k) and B is [out, r·E] with rank-major
//!   columns (k·E + e): `ΔW_e = scale · B[:, k·E + e] · A[e·r + k, :]`. The router's pair has
//!   the usual [r, H] and [E, r] shapes. Which parameter a pair adapts is read from its
//!   shapes (gate_up_proj: A [·, H], B [2I, ·]; down_proj: A [·, I], B [H, ·], never both).
//!
//! Rank and alpha patterns match the module name for module LoRA and the parameter name
//! (`model.layers.0.mlp.experts.gate_up_proj`, `model.layers.0.mlp.gate.weight`) for
//! parameter LoRA, as in PEFT; `layers_to_transform` restricts module targets only.
//! Per-expert tensors keep the rules they were trained under (transformers 4): patterns match
//! `…experts.{e}.gate_proj` and the scale is alpha / r (alpha / √r). PEFT 0.21 itself loads
//! them by stacking gate and up into one rank-2r adapter with alpha doubled, which keeps
//! alpha / r but, with rslora, scales gate and up √2 higher than trained.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use super::config_text::CONFIG_FILE;
use super::delta::{load_f32, open_weights, LoraDelta};
use super::peft_config::{fused_param, PeftConfig};
use super::target::{check_indices, describe, parse_index, ExpertProjKind, LoraTarget};
use crate::checkpoint::{OlmoeArgs, WeightFiles};
use crate::error::{Error, Result};

/// PEFT's weight file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before module names.
const PREFIX: &str = "base_model.model.";

/// Where a pair of tensors applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Site {
    /// A linear module: attention, router, or one expert's projection (transformers 4).
    Module(LoraTarget),
    /// A `ParamWrapper` on `mlp.experts` (transformers 5), `depth` wrappers deep.
    Fused { layer: usize, depth: usize },
}

/// The lora_A and lora_B tensor names of one site.
#[derive(Debug, Default)]
struct Pair {
    a: Option<String>,
    b: Option<String>,
}

/// Reads the adapter in `dir`; `text` is its config, already read.
pub(super) fn load(
    dir: &Path,
    text: &str,
    config_path: &Path,
    args: &OlmoeArgs,
) -> Result<BTreeMap<LoraTarget, LoraDelta>> {
    let cfg = PeftConfig::parse(text, config_path)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.is_file() && dir.join("adapter_model.bin").is_file() {
        return Err(Error::checkpoint(
            dir.join("adapter_model.bin"),
            "pickled PyTorch weights are not read; save the adapter with safe_serialization=True",
        ));
    }
    let expected = cfg.targeted(args)?;
    let files = open_weights(&weights_path, "a PEFT")?;
    let pairs = collect_pairs(&files, args)?;

    let mut deltas = BTreeMap::new();
    let mut fused: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    for (site, pair) in pairs {
        let (a, b) = complete(pair)?;
        match site {
            Site::Module(t) => {
                let delta = module_delta(&files, &cfg, args, &t, &a, &b)?;
                insert(&mut deltas, t, delta, &a)?;
            }
            Site::Fused { layer, .. } => fused.entry(layer).or_default().push((a, b)),
        }
    }
    for (layer, pairs) in fused {
        let mut seen: BTreeMap<&'static str, String> = BTreeMap::new();
        for (a, b) in &pairs {
            let param = fused_kind(&files, args, a, b)?;
            if let Some(prev) = seen.insert(param.name(), a.clone()) {
                return Err(Error::tensor(
                    a,
                    format!(
                        "a second adapter for `{}` (first: `{prev}`)",
                        fused_param(layer, param.proj())
                    ),
                ));
            }
            for (t, delta) in fused_deltas(&files, &cfg, args, layer, param, a, b)? {
                insert(&mut deltas, t, delta, a)?;
            }
        }
    }

    for t in &expected {
        if !deltas.contains_key(t) {
            return Err(Error::checkpoint(
                &weights_path,
                format!(
                    "{} targets `{}` ({}), but this file has no lora_A/lora_B for it",
                    CONFIG_FILE,
                    t.hf_name(),
                    cfg.summary()
                ),
            ));
        }
    }
    if deltas.is_empty() {
        return Err(Error::checkpoint(
            &weights_path,
            "holds no LoRA tensors: the adapter matches zero modules",
        ));
    }
    Ok(deltas)
}

fn insert(
    deltas: &mut BTreeMap<LoraTarget, LoraDelta>,
    t: LoraTarget,
    delta: LoraDelta,
    tensor: &str,
) -> Result<()> {
    let name = t.hf_name();
    if deltas.insert(t, delta).is_some() {
        return Err(Error::tensor(
            tensor,
            format!("`{name}` is adapted twice (per-expert and fused tensors?)"),
        ));
    }
    Ok(())
}

/// Groups the file's tensors by site, refusing anything that is not a LoRA pair on a module
/// athena adapts.
fn collect_pairs(files: &WeightFiles, args: &OlmoeArgs) -> Result<BTreeMap<Site, Pair>> {
    let mut pairs: BTreeMap<Site, Pair> = BTreeMap::new();
    let mut adapter_names: BTreeMap<Option<String>, String> = BTreeMap::new();
    for key in files.names() {
        let (site, is_a, adapter) = parse_key(key, args)?;
        adapter_names
            .entry(adapter)
            .or_insert_with(|| key.to_string());
        if adapter_names.len() > 1 {
            let names: Vec<_> = adapter_names.values().cloned().collect();
            return Err(Error::tensor(
                key,
                format!("the file mixes tensors of several adapters ({names:?}); athena loads one"),
            ));
        }
        let pair = pairs.entry(site).or_default();
        let slot = if is_a { &mut pair.a } else { &mut pair.b };
        if let Some(prev) = slot.replace(key.to_string()) {
            return Err(Error::tensor(
                key,
                format!("duplicates `{prev}` (the same module twice)"),
            ));
        }
    }
    Ok(pairs)
}

/// Both halves of a pair, or an error naming the one that is alone.
fn complete(pair: Pair) -> Result<(String, String)> {
    match (pair.a, pair.b) {
        (Some(a), Some(b)) => Ok((a, b)),
        (Some(a), None) => Err(Error::tensor(
            &a,
            format!("has no matching `{}`", a.replace("lora_A", "lora_B")),
        )),
        (None, Some(b)) => Err(Error::tensor(
            &b,
            format!("has no matching `{}`", b.replace("lora_B", "lora_A")),
        )),
        (None, None) => Err(Error::invalid("LoRA pair", "empty pair")),
    }
}

/// `base_model.model.<module>.lora_{A,B}[.<adapter>].weight` → (site, is A, adapter name).
fn parse_key(key: &str, args: &OlmoeArgs) -> Result<(Site, bool, Option<String>)> {
    let bad = |msg: String| Err(Error::tensor(key, msg));
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return bad(format!(
            "does not start with `{PREFIX}`: not a tensor of a PEFT adapter"
        ));
    };
    let segs: Vec<&str> = rest.split('.').collect();
    let Some(i) = segs.iter().rposition(|s| *s == "lora_A" || *s == "lora_B") else {
        if segs.contains(&"lora_magnitude_vector") {
            return bad("is a DoRA magnitude (use_dora); athena applies plain LoRA".into());
        }
        if segs.iter().any(|s| s.starts_with("lora_embedding_")) {
            return bad("is an embedding LoRA; athena does not adapt the embedding".into());
        }
        return bad(
            "is not a lora_A/lora_B weight (a full module from modules_to_save, \
                    or another PEFT method?)"
                .into(),
        );
    };
    let adapter = match &segs[i + 1..] {
        ["weight"] => None,
        [name, "weight"] => Some(name.to_string()),
        ["bias"] | [_, "bias"] => {
            return bad("is a bias of lora_B (lora_bias); athena reads lora_bias: false".into())
        }
        _ => return bad("is not a `.weight` of lora_A/lora_B".into()),
    };
    let module = segs[..i].join(".");
    let site = parse_module(&module).ok_or_else(|| {
        let what = match module.as_str() {
            "lm_head" => "the output layer, which athena does not adapt".to_string(),
            "model.embed_tokens" => "the embedding, which athena does not adapt".to_string(),
            m => format!(
                "`{m}` is not a linear module of OLMoE that athena adapts (attention \
                     q/k/v/o_proj, router mlp.gate, experts)"
            ),
        };
        Error::tensor(key, what)
    })?;
    match &site {
        Site::Module(t) => check_indices(t, args, key)?,
        Site::Fused { layer, .. } => {
            check_indices(&LoraTarget::Router { layer: *layer }, args, key)?
        }
    }
    Ok((site, segs[i] == "lora_A", adapter))
}

fn parse_module(module: &str) -> Option<Site> {
    if let Some(t) = LoraTarget::from_hf_name(module) {
        return Some(Site::Module(t));
    }
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = parse_index(layer)?;
    let mut segs = rest.split('.');
    if segs.next()? != "mlp" || segs.next()? != "experts" {
        return None;
    }
    let mut depth = 0;
    for s in segs {
        if s != "base_layer" {
            return None;
        }
        depth += 1;
    }
    Some(Site::Fused { layer, depth })
}

/// Checks a linear module's pair against the model and the config and loads it.
fn module_delta(
    files: &WeightFiles,
    cfg: &PeftConfig,
    args: &OlmoeArgs,
    t: &LoraTarget,
    a: &str,
    b: &str,
) -> Result<LoraDelta> {
    if !cfg.targets(t) {
        return Err(Error::tensor(
            a,
            format!(
                "`{}` is not targeted by {} ({})",
                t.hf_name(),
                cfg.path().display(),
                cfg.summary()
            ),
        ));
    }
    let (out, inn) = t.shape(args);
    let r = match files.shape(a)? {
        &[r, i] if i == inn => r,
        s => {
            return Err(Error::tensor(
                a,
                format!("shape {s:?}, expected [r, {inn}] for {}", describe(t, args)),
            ))
        }
    };
    match files.shape(b)? {
        &[o, rb] if o == out && rb == r => {}
        &[o, rb] if o == out => {
            return Err(Error::tensor(
                b,
                format!("rank {rb} does not match rank {r} of `{a}`"),
            ))
        }
        s => {
            return Err(Error::tensor(
                b,
                format!(
                    "shape {s:?}, expected [{out}, {r}] for {}",
                    describe(t, args)
                ),
            ))
        }
    }
    // Per-expert modules keep transformers 4's rules: patterns match the module name.
    let key = match t {
        LoraTarget::Expert { .. } => t.hf_name(),
        _ => cfg.key_for(t),
    };
    let (r_cfg, alpha) = cfg.rank_alpha(&key);
    if r != r_cfg {
        return Err(Error::tensor(
            a,
            format!(
                "rank {r}, but {} gives r = {r_cfg} for `{key}`",
                cfg.path().display()
            ),
        ));
    }
    Ok(LoraDelta {
        a: load_f32(files, a)?,
        b: load_f32(files, b)?,
        scale: cfg.scale(r_cfg, alpha),
    })
}

/// The fused expert parameter a transformers-5 pair adapts.
#[derive(Debug, Clone, Copy)]
enum FusedParam {
    GateUp,
    Down,
}

impl FusedParam {
    fn name(self) -> &'static str {
        match self {
            FusedParam::GateUp => "gate_up_proj",
            FusedParam::Down => "down_proj",
        }
    }
    fn proj(self) -> ExpertProjKind {
        match self {
            FusedParam::GateUp => ExpertProjKind::Gate,
            FusedParam::Down => ExpertProjKind::Down,
        }
    }
}

/// Tells gate_up_proj from down_proj by the pair's shapes.
fn fused_kind(files: &WeightFiles, args: &OlmoeArgs, a: &str, b: &str) -> Result<FusedParam> {
    let (h, i, e) = (args.hidden_size, args.intermediate_size, args.num_experts);
    let sa = files.shape(a)?;
    let sb = files.shape(b)?;
    let (&[_, inn], &[out, _]) = (sa, sb) else {
        return Err(Error::tensor(
            a,
            format!("shapes {sa:?} and {sb:?} of lora_A and lora_B are not matrices"),
        ));
    };
    if inn == h && out == 2 * i {
        Ok(FusedParam::GateUp)
    } else if inn == i && out == h {
        Ok(FusedParam::Down)
    } else {
        Err(Error::tensor(
            a,
            format!(
                "shape {sa:?} (lora_B {sb:?}) fits neither fused expert parameter of this model: \
                 gate_up_proj [{e}, {}, {h}] wants lora_A [{e}·r, {h}] and lora_B [{}, r·{e}], \
                 down_proj [{e}, {h}, {i}] wants lora_A [{e}·r, {i}] and lora_B [{h}, r·{e}]",
                2 * i,
                2 * i
            ),
        ))
    }
}

/// Splits a fused pair into per-expert deltas.
fn fused_deltas(
    files: &WeightFiles,
    cfg: &PeftConfig,
    args: &OlmoeArgs,
    layer: usize,
    param: FusedParam,
    a: &str,
    b: &str,
) -> Result<Vec<(LoraTarget, LoraDelta)>> {
    let n_exp = args.num_experts;
    let key = fused_param(layer, param.proj());
    if !cfg.param_targeted(&key) {
        return Err(Error::tensor(
            a,
            format!(
                "adapts `{key}`, which {} does not target ({})",
                cfg.path().display(),
                cfg.summary()
            ),
        ));
    }
    let (rows, inn) = match files.shape(a)? {
        &[rows, inn] => (rows, inn),
        s => return Err(Error::tensor(a, format!("shape {s:?} is not a matrix"))),
    };
    let (out, cols) = match files.shape(b)? {
        &[out, cols] => (out, cols),
        s => return Err(Error::tensor(b, format!("shape {s:?} is not a matrix"))),
    };
    if rows == 0 || rows % n_exp != 0 {
        return Err(Error::tensor(
            a,
            format!("{rows} rows are not a positive multiple of {n_exp} experts (E·r) for `{key}`"),
        ));
    }
    if cols != rows {
        return Err(Error::tensor(
            b,
            format!("{cols} columns do not match the {rows} rows (E·r) of `{a}`"),
        ));
    }
    let r = rows / n_exp;
    let (r_cfg, alpha) = cfg.rank_alpha(&key);
    if r != r_cfg {
        return Err(Error::tensor(
            a,
            format!(
                "rank {r} ({rows} rows over {n_exp} experts), but {} gives r = {r_cfg} for `{key}`",
                cfg.path().display()
            ),
        ));
    }
    let scale = cfg.scale(r, alpha);
    // A: rows e·r + k → [E, r, in]; B: columns k·E + e → [out, r, E].
    let a3 = load_f32(files, a)?.reshape((n_exp, r, inn))?;
    let b3 = load_f32(files, b)?.reshape((out, r, n_exp))?;
    let inter = args.intermediate_size;
    let mut deltas = Vec::with_capacity(2 * n_exp);
    for expert in 0..n_exp {
        let a_e = a3.get(expert)?.contiguous()?;
        let b_e = b3.narrow(2, expert, 1)?.squeeze(2)?;
        let mut push = |proj: ExpertProjKind, b: Tensor| -> Result<()> {
            let t = LoraTarget::Expert {
                layer,
                expert,
                proj,
            };
            deltas.push((
                t,
                LoraDelta {
                    a: a_e.clone(),
                    b: b.contiguous()?,
                    scale,
                },
            ));
            Ok(())
        };
        match param {
            FusedParam::GateUp => {
                push(ExpertProjKind::Gate, b_e.narrow(0, 0, inter)?)?;
                push(ExpertProjKind::Up, b_e.narrow(0, inter, inter)?)?;
            }
            FusedParam::Down => push(ExpertProjKind::Down, b_e)?,
        }
    }
    Ok(deltas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::AttnProj;

    #[test]
    fn module_names_parse_to_sites() {
        assert_eq!(
            parse_module("model.layers.2.self_attn.k_proj"),
            Some(Site::Module(LoraTarget::Attn {
                layer: 2,
                proj: AttnProj::K
            }))
        );
        assert_eq!(
            parse_module("model.layers.1.mlp.experts.base_layer.base_layer"),
            Some(Site::Fused { layer: 1, depth: 2 })
        );
        assert_eq!(
            parse_module("model.layers.1.mlp.experts"),
            Some(Site::Fused { layer: 1, depth: 0 })
        );
        assert_eq!(parse_module("model.layers.1.mlp.experts.x"), None);
        assert_eq!(parse_module("model.layers.1.mlp"), None);
        assert_eq!(parse_module("lm_head"), None);
    }
}
