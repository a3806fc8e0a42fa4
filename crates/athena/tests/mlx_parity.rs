//! The MLX backend against mlx-lm and transformers, on the fixture checkpoints.
//!
//! mlx-lm's logits come from `scripts/make_mlx_parity_fixtures.py` (fixtures/mlx_parity/),
//! transformers' from `scripts/make_fixtures.py` (fixtures/models/*/reference.safetensors).
//! Float32 checkpoints agree with mlx-lm within 1e-4, 4-bit ones within 1e-3. Where mlx-lm
//! departs from transformers (it ignores `clip_qkv` and reads neither the RoPE base nor the
//! RoPE scaling from `rope_parameters`), athena follows transformers, and the tests show both
//! facts: athena-MLX = transformers ≠ mlx-lm, and = mlx-lm once mlx-lm is given the field.
#![cfg(feature = "mlx")]

mod common;

use athena::backend::mlx::load_mlx;
use athena::backend::{Backend, BackendKind, Pooling};
use candle_core::{DType, Device, Tensor};
use common::{fixture, greedy, logits_tensor, max_abs_diff, Outputs, Reference};

fn mlx(name: &str) -> athena::backend::mlx::MlxOlmoe {
    load_mlx(&fixture(name)).unwrap()
}

#[test]
fn float32_checkpoints_match_mlx_lm_within_1e_4() {
    // HF per-expert layout (stacked at load as mlx-lm's sanitize does), mlx-lm switch_mlp
    // layout, and tied bf16 weights computed in float32.
    for name in ["base", "mlx_switch", "tied_bf16"] {
        let want = Outputs::mlx_lm(name);
        let model = mlx(name);
        assert_eq!(model.kind(), BackendKind::Mlx);
        let ids = want.ints("ids");
        let d = max_abs_diff(&logits_tensor(&model, &ids), want.get("logits"));
        assert!(d <= 1e-4, "{name}: athena-MLX vs mlx-lm differ by {d}");
        assert_eq!(
            greedy(&model, &ids, 8),
            want.ints("greedy"),
            "{name}: greedy decoding through the KV cache"
        );
    }
}

#[test]
fn quantized_checkpoints_match_mlx_lm() {
    // Made by `mlx_lm.convert -q` (scripts/make_mlx_quant_fixtures.py): 4-bit group 32 with
    // quantized embeddings, router and lm_head; 8-bit group 64; mixed 3/6-bit overrides.
    for (name, tol) in [
        ("mlx_q4", 1e-3),
        ("mlx_q8_g64", 1e-3),
        ("mlx_mixed_3_6", 1e-3),
    ] {
        let want = Outputs::mlx_lm(name);
        let model = mlx(name);
        let ids = want.ints("ids");
        let d = max_abs_diff(&logits_tensor(&model, &ids), want.get("logits"));
        assert!(d <= tol, "{name}: athena-MLX vs mlx-lm differ by {d}");
        assert_eq!(greedy(&model, &ids, 8), want.ints("greedy"), "{name}");
    }
}

#[test]
fn where_mlx_lm_departs_from_transformers_athena_follows_transformers() {
    // clip_bias: clip_qkv = 1.25 (mlx-lm has no clamp); gqa_normtopk: θ = 500000 only in
    // rope_parameters; sharded_f16: linear RoPE scaling only in rope_parameters (f16 weights).
    for name in ["clip_bias", "gqa_normtopk", "sharded_f16"] {
        let want = Outputs::mlx_lm(name);
        let hf = Reference::load(name);
        let model = mlx(name);
        let ids = want.ints("ids");
        assert_eq!(ids, hf.ids("ids_a"));
        let got = logits_tensor(&model, &ids);
        let to_hf = max_abs_diff(&got, hf.get("logits_a"));
        assert!(
            to_hf <= 1e-4,
            "{name}: athena-MLX vs transformers differ by {to_hf}"
        );
        let to_mlx_lm = max_abs_diff(&got, want.get("logits"));
        assert!(
            to_mlx_lm > 0.1,
            "{name}: mlx-lm was expected to depart from transformers, yet differs by only {to_mlx_lm}"
        );
        if let Some(fixed) = want.0.get("logits_fixed") {
            let d = max_abs_diff(&got, fixed);
            assert!(
                d <= 1e-4,
                "{name}: athena-MLX vs mlx-lm given the field: {d}"
            );
        }
    }
}

