//! Shared helpers for the integration tests: fixture paths and reference data.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use athena::backend::candle::{load_olmoe, Olmoe};
use candle_core::{DType, Device, Tensor};

/// Every fixture variant made by scripts/make_fixtures.py.
pub const VARIANTS: &[&str] = &[
    "base",
    "gqa_normtopk",
    "clip_bias",
    "tied_bf16",
    "sharded_f16",
    "v5_fused",
    "mlx_switch",
];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

pub struct Reference {
    pub tensors: HashMap<String, Tensor>,
    pub json: serde_json::Value,
}

impl Reference {
    pub fn load(name: &str) -> Reference {
        let dir = fixture(name);
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        Reference { tensors, json }
    }
    pub fn ids(&self, key: &str) -> Vec<u32> {
        token_ids(&self.tensors[key])
    }
    pub fn get(&self, key: &str) -> &Tensor {
        &self.tensors[key]
    }
}

pub fn load(name: &str, dtype: DType) -> Olmoe {
    load_olmoe(&fixture(name), &Device::Cpu, dtype, |_, _| {}).unwrap()
}

/// max |a - b| of two rows of the same length.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// max |a - b| over all elements, in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Float32 logits [n, vocab] of one sequence through the backend contract.
pub fn logits_tensor(model: &dyn athena::backend::Backend, ids: &[u32]) -> Tensor {
    let rows = model.logits(ids).unwrap();
    let (n, v) = (rows.len(), rows[0].len());
    Tensor::from_vec(
        rows.into_iter().flatten().collect::<Vec<f32>>(),
        (n, v),
        &Device::Cpu,
    )
    .unwrap()
}

/// A safetensors file of reference outputs, as the pinned fixture scripts write them.
pub struct Outputs(pub HashMap<String, Tensor>);

impl Outputs {
    pub fn load(path: &std::path::Path) -> Outputs {
        Outputs(candle_core::safetensors::load(path, &Device::Cpu).unwrap())
    }

    /// mlx-lm's outputs `fixtures/mlx_parity/NAME.safetensors`.
    pub fn mlx_lm(name: &str) -> Outputs {
        Outputs::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/mlx_parity")
                .join(format!("{name}.safetensors")),
        )
    }

    /// An integer tensor as token ids.
    pub fn ints(&self, key: &str) -> Vec<u32> {
        token_ids(&self.0[key])
    }

    pub fn get(&self, key: &str) -> &Tensor {
        &self.0[key]
    }
}

/// Greedy continuation of `prompt` for `n` tokens through the backend's session (KV cache).
pub fn greedy(model: &dyn athena::backend::Backend, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = model.session();
    let mut logits = s.step(&[prompt.to_vec()]).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let next = athena::generate::argmax(&logits[0]);
        out.push(next);
        logits = s.step(&[vec![next]]).unwrap();
    }
    out
}

/// A 1-D integer tensor (as the fixture scripts store ids: int64) as token ids.
pub fn token_ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}
