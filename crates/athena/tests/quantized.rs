//! Quantized weights on the candle path: mlx-lm affine checkpoints against mlx-lm's own
//! logits, load-time 8-bit and 4-bit quantization against the f32 reference, and
//! `quantize_checkpoint` output loading back.

mod common;

use athena::backend::candle::{load_olmoe_with, LoadOptions, Olmoe};
use athena::checkpoint::convert::{quantize_checkpoint, QuantizeReport};
use athena::config::Quantization;
use athena::error::Result;
use athena::quant::AffineParams;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{fixture, max_abs_diff, Reference};

fn load(name: &str, opts: &LoadOptions) -> Olmoe {
    load_dir(&fixture(name), opts)
}

fn load_dir(dir: &Path, opts: &LoadOptions) -> Olmoe {
    load_olmoe_with(dir, &Device::Cpu, DType::F32, opts, |_, _| {}).unwrap()
}

/// `quantize_checkpoint` of fixture `name` into `out` at `bits` bits in groups of `group_size`.
fn quantize(name: &str, out: &Path, bits: u8, group_size: usize) -> Result<QuantizeReport> {
    let params = AffineParams::new(bits, group_size).unwrap();
    quantize_checkpoint(&fixture(name), out, params, |_, _| {})
}

fn logits(model: &Olmoe, ids: &[u32]) -> Tensor {
    common::logits_tensor(model, ids)
}

/// Top-1 agreement and mean KL(reference ‖ candidate) over positions.
fn agreement_and_kl(reference: &Tensor, candidate: &Tensor) -> (f32, f32) {
    let p = candle_nn::ops::log_softmax(reference, 1).unwrap();
    let q = candle_nn::ops::log_softmax(candidate, 1).unwrap();
    let kl = (p.exp().unwrap() * (&p - &q).unwrap())
        .unwrap()
        .sum(1)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let a = reference.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let b = candidate.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    (same as f32 / a.len() as f32, kl)
}

/// The ids and mlx-lm's logits stored with an mlx-lm fixture.
fn mlx_reference(name: &str) -> (Vec<u32>, Tensor) {
    let r =
        candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let ids = r["ids_a"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect();
    (ids, r["logits_a"].clone())
}

#[test]
fn mlx_lm_quantized_checkpoints_match_mlx_lm() {
    for name in ["mlx_q4", "mlx_q8_g64", "mlx_mixed_3_6"] {
        let model = load(name, &LoadOptions::default());
        let (ids, want) = mlx_reference(name);
        let got = logits(&model, &ids);
        let d = max_abs_diff(&got, &want);
        println!("{name}: max |Δlogit| vs mlx-lm {d:.2e}");
        assert!(d <= 1e-3, "{name}: athena differs from mlx-lm by {d}");
    }
}

/// Load-time 8-bit and 4-bit quantization against transformers' f32 logits: 8-bit within
/// 5e-2 on every fixture, with full top-1 agreement; 4-bit (group 64) is held to its KL.
#[test]
fn load_time_quantization_stays_close_to_f32() {
    for name in [
        "base",
        "clip_bias",
        "sharded_f16",
        "gqa_normtopk",
        "tied_bf16",
    ] {
        let r = Reference::load(name);
        let reference = r.get("logits_a");
        for q in [Quantization::Int8, Quantization::Int4] {
            let model = load(
                name,
                &LoadOptions {
                    quantization: q,
                    ..Default::default()
                },
            );
            let got = logits(&model, &r.ids("ids_a"));
            let d = max_abs_diff(&got, reference);
            let (top1, kl) = agreement_and_kl(reference, &got);
            println!("{name} {q:?}: max |Δlogit| {d:.3e}, top-1 agreement {top1:.3}, KL {kl:.2e}");
            match q {
                Quantization::Int8 => {
                    assert!(d <= 5e-2, "{name} 8-bit: max |Δlogit| {d} > 5e-2");
                    assert!(
                        top1 == 1.0 && kl < 1e-3,
                        "{name} 8-bit: top-1 {top1}, KL {kl}"
                    );
                }
                _ => assert!(kl.is_finite() && kl < 5e-2, "{name} 4-bit: KL {kl}"),
            }
        }
    }
}

#[test]
fn a_quantized_checkpoint_written_by_athena_loads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q4");
    let report = quantize("base", &out, 4, 32).unwrap();
    assert!(report.bytes < report.input_bytes / 3, "{report:?}");
    let written = load_dir(&out, &LoadOptions::default());
    let r = Reference::load("base");
    let a = logits(&written, &r.ids("ids_a"));
    let d = max_abs_diff(&a, r.get("logits_a"));
    assert!(d < 1.0, "4-bit g32 drifted by {d}");
    // Refuses to overwrite, and refuses an already quantized input.
    let err = quantize("base", &out, 4, 32).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = quantize("mlx_q4", &dir.path().join("x"), 4, 32).unwrap_err();
    assert!(err.to_string().contains("already quantized"), "{err}");
    assert!(!dir.path().join("x").exists());
}