#[test]
fn cached_decoding_equals_the_full_forward_pass() {
    let model = mlx("gqa_normtopk");
    let ids = Reference::load("gqa_normtopk").ids("ids_a");
    let full = model.logits(&ids).unwrap();
    let mut s = model.session();
    let (head, tail) = ids.split_at(4);
    let mut last = s.step(&[head.to_vec()]).unwrap();
    let mut rows = vec![last[0].clone()];
    for &t in tail {
        last = s.step(&[vec![t]]).unwrap();
        rows.push(last[0].clone());
    }
    for (i, row) in rows.iter().enumerate() {
        let want = &full[3 + i];
        let d = row
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d <= 1e-4,
            "position {}: cached vs full differ by {d}",
            3 + i
        );
    }
    // A batch of two sequences of different lengths equals each alone.
    let (a, b) = (ids[..7].to_vec(), ids[2..].to_vec());
    let both = model.session().step(&[a.clone(), b.clone()]).unwrap();
    let one_a = model.session().step(&[a]).unwrap();
    let one_b = model.session().step(&[b]).unwrap();
    assert_eq!(both, vec![one_a[0].clone(), one_b[0].clone()]);
}

#[test]
fn encode_pools_the_final_norm_hidden_states_of_transformers() {
    let model = mlx("gqa_normtopk");
    let r = Reference::load("gqa_normtopk");
    let pooled = model
        .encode(&[r.ids("ids_a"), r.ids("ids_b")], Pooling::Mean)
        .unwrap();
    for (row, key) in [(0, "hidden_a"), (1, "hidden_b")] {
        let want = r.get(key).mean(0).unwrap();
        let got = Tensor::new(pooled[row].as_slice(), &Device::Cpu).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-4, "{key}: pooled hidden differs by {d}");
    }
    let last = model.encode(&[r.ids("ids_b")], Pooling::Last).unwrap();
    let want = r.get("hidden_b").get(4).unwrap();
    let got = Tensor::new(last[0].as_slice(), &Device::Cpu).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-4);
}

#[test]
fn bad_input_is_an_error_not_a_crash() {
    let model = mlx("base");
    let vocab = model.args().vocab_size as u32;
    let err = model.logits(&[1, vocab]).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    assert!(model.logits(&[]).is_err());
    let too_long = vec![1u32; model.args().max_position_embeddings + 1];
    let err = model.logits(&too_long).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
    let mut s = model.session();
    s.step(&[vec![1, 2], vec![3]]).unwrap();
    assert!(s.step(&[vec![1]]).is_err(), "batch size changed");
    assert!(
        s.step(&[vec![1], vec![2, 3]]).is_err(),
        "ragged step after the first"
    );
}

#[test]
fn corrupt_checkpoints_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("mlx_q4");
    for f in [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // A truncated shard.
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_mlx(dir.path()).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // Scales that do not fit the config's group size.
    std::fs::write(&file, &bytes).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"group_size\": 32", "\"group_size\": 64");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let err = load_mlx(dir.path()).err().unwrap().to_string();
    assert!(err.contains(".scales") || err.contains(".weight"), "{err}");
}

#[test]
fn both_backends_count_the_same_weight_bytes_per_token() {
    // Both hold these checkpoints' arrays as stored: float32, and mlx-lm's packed codes with
    // their scales and biases.
    for name in ["base", "mlx_q4", "mlx_q8_g64"] {
        let on_mlx = mlx(name).token_weight_bytes();
        let on_candle = common::load(name, DType::F32).token_weight_bytes();
        assert!(
            on_mlx.is_some_and(|b| b > 0),
            "{name}: MLX counts {on_mlx:?}"
        );
        assert_eq!(
            on_mlx,
            Some(on_candle),
            "{name}: MLX and candle count different bytes"
        );
    }
}
