//! The MLX backend's load options against mlx-lm and PEFT: load-time quantization
//! (`--quantization 4bit|8bit` = `mlx_lm.convert -q` at its default group size 64; references
//! from `scripts/make_mlx_quant_fixtures.py --load-time`) and LoRA adapters, unmerged and
//! merged (references in fixtures/lora/*/reference.safetensors, from
//! `scripts/make_lora_fixtures.py`).
#![cfg(feature = "mlx")]

mod common;

use std::path::PathBuf;

use athena::backend::mlx::MlxProvider;
use athena::backend::{Backend, BackendProvider, LoadSpec};
use athena::options::Quantization;
use athena::Error;
use candle_core::Tensor;
use common::{fixture, greedy, logits_tensor, max_abs_diff, Outputs};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn spec(model: &str) -> LoadSpec {
    LoadSpec::for_model(fixture(model).to_string_lossy().into_owned())
}

fn load(spec: &LoadSpec) -> athena::Result<Box<dyn Backend>> {
    MlxProvider.load(spec)
}

fn adapter(name: &str) -> PathBuf {
    root().join("lora").join(name)
}

#[test]
fn load_time_quantization_is_mlx_lm_convert_q() {
    for (q, name) in [
        (Quantization::Int4, "load_q4"),
        (Quantization::Int8, "load_q8"),
    ] {
        let want = Outputs::mlx_lm(name);
        let model = load(&LoadSpec {
            quantization: q,
            ..spec("base")
        })
        .unwrap();
        let ids = want.ints("ids");
        let got = logits_tensor(model.as_ref(), &ids);
        let d = max_abs_diff(&got, want.get("logits"));
        println!("{name}: athena-MLX vs mlx-lm max |Δlogit| {d:.2e}");
        // Both call `mx.quantize` and the same kernels: bit-exact on MLX's CPU (0 measured).
        assert!(d <= 1e-6, "{name}: athena-MLX vs mlx-lm differ by {d}");
        assert_eq!(
            greedy(model.as_ref(), &ids, 8),
            want.ints("greedy"),
            "{name}"
        );
        if q == Quantization::Int8 {
            // The committed `mlx_lm.convert -q --q-bits 8 --q-group-size 64` checkpoint.
            let d = max_abs_diff(&got, Outputs::mlx_lm("mlx_q8_g64").get("logits"));
            println!("8bit vs the mlx_q8_g64 checkpoint: max |Δlogit| {d:.2e}");
            assert!(d <= 1e-6, "8bit at load vs mlx_q8_g64: {d}");
        }
    }
}

#[test]
fn quantizing_a_quantized_checkpoint_is_refused() {
    let err = load(&LoadSpec {
        quantization: Quantization::Int8,
        ..spec("mlx_q4")
    })
    .err()
    .unwrap();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("already quantized"), "{err}");
}

/// `ids_a`, `logits_unmerged` and `logits_merged` of an adapter fixture.
fn lora_reference(name: &str) -> (Vec<u32>, Tensor, Tensor) {
    let r = Outputs::load(&adapter(name).join("reference.safetensors"));
    (
        r.ints("ids_a"),
        r.get("logits_unmerged").clone(),
        r.get("logits_merged").clone(),
    )
}

fn with_adapter(name: &str, merge: bool) -> LoadSpec {
    LoadSpec {
        lora_path: Some(adapter(name)),
        merge_lora: merge,
        ..spec("base")
    }
}

#[test]
fn adapters_match_their_libraries_unmerged_and_merged() {
    // mlx-lm's adapters against mlx-lm's adapted model (`LoRALinear`, `LoRASwitchLinear`, and
    // `fuse` when merged): the same MLX operations, bit-exact on MLX's CPU (0 measured).
    // PEFT's against PEFT's (torch): 1.8e-6 measured.
    for (name, tol) in [
        ("mlx_all", 1e-6),
        ("mlx_attn", 1e-6),
        ("peft_attn", 1e-5),
        ("peft_all", 1e-5),
        ("peft_v4_experts", 1e-5),
    ] {
        let (ids, unmerged, merged) = lora_reference(name);
        for (merge, want) in [(false, &unmerged), (true, &merged)] {
            let model = load(&with_adapter(name, merge)).unwrap();
            let d = max_abs_diff(&logits_tensor(model.as_ref(), &ids), want);
            println!("{name} merge={merge}: max |Δlogit| {d:.2e}");
            assert!(d <= tol, "{name} merge={merge}: max |Δlogit| {d} > {tol}");
        }
    }
}

#[test]
fn an_adapter_on_a_quantized_base_is_applied_apart_and_merging_is_refused() {
    // mlx-lm's QLoRA: `load_adapters` on the model `convert -q` made, the adapter's update
    // computed apart from the quantized layers. Bit-exact on MLX's CPU (0 measured).
    for (q, name) in [
        (Quantization::Int4, "load_q4"),
        (Quantization::Int8, "load_q8"),
    ] {
        let want = Outputs::mlx_lm(name);
        let model = load(&LoadSpec {
            quantization: q,
            ..with_adapter("mlx_all", false)
        })
        .unwrap();
        let got = logits_tensor(model.as_ref(), &want.ints("ids"));
        let d = max_abs_diff(&got, want.get("logits_lora_mlx_all"));
        println!("{name} + mlx_all: athena-MLX vs mlx-lm max |Δlogit| {d:.2e}");
        assert!(d <= 1e-6, "{name} + mlx_all: {d}");
    }

    // Merging into a checkpoint stored quantized is refused, naming the module; merging before
    // load-time quantization is what mlx-lm's `fuse` then `convert -q` does, and is allowed.
    let err = load(&LoadSpec {
        lora_path: Some(adapter("mlx_all")),
        merge_lora: true,
        ..spec("mlx_q4")
    })
    .err()
    .unwrap();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("stored quantized"), "{err}");
    let merged_q = load(&LoadSpec {
        quantization: Quantization::Int4,
        ..with_adapter("mlx_all", true)
    })
    .unwrap();
    let ids = Outputs::mlx_lm("load_q4").ints("ids");
    assert_eq!(merged_q.logits(&ids).unwrap().len(), ids.len());
}

#[test]
fn a_bad_adapter_directory_is_a_typed_error() {
    let err = load(&LoadSpec {
        lora_path: Some(root().join("lora/no_such_adapter")),
        ..spec("base")
    })
    .err()
    .unwrap();
    assert!(err.is_user_error(), "{err:?}");
    assert!(err.to_string().contains("no_such_adapter"), "{err}");
}

#[test]
fn the_agent_loads_mlx_with_quantization_and_an_adapter() {
    // What `athena logits --backend mlx --quantization 4bit --lora DIR` asks for.
    let config = athena::config::OlmoeConfig {
        model_name: fixture("base").to_string_lossy().into_owned(),
        quantization: Quantization::Int4,
        lora_path: Some(adapter("mlx_all")),
        ..Default::default()
    };
    let mut agent = athena::models::olmoe::OlmoeModel::new(config);
    agent
        .load_for(athena::models::olmoe::Need::Backend(
            athena::backend::BackendKind::Mlx,
        ))
        .unwrap();
    assert_eq!(agent.backend(), Some(athena::backend::BackendKind::Mlx));
    let want = Outputs::mlx_lm("load_q4");
    let got = logits_tensor(agent.model().unwrap(), &want.ints("ids"));
    let d = max_abs_diff(&got, want.get("logits_lora_mlx_all"));
    assert!(d <= 1e-6, "4bit + mlx_all through OlmoeModel: {d}");
}