/// A bf16 checkpoint quantizes as mlx-lm quantizes it: scales and biases in bf16, both by
/// `quantize_checkpoint` and at load time, the two giving the same model.
#[test]
fn a_bf16_checkpoint_quantizes_with_bf16_scales() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q4");
    quantize("tied_bf16", &out, 4, 64).unwrap();
    let written =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let scales: Vec<_> = written.keys().filter(|k| k.ends_with(".scales")).collect();
    assert!(!scales.is_empty());
    for k in scales {
        assert_eq!(written[k].dtype(), DType::BF16, "{k}");
        let b = k.replace(".scales", ".biases");
        assert_eq!(written[&b].dtype(), DType::BF16, "{b}");
    }
    let stored = load_dir(&out, &LoadOptions::default());
    let at_load = load(
        "tied_bf16",
        &LoadOptions {
            quantization: Quantization::Int4,
            ..Default::default()
        },
    );
    let r = Reference::load("tied_bf16");
    let ids = r.ids("ids_a");
    let d = max_abs_diff(&logits(&stored, &ids), &logits(&at_load, &ids));
    assert_eq!(
        d, 0.0,
        "the written checkpoint and load-time quantization differ by {d}"
    );
}

/// `int8_activations`: quantized products on int8 inputs (where the CPU has AVX-512 VNNI)
/// stay close to the default int16 form, on mlx-lm checkpoints against mlx-lm's logits and on
/// load-time quantization against transformers' f32 logits.
#[test]
fn int8_activations_stay_close_to_the_reference() {
    let vnni = athena::kernels::affine::has_avx512_vnni();
    let int8 = LoadOptions {
        int8_activations: true,
        ..Default::default()
    };
    for name in ["mlx_q4", "mlx_q8_g64"] {
        let (ids, want) = mlx_reference(name);
        let exact = logits(&load(name, &LoadOptions::default()), &ids);
        let fast = logits(&load(name, &int8), &ids);
        let d = max_abs_diff(&fast, &want);
        let (top1, kl) = agreement_and_kl(&want, &fast);
        println!("{name} int8: max |Δlogit| vs mlx-lm {d:.2e}, top-1 {top1:.3}, KL {kl:.2e}");
        assert_eq!(
            vnni,
            max_abs_diff(&fast, &exact) > 0.0,
            "{name}: int8 ran: {vnni}"
        );
        // Random fixtures have flat logits, where a near tie flips under int8's rounding:
        // the distributions are held to the same KL bound as 4-bit weights are.
        assert!(
            top1 >= 0.8 && kl < 5e-3,
            "{name} int8: top-1 {top1}, KL {kl}"
        );
    }
    for name in ["base", "gqa_normtopk"] {
        let r = Reference::load(name);
        let reference = r.get("logits_a");
        for q in [Quantization::Int8, Quantization::Int4] {
            let opts = |int8_activations| LoadOptions {
                quantization: q,
                int8_activations,
                ..Default::default()
            };
            let exact = logits(&load(name, &opts(false)), &r.ids("ids_a"));
            let fast = logits(&load(name, &opts(true)), &r.ids("ids_a"));
            let (_, kl_exact) = agreement_and_kl(reference, &exact);
            let (top1, kl) = agreement_and_kl(reference, &fast);
            println!("{name} {q:?} int8: top-1 {top1:.3}, KL {kl:.2e} (int16 form {kl_exact:.2e})");
            assert!(
                kl.is_finite() && kl < 2.0 * kl_exact + 1e-3,
                "{name} {q:?}: KL {kl}"
            );
        }
    }
}
