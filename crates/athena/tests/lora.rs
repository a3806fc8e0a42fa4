//! LoRA adapters in the forward pass: athena's logits against PEFT's and mlx-lm's, with the
//! adapter kept apart (PEFT's default) and merged into the weights, and on a quantized base.

mod common;

use athena::backend::candle::{load_olmoe_with, LoadOptions, Olmoe};
use athena::config::Quantization;
use candle_core::{DType, Device, Tensor};
use common::{fixture, max_abs_diff};
use std::path::PathBuf;

const ADAPTERS: &[&str] = &[
    "peft_attn",
    "peft_all",
    "peft_v4_experts",
    "mlx_attn",
    "mlx_all",
];

fn adapter(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/lora")
        .join(name)
}

fn load(opts: &LoadOptions) -> Olmoe {
    load_olmoe_with(&fixture("base"), &Device::Cpu, DType::F32, opts, |_, _| {}).unwrap()
}

fn logits(model: &Olmoe, ids: &[u32]) -> Tensor {
    common::logits_tensor(model, ids)
}

fn reference(name: &str) -> (Vec<u32>, Tensor, Tensor) {
    let r =
        candle_core::safetensors::load(adapter(name).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let ids = r["ids_a"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect();
    (
        ids,
        r["logits_unmerged"].clone(),
        r["logits_merged"].clone(),
    )
}

#[test]
fn adapters_match_the_reference_library_unmerged_and_merged() {
    let base = load(&LoadOptions::default());
    for &name in ADAPTERS {
        let (ids, unmerged, merged) = reference(name);
        let plain = logits(&base, &ids);
        assert!(
            max_abs_diff(&plain, &unmerged) > 1e-3,
            "{name}: the adapter must change the logits"
        );
        for (merge, want) in [(false, &unmerged), (true, &merged)] {
            let model = load(&LoadOptions {
                lora_path: Some(adapter(name)),
                merge_lora: merge,
                ..Default::default()
            });
            let d = max_abs_diff(&logits(&model, &ids), want);
            println!("{name} merge={merge}: max |Δlogit| {d:.2e}");
            assert!(d <= 1e-4, "{name} merge={merge}: max |Δlogit| {d} > 1e-4");
        }
    }
}

#[test]
fn an_adapter_on_a_quantized_base_stays_close_to_the_f32_adapter() {
    let (ids, unmerged, _) = reference("peft_all");
    let q = load(&LoadOptions {
        quantization: Quantization::Int8,
        lora_path: Some(adapter("peft_all")),
        ..Default::default()
    });
    let got = logits(&q, &ids);
    let d = max_abs_diff(&got, &unmerged);
    println!("QLoRA 8-bit base + f32 adapter: max |Δlogit| {d:.3e}");
    // The 8-bit base alone moves these logits by ~3e-2; the adapter adds no error of its own.
    let base_q = logits(
        &load(&LoadOptions {
            quantization: Quantization::Int8,
            ..Default::default()
        }),
        &ids,
    );
    let base = logits(&load(&LoadOptions::default()), &ids);
    let base_err = max_abs_diff(&base_q, &base);
    assert!(
        d <= 2.0 * base_err.max(1e-2),
        "QLoRA error {d} vs base quantization error {base_err}"
    );
    // The adapter's own contribution survives quantization of the base.
    let delta_q = (&got - &base_q).unwrap();
    let delta = (&unmerged - &base).unwrap();
    assert!(
        max_abs_diff(&delta_q, &delta) < 0.5 * max_abs_diff(&delta, &delta.zeros_like().unwrap())
    );
}

#[test]
fn merging_into_an_mlx_quantized_checkpoint_is_refused() {
    let err = load_olmoe_with(
        &fixture("mlx_q4"),
        &Device::Cpu,
        DType::F32,
        &LoadOptions {
            lora_path: Some(adapter("peft_attn")),
            merge_lora: true,
            ..Default::default()
        },
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("merge_lora") && err.contains("quantized"),
        "{err}"
    );
}
