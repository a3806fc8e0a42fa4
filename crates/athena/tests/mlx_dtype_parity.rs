//! The MLX backend computing in bf16 and f16 against mlx-lm computing in the same dtype.
//!
//! mlx-lm's outputs come from `scripts/make_mlx_parity_fixtures.py`
//! (fixtures/mlx_parity/<variant>_bf16 and _f16): mlx-lm after `model.set_dtype(dtype)`, with
//! `mx.gather_mm` widened to float32 and rounded back to the dtype, since MLX's CPU gather_mm
//! computes float32 only (athena's shim does the same on the CPU). Each file also holds
//! mlx-lm's own distance to its float32 logits (`gap_f32`).
//!
//! Measured on the CPU (mlx 0.32.4): athena's logits equal mlx-lm's bit for bit on every
//! variant, in bf16 and in f16 (max |Δ| = 0), while mlx-lm's own max |bf16 − f32| is 0.028 to
//! 0.21 and max |f16 − f32| 0.003 to 0.105. The tolerance is the smaller of one ulp of the
//! dtype at the largest logit and a tenth of mlx-lm's own gap: athena must run mlx-lm's graph
//! in that dtype, op for op, not merely a graph as far from float32 as mlx-lm's is.
#![cfg(feature = "mlx")]

mod common;

use athena::backend::mlx::{load_mlx, load_mlx_as, MlxProvider};
use athena::backend::{Backend, BackendProvider, LoadSpec, Pooling};
use athena::options::ComputeDtype;
use common::{fixture, greedy, logits_tensor, max_abs_diff, Outputs};

/// Every variant on which athena-MLX and mlx-lm compute the same model (gqa_normtopk and
/// sharded_f16 with mlx-lm given the RoPE fields it ignores).
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

const DTYPES: [(ComputeDtype, &str, i32); 2] = [
    // (dtype, fixture suffix, explicit mantissa bits)
    (ComputeDtype::Bf16, "bf16", 7),
    (ComputeDtype::F16, "f16", 10),
];

/// mlx-lm's outputs for one variant in one dtype.
fn mlx_lm(name: &str, suffix: &str) -> Outputs {
    Outputs::mlx_lm(&format!("{name}_{suffix}"))
}

/// mlx-lm's own max |logits in this dtype − logits in float32|.
fn gap_f32(o: &Outputs) -> f32 {
    o.get("gap_f32").to_vec1::<f32>().unwrap()[0]
}

/// One ulp of a float with `mantissa` explicit bits at the magnitude of `x`.
fn ulp(x: f32, mantissa: i32) -> f32 {
    2f32.powi(x.abs().log2().floor() as i32 - mantissa)
}

#[test]
fn bf16_and_f16_match_mlx_lm_in_the_same_dtype() {
    for (dtype, suffix, mantissa) in DTYPES {
        for name in VARIANTS {
            let want = mlx_lm(name, suffix);
            let model = load_mlx_as(&fixture(name), dtype).unwrap();
            let ids = want.ints("ids");
            let largest = want.get("logits").abs().unwrap().max_all().unwrap();
            let largest = largest.to_scalar::<f32>().unwrap();
            let tol = ulp(largest, mantissa).min(gap_f32(&want) / 10.0);
            let d = max_abs_diff(&logits_tensor(&model, &ids), want.get("logits"));
            assert!(
                d <= tol,
                "{name} {suffix}: athena-MLX vs mlx-lm differ by {d} (tolerance {tol}; \
                 mlx-lm's own gap to float32 is {})",
                gap_f32(&want)
            );
            assert_eq!(
                greedy(&model, &ids, 8),
                want.ints("greedy"),
                "{name} {suffix}: greedy decoding through the KV cache"
            );
        }
    }
}

#[test]
fn the_load_spec_dtype_reaches_mlx() {
    // What `athena logits --backend mlx --dtype bf16` and `OlmoeModel::load` go through.
    let want = mlx_lm("mlx_q4", "bf16");
    let mut spec = LoadSpec::for_model(fixture("mlx_q4").to_string_lossy());
    spec.dtype = ComputeDtype::Bf16;
    let model = MlxProvider.load(&spec).unwrap();
    let ids = want.ints("ids");
    assert_eq!(
        max_abs_diff(&logits_tensor(model.as_ref(), &ids), want.get("logits")),
        0.0
    );
}

#[test]
fn encode_in_bf16_stays_near_float32() {
    // Measured: the pooled final-norm hidden states differ from float32's by 0.034 (mean) and
    // 0.054 (last) at a largest component of 2.3 and 2.9, under 2% of it; 5% is allowed.
    let ids = mlx_lm("gqa_normtopk", "bf16").ints("ids");
    let f32_model = load_mlx(&fixture("gqa_normtopk")).unwrap();
    let bf16_model = load_mlx_as(&fixture("gqa_normtopk"), ComputeDtype::Bf16).unwrap();
    let batch = [ids];
    for pooling in [Pooling::Mean, Pooling::Last] {
        let want = f32_model.encode(&batch, pooling).unwrap();
        let got = bf16_model.encode(&batch, pooling).unwrap();
        assert_eq!(got[0].len(), want[0].len());
        let d = got[0]
            .iter()
            .zip(&want[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(d.is_finite() && d <= 0.05 * scale, "{pooling:?}: {d}");
    }
}

#[test]
fn a_few_rows_routed_widen_only_their_experts_with_the_same_logits() {
    // With fewer routed (row, expert) pairs than experts (a one- or two-token prompt on these
    // 8-expert fixtures: 2 to 6 pairs), the CPU widens only the experts picked; each product
    // reads the same float32 values, so mlx-lm's rows come out bit for bit. mlx-lm's logits of
    // the first positions of its prompt are those of the prompt cut there (causal attention,
    // row-wise products).
    for (dtype, suffix, _) in DTYPES {
        for name in ["base", "tied_bf16", "gqa_normtopk"] {
            let want = mlx_lm(name, suffix);
            let model = load_mlx_as(&fixture(name), dtype).unwrap();
            let ids = want.ints("ids");
            for n in [1, 2] {
                let got = logits_tensor(&model, &ids[..n]);
                let rows = want.get("logits").narrow(0, 0, n).unwrap();
                assert_eq!(max_abs_diff(&got, &rows), 0.0, "{name} {suffix}, {n} rows");
            }
        }
    }
}
