//! The MLX backend in bf16 and f16 against mlx-lm in the same dtype, on the fixture checkpoints.
#![cfg(feature = "mlx")]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use athena::backend::mlx::load_mlx_as;
use athena::backend::Backend;
use athena::options::ComputeDtype;
use candle_core::{DType, Device, Tensor};
use common::{fixture, logits_tensor, max_abs_diff};

const VARIANTS: [&str; 8] = [
    "base",
    "mlx_switch",
    "tied_bf16",
    "mlx_q4",
    "mlx_q8_g64",
    "mlx_mixed_3_6",
    "gqa_normtopk",
    "sharded_f16",
];

struct MlxLm(HashMap<String, Tensor>);

impl MlxLm {
    fn load(name: &str, dtype: &str) -> MlxLm {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/mlx_parity")
            .join(format!("{name}_{dtype}.safetensors"));
        MlxLm(candle_core::safetensors::load(&path, &Device::Cpu).unwrap())
    }
    fn ints(&self, key: &str) -> Vec<u32> {
        self.0[key]
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as u32)
            .collect()
    }
}

fn greedy(model: &dyn Backend, prompt: &[u32], n: usize) -> Vec<u32> {
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

#[test]
fn measure() {
    for (dt, suffix) in [(ComputeDtype::Bf16, "bf16"), (ComputeDtype::F16, "f16")] {
        for name in VARIANTS {
            let want = MlxLm::load(name, suffix);
            let model = load_mlx_as(&fixture(name), dt).unwrap();
            let ids = want.ints("ids");
            let d = max_abs_diff(&logits_tensor(&model, &ids), &want.0["logits"]);
            let gap = want.0["gap_f32"].to_vec1::<f32>().unwrap()[0];
            let g = greedy(&model, &ids, 8) == want.ints("greedy");
            eprintln!("{name} {suffix}: athena vs mlx-lm {d}, mlx-lm vs f32 {gap}, greedy equal {g}");
        }
    }
}
