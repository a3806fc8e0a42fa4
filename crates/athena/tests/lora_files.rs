//! LoRA adapters as PEFT and mlx-lm write them (fixtures/lora, made by
//! scripts/make_lora_fixtures.py): each loads into the expected per-module deltas with the
//! expected scales, each delta reproduces the library's own merge (merged − base weight), and
//! adapters that are broken in one way each are refused with an error that names the field,
//! file or tensor at fault.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use athena::checkpoint::OlmoeArgs;
use athena::lora::{AdapterFormat, AttnProj, ExpertProjKind, LoraAdapter, LoraTarget};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tempfile::TempDir;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn args() -> OlmoeArgs {
    OlmoeArgs::from_file(&fixtures().join("models/base/config.json")).unwrap()
}

fn load(dir: &Path) -> athena::Result<LoraAdapter> {
    LoraAdapter::load(dir, &args(), &Device::Cpu)
}

fn fixture(name: &str) -> LoraAdapter {
    load(&fixtures().join("lora").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn attn(layer: usize, proj: AttnProj) -> LoraTarget {
    LoraTarget::Attn { layer, proj }
}

fn expert(layer: usize, expert: usize, proj: ExpertProjKind) -> LoraTarget {
    LoraTarget::Expert {
        layer,
        expert,
        proj,
    }
}

fn all_experts(layers: &[usize]) -> Vec<LoraTarget> {
    let mut v = Vec::new();
    for &l in layers {
        for e in 0..8 {
            for p in ExpertProjKind::ALL {
                v.push(expert(l, e, p));
            }
        }
    }
    v
}

fn targets(a: &LoraAdapter) -> BTreeSet<LoraTarget> {
    a.deltas.keys().cloned().collect()
}

fn assert_close(x: f64, y: f64, what: &str) {
    assert!((x - y).abs() < 1e-12, "{what}: {x} != {y}");
}

#[test]
fn peft_attention_adapter() {
    let a = fixture("peft_attn");
    assert_eq!(a.format, AdapterFormat::Peft);
    let want: BTreeSet<_> = [0, 1]
        .into_iter()
        .flat_map(|l| AttnProj::ALL.map(|p| attn(l, p)))
        .collect();
    assert_eq!(targets(&a), want);
    assert_eq!(a.len(), 8);
    assert!(!a.is_empty());
    for (t, d) in &a.deltas {
        assert_close(d.scale, 8.0 / 4.0, &t.hf_name());
        assert_eq!(d.rank(), 4);
        assert_eq!(d.a.dims(), &[4, 64]);
        assert_eq!(d.b.dims(), &[64, 4]);
        assert_eq!(d.a.dtype(), DType::F32);
    }
}

/// rslora, rank and alpha patterns, layers_to_transform, router and fused experts.
#[test]
fn peft_attention_router_and_fused_experts() {
    let a = fixture("peft_all");
    let mut want: BTreeSet<_> = AttnProj::ALL.map(|p| attn(1, p)).into_iter().collect();
    want.extend([
        LoraTarget::Router { layer: 0 },
        LoraTarget::Router { layer: 1 },
    ]);
    want.extend(all_experts(&[0, 1]));
    assert_eq!(
        targets(&a),
        want,
        "layers_to_transform [1] limits attention only"
    );
    assert_eq!(a.len(), 54);
    let rs = |alpha: f64, r: f64| alpha / r.sqrt();
    for (t, d) in &a.deltas {
        let (r, scale) = match t {
            LoraTarget::Attn {
                proj: AttnProj::V, ..
            } => (2, rs(8.0, 2.0)), // rank_pattern v_proj: 2
            LoraTarget::Attn {
                proj: AttnProj::O, ..
            } => (4, rs(16.0, 4.0)), // alpha_pattern o_proj: 16
            LoraTarget::Attn { .. } => (4, rs(8.0, 4.0)),
            LoraTarget::Router { .. } => (4, rs(2.0, 4.0)), // alpha_pattern gate\.weight: 2
            LoraTarget::Expert {
                proj: ExpertProjKind::Gate | ExpertProjKind::Up,
                ..
            } => (8, rs(16.0, 8.0)), // PEFT's own .*\.gate_up_proj: 2r, 2 alpha
            LoraTarget::Expert {
                layer: 0,
                proj: ExpertProjKind::Down,
                ..
            } => (2, rs(8.0, 2.0)), // rank_pattern layers\.0\.mlp\.experts\.down_proj: 2
            LoraTarget::Expert { .. } => (4, rs(8.0, 4.0)),
        };
        assert_eq!(d.rank(), r, "{}", t.hf_name());
        assert_close(d.scale, scale, &t.hf_name());
        let (out, inn) = t.shape(&args());
        assert_eq!(d.delta_weight().unwrap().dims(), &[out, inn]);
    }
}

#[test]
fn peft_per_expert_layout_of_transformers_4() {
    let a = fixture("peft_v4_experts");
    let mut want: BTreeSet<_> = [attn(0, AttnProj::Q), attn(1, AttnProj::Q)].into();
    want.extend([
        LoraTarget::Router { layer: 0 },
        LoraTarget::Router { layer: 1 },
    ]);
    want.extend(all_experts(&[0, 1]));
    assert_eq!(targets(&a), want);
    for (t, d) in &a.deltas {
        let scale = if matches!(t, LoraTarget::Attn { .. }) {
            16.0 / 4.0
        } else {
            8.0 / 4.0
        };
        assert_close(d.scale, scale, &t.hf_name());
        assert_eq!(d.rank(), 4);
    }
}

#[test]
fn mlx_attention_adapter() {
    let a = fixture("mlx_attn");
    assert_eq!(a.format, AdapterFormat::MlxLm);
    let want: BTreeSet<_> = [0, 1]
        .into_iter()
        .flat_map(|l| AttnProj::ALL.map(|p| attn(l, p)))
        .collect();
    assert_eq!(targets(&a), want);
    for d in a.deltas.values() {
        assert_close(d.scale, 10.0, "scale");
        assert_eq!(d.a.dims(), &[4, 64]);
        assert_eq!(d.b.dims(), &[64, 4]);
    }
}

#[test]
fn mlx_default_keys_on_the_last_layer() {
    let a = fixture("mlx_all");
    let mut want: BTreeSet<_> = AttnProj::ALL.map(|p| attn(1, p)).into_iter().collect();
    want.insert(LoraTarget::Router { layer: 1 });
    want.extend(all_experts(&[1]));
    assert_eq!(targets(&a), want, "num_layers 1 is the last layer");
    for d in a.deltas.values() {
        assert_close(d.scale, 5.0, "scale");
        assert_eq!(d.rank(), 2);
    }
}

/// scale · B·A equals the library's merged weight minus the base weight.
#[test]
fn deltas_reproduce_the_libraries_merges() {
    for name in [
        "peft_attn",
        "peft_all",
        "peft_v4_experts",
        "mlx_attn",
        "mlx_all",
    ] {
        let dir = fixtures().join("lora").join(name);
        let adapter = fixture(name);
        let reference =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        let mut checked = 0;
        for (key, want) in &reference {
            let Some(module) = key.strip_prefix("delta.") else {
                continue;
            };
            let t = LoraTarget::from_hf_name(module).unwrap();
            let got = adapter
                .get(&t)
                .unwrap_or_else(|| panic!("{name}: no delta for {module}"))
                .delta_weight()
                .unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-6, "{name}: {module} differs by {diff}");
            checked += 1;
        }
        assert!(checked >= 2, "{name}: only {checked} deltas checked");
    }
}

// ---------------------------------------------------------------------------
// Broken adapters
// ---------------------------------------------------------------------------

/// A copy of a fixture adapter (config and weights) in a temporary directory.
struct Scratch {
    dir: TempDir,
    weights: &'static str,
}

impl Scratch {
    fn of(name: &str) -> Scratch {
        let dir = TempDir::new().unwrap();
        let src = fixtures().join("lora").join(name);
        let weights = if src.join("adapters.safetensors").is_file() {
            "adapters.safetensors"
        } else {
            "adapter_model.safetensors"
        };
        for f in ["adapter_config.json", weights] {
            fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        Scratch { dir, weights }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn edit_config(&self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> &Self {
        let p = self.path().join("adapter_config.json");
        let mut v: Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        f(v.as_object_mut().unwrap());
        fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        self
    }

    fn replace_in_config(&self, from: &str, to: &str) -> &Self {
        let p = self.path().join("adapter_config.json");
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from} not in config");
        fs::write(&p, text.replacen(from, to, 1)).unwrap();
        self
    }

    fn edit_tensors(&self, f: impl FnOnce(&mut HashMap<String, Tensor>)) -> &Self {
        let p = self.path().join(self.weights);
        let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        f(&mut t);
        candle_core::safetensors::save(&t, &p).unwrap();
        self
    }

    fn error(&self) -> String {
        match load(self.path()) {
            Ok(a) => panic!("loaded {} deltas instead of failing", a.len()),
            Err(e) => e.to_string(),
        }
    }
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "`{p}` not in error: {err}");
    }
}

const Q0_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const Q0_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn refuses_options_it_does_not_implement_by_name() {
    let cases: [(&str, Value, &[&str]); 7] = [
        ("use_dora", Value::Bool(true), &["use_dora", "DoRA"]),
        ("bias", Value::from("all"), &["bias `all`"]),
        ("lora_bias", Value::Bool(true), &["lora_bias"]),
        (
            "modules_to_save",
            serde_json::json!(["lm_head"]),
            &["modules_to_save"],
        ),
        ("fan_in_fan_out", Value::Bool(true), &["fan_in_fan_out"]),
        ("peft_type", Value::from("IA3"), &["peft_type `IA3`"]),
        (
            "init_lora_weights",
            Value::from("pissa_niter_4"),
            &["init_lora_weights `pissa_niter_4`"],
        ),
    ];
    for (field, value, parts) in cases {
        let s = Scratch::of("peft_attn");
        s.edit_config(|c| {
            c.insert(field.into(), value);
        });
        let err = s.error();
        assert_mentions(&err, parts);
        assert_mentions(&err, &["adapter_config.json"]);
    }
}

#[test]
fn refuses_a_rank_that_lora_a_and_lora_b_disagree_on() {
    let s = Scratch::of("peft_attn");
    s.edit_tensors(|t| {
        t.insert(Q0_B.into(), zeros(&[64, 3]));
    });
    assert_mentions(&s.error(), &[Q0_B, "rank 3", "rank 4"]);
}

#[test]
fn refuses_a_rank_other_than_the_configs() {
    let s = Scratch::of("peft_attn");
    s.edit_config(|c| {
        c.insert("r".into(), 8.into());
    });
    assert_mentions(&s.error(), &[Q0_A, "rank 4", "r = 8"]);
}

#[test]
fn refuses_shapes_of_another_architecture() {
    let s = Scratch::of("peft_attn");
    s.edit_tensors(|t| {
        t.insert(Q0_A.into(), zeros(&[4, 128]));
    });
    assert_mentions(
        &s.error(),
        &[Q0_A, "[4, 128]", "model.layers.0.self_attn.q_proj"],
    );

    // A fused expert pair that fits neither gate_up_proj nor down_proj.
    let s = Scratch::of("peft_all");
    let a = "base_model.model.model.layers.0.mlp.experts.lora_A.weight";
    s.edit_tensors(|t| {
        t.insert(a.into(), zeros(&[16, 48]));
    });
    assert_mentions(&s.error(), &[a, "fits neither"]);
}

#[test]
fn refuses_zero_or_non_finite_rank_and_alpha() {
    let s = Scratch::of("peft_attn");
    s.edit_config(|c| {
        c.insert("r".into(), 0.into());
    });
    assert_mentions(&s.error(), &["`r` = 0", "adapter_config.json"]);

    for word in ["NaN", "Infinity", "-Infinity"] {
        let s = Scratch::of("peft_attn");
        s.replace_in_config("\"lora_alpha\": 8", &format!("\"lora_alpha\": {word}"));
        assert_mentions(&s.error(), &["lora_alpha", "not finite"]);
    }
    let s = Scratch::of("peft_attn");
    s.edit_config(|c| {
        c.insert("lora_alpha".into(), 0.into());
    });
    assert_mentions(&s.error(), &["lora_alpha", "= 0"]);

    let s = Scratch::of("peft_all");
    s.replace_in_config("\"v_proj\": 2", "\"v_proj\": 0");
    assert_mentions(&s.error(), &["rank_pattern.v_proj"]);

    let s = Scratch::of("mlx_attn");
    s.replace_in_config("\"scale\": 10.0", "\"scale\": NaN");
    assert_mentions(&s.error(), &["lora_parameters.scale", "not finite"]);
    let s = Scratch::of("mlx_attn");
    s.replace_in_config("\"rank\": 4", "\"rank\": 0");
    assert_mentions(&s.error(), &["lora_parameters.rank"]);
}

#[test]
fn refuses_an_adapter_that_matches_zero_modules() {
    let s = Scratch::of("peft_attn");
    s.edit_config(|c| {
        c.insert("target_modules".into(), serde_json::json!(["nonexistent"]));
    })
    .edit_tensors(|t| t.clear());
    assert_mentions(&s.error(), &["match zero modules", "nonexistent"]);

    // A config that targets modules while the file holds nothing for them.
    let s = Scratch::of("peft_attn");
    s.edit_tensors(|t| t.clear());
    assert_mentions(
        &s.error(),
        &["adapter_model.safetensors", "no lora_A/lora_B"],
    );

    let s = Scratch::of("mlx_attn");
    s.edit_config(|c| {
        c["lora_parameters"]["keys"] = serde_json::json!([]);
    });
    assert_mentions(&s.error(), &["zero modules"]);
}

#[test]
fn refuses_unknown_modules_naming_the_tensor() {
    for key in [
        "base_model.model.model.layers.0.self_attn.q_norm.lora_A.weight",
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.model.layers.0.mlp.experts.0.w1.lora_A.weight",
    ] {
        let s = Scratch::of("peft_attn");
        s.edit_tensors(|t| {
            t.insert(key.into(), zeros(&[4, 64]));
        });
        assert_mentions(&s.error(), &[key]);
    }
    let s = Scratch::of("peft_attn");
    let full = "base_model.model.model.layers.0.self_attn.q_proj.weight";
    s.edit_tensors(|t| {
        t.insert(full.into(), zeros(&[64, 64]));
    });
    assert_mentions(&s.error(), &[full, "not a lora_A/lora_B"]);

    let s = Scratch::of("mlx_attn");
    let key = "model.layers.0.self_attn.q_norm.lora_a";
    s.edit_tensors(|t| {
        t.insert(key.into(), zeros(&[64, 4]));
    });
    assert_mentions(&s.error(), &[key, "not a linear layer"]);
}

#[test]
fn refuses_a_without_b() {
    let s = Scratch::of("peft_attn");
    s.edit_tensors(|t| {
        t.remove(Q0_B);
    });
    assert_mentions(&s.error(), &[Q0_A, "no matching", Q0_B]);

    let s = Scratch::of("mlx_attn");
    s.edit_tensors(|t| {
        t.remove("model.layers.1.self_attn.o_proj.lora_a");
    });
    assert_mentions(
        &s.error(),
        &["model.layers.1.self_attn.o_proj.lora_b", "no matching"],
    );
}

#[test]
fn refuses_modules_the_config_does_not_target() {
    // peft_all adapts attention in layer 1 only (layers_to_transform [1]).
    let s = Scratch::of("peft_all");
    s.edit_tensors(|t| {
        t.insert(Q0_A.into(), zeros(&[4, 64]));
        t.insert(Q0_B.into(), zeros(&[64, 4]));
    });
    assert_mentions(&s.error(), &[Q0_A, "not targeted"]);

    // mlx_all adapts the last layer only (num_layers 1).
    let s = Scratch::of("mlx_all");
    let key = "model.layers.0.mlp.gate.lora_a";
    s.edit_tensors(|t| {
        t.insert(key.into(), zeros(&[64, 2]));
    });
    assert_mentions(&s.error(), &[key, "num_layers 1"]);
}

#[test]
fn refuses_layers_and_experts_past_the_model() {
    let s = Scratch::of("peft_attn");
    let key = "base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight";
    s.edit_tensors(|t| {
        t.insert(key.into(), zeros(&[4, 64]));
    });
    assert_mentions(&s.error(), &[key, "layer 5", "2 layers"]);

    let s = Scratch::of("peft_v4_experts");
    let key = "base_model.model.model.layers.0.mlp.experts.8.up_proj.lora_A.weight";
    s.edit_tensors(|t| {
        t.insert(key.into(), zeros(&[4, 64]));
    });
    assert_mentions(&s.error(), &[key, "expert 8", "8 experts"]);
}

#[test]
fn refuses_non_finite_weights() {
    let s = Scratch::of("peft_attn");
    s.edit_tensors(|t| {
        let nan = Tensor::full(f32::NAN, (64, 4), &Device::Cpu).unwrap();
        t.insert(Q0_B.into(), nan);
    });
    assert_mentions(&s.error(), &[Q0_B, "NaN"]);
}

#[test]
fn refuses_missing_and_malformed_files() {
    let s = Scratch::of("peft_attn");
    fs::remove_file(s.path().join("adapter_model.safetensors")).unwrap();
    assert_mentions(&s.error(), &["adapter_model.safetensors", "missing"]);

    let s = Scratch::of("mlx_attn");
    fs::remove_file(s.path().join("adapters.safetensors")).unwrap();
    assert_mentions(&s.error(), &["adapters.safetensors", "missing"]);

    let s = Scratch::of("peft_attn");
    fs::remove_file(s.path().join("adapter_config.json")).unwrap();
    assert_mentions(&s.error(), &["adapter_config.json"]);

    let s = Scratch::of("peft_attn");
    fs::write(
        s.path().join("adapter_config.json"),
        "{\"peft_type\": \"LORA\", ",
    )
    .unwrap();
    assert_mentions(
        &s.error(),
        &["adapter_config.json", "not a valid adapter config"],
    );

    let s = Scratch::of("peft_attn");
    s.edit_config(|c| {
        c.insert("target_modules".into(), 5.into());
    });
    assert_mentions(&s.error(), &["adapter_config.json", "`target_modules`"]);

    let s = Scratch::of("peft_attn");
    fs::write(s.path().join("adapter_model.safetensors"), b"short").unwrap();
    assert_mentions(&s.error(), &["adapter_model.safetensors"]);
}

#[test]
fn refuses_mlx_fine_tune_types_other_than_lora() {
    for (kind, part) in [("dora", "DoRA"), ("full", "full fine-tune")] {
        let s = Scratch::of("mlx_attn");
        s.edit_config(|c| {
            c.insert("fine_tune_type".into(), kind.into());
        });
        assert_mentions(&s.error(), &[&format!("fine_tune_type `{kind}`"), part]);
    }
    let s = Scratch::of("mlx_all");
    let key = "model.layers.1.mlp.switch_mlp.up_proj.lora_b";
    s.edit_tensors(|t| {
        t.insert(key.into(), zeros(&[8, 16, 2]));
    });
    assert_mentions(&s.error(), &[key, "[8, 16, 2]"]);
}

/// Keys that keep the adapter name (`lora_A.default.weight`) read the same.
#[test]
fn keys_with_an_adapter_name_read_the_same() {
    let s = Scratch::of("peft_all");
    s.edit_tensors(|t| {
        let renamed: HashMap<String, Tensor> = t
            .drain()
            .map(|(k, v)| {
                let k = k
                    .replace(".lora_A.weight", ".lora_A.default.weight")
                    .replace(".lora_B.weight", ".lora_B.default.weight");
                (k, v)
            })
            .collect();
        *t = renamed;
    });
    let renamed = load(s.path()).unwrap();
    let original = fixture("peft_all");
    assert_eq!(targets(&renamed), targets(&original));
    let t = expert(1, 6, ExpertProjKind::Up);
    let diff = (renamed.get(&t).unwrap().delta_weight().unwrap()
        - original.get(&t).unwrap().delta_weight().unwrap())
    .unwrap()
    .abs()
    .unwrap()
    .max_all()
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    assert_eq!(diff, 0.0);

    // Two adapter names in one file are refused.
    s.edit_tensors(|t| {
        let b1 = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight";
        let moved = t.remove(b1).unwrap();
        t.insert(b1.replace(".default.", ".other."), moved);
    });
    assert_mentions(&s.error(), &["several adapters"]);
}
