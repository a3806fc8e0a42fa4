//! `OlmoeModel::load()`: backend selection, the report, the action head, encode and act.
//! MLX availability and failure are simulated through the MLX provider; the candle path is
//! always the real engine on the fixture checkpoints.

mod common;

use athena::backend::candle::{load_olmoe, Olmoe};
use athena::backend::{
    Availability, Backend, BackendKind, BackendProvider, DecodeSession, LoadSpec, Pooling,
};
use athena::checkpoint::OlmoeArgs;
use athena::config::OlmoeConfig;
use athena::models::olmoe::{Memory, Need, OlmoeModel, Outcome, HEAD_NEEDS_CANDLE};
use athena::{Error, Result};
use candle_core::{DType, Device};
use common::{fixture, max_abs_diff, Reference};
use tracing_test::traced_test;

/// The candle engine presented as MLX: stands in for libmlx when testing selection only.
struct AsMlx(Olmoe);

impl Backend for AsMlx {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }
    fn args(&self) -> &OlmoeArgs {
        self.0.args()
    }
    fn device(&self) -> &'static str {
        Backend::device(&self.0)
    }
    fn session(&self) -> Box<dyn DecodeSession + '_> {
        Backend::session(&self.0)
    }
    fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        Backend::logits(&self.0, ids)
    }
    fn encode(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        self.0.encode(batch, pooling)
    }
}

/// Simulated MLX availability: available or not, loading or failing.
struct SimulatedMlx {
    availability: Availability,
    fails_with: Option<&'static str>,
}

impl BackendProvider for SimulatedMlx {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }
    fn availability(&self) -> Availability {
        self.availability.clone()
    }
    fn load_reporting(
        &self,
        spec: &LoadSpec,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Backend>> {
        if let Some(why) = self.fails_with {
            return Err(Error::invalid("mlx", why));
        }
        Ok(Box::new(AsMlx(load_olmoe(
            std::path::Path::new(&spec.model),
            &Device::Cpu,
            DType::F32,
            on_layer,
        )?)))
    }
}

fn mlx(availability: Availability, fails_with: Option<&'static str>) -> Box<dyn BackendProvider> {
    Box::new(SimulatedMlx {
        availability,
        fails_with,
    })
}

fn config(model: &str) -> OlmoeConfig {
    OlmoeConfig::for_model(fixture(model).to_string_lossy())
}

/// A config that asks for the candle path (the one with the action head) in every build.
fn candle_config(model: &str) -> OlmoeConfig {
    let mut c = config(model);
    c.use_mlx = false;
    c
}

fn memories() -> Vec<Memory> {
    vec![
        Memory {
            id: "m1".into(),
            text: "The user lives in Paris.".into(),
        },
        Memory {
            id: "m2".into(),
            text: "The user likes tea.".into(),
        },
    ]
}

#[test]
#[traced_test]
fn a_mlx_available_and_enabled_loads_mlx() {
    let mut c = config("base");
    c.mlx_model_path = Some(fixture("mlx_switch").to_string_lossy().into_owned());
    let mut m = OlmoeModel::with_mlx_provider(c.clone(), mlx(Availability::Available, None));
    assert_eq!(m.backend(), None);
    assert!(!m.is_loaded());
    let report = m.load().unwrap().clone();
    assert_eq!(report.backend, BackendKind::Mlx);
    assert_eq!(report.model_path, c.mlx_path());
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(report.attempts[0].outcome, Outcome::Loaded);
    assert!(m.is_loaded());
    assert_eq!(m.backend(), Some(BackendKind::Mlx));
    assert!(logs_contain(&format!(
        "Loading OLMoE via MLX: {}",
        c.mlx_path()
    )));
    // encode() works on either path.
    assert_eq!(m.encode(&["hello"]).unwrap()[0].len(), 64);
}

#[test]
#[traced_test]
fn b_use_mlx_false_loads_candle_or_fails_with_both_reasons() {
    let mut c = config("base");
    c.use_mlx = false;
    let mut m = OlmoeModel::with_mlx_provider(c, mlx(Availability::Available, None));
    let report = m.load().unwrap().clone();
    assert_eq!(report.backend, BackendKind::Candle);
    assert_eq!(report.attempts[0].backend, BackendKind::Mlx);
    assert_eq!(report.attempts[0].outcome, Outcome::Skipped);
    assert_eq!(report.attempts[0].reason, "disabled by use_mlx=false");
    assert_eq!(report.attempts[1].outcome, Outcome::Loaded);
    assert!(logs_contain("Loading OLMoE via candle:"));

    let mut c = OlmoeConfig::for_model("/nonexistent/olmoe");
    c.use_mlx = false;
    let mut m = OlmoeModel::with_mlx_provider(c, mlx(Availability::Available, None));
    let err = m.load().unwrap_err().to_string();
    assert!(
        err.starts_with("No inference backend available (MLX and candle both unavailable)"),
        "{err}"
    );
    assert!(
        err.contains("disabled by use_mlx=false") && err.contains("/nonexistent/olmoe"),
        "{err}"
    );
    assert!(!m.is_loaded());
}

#[test]
fn c_mlx_unavailable_falls_to_candle() {
    // This build's own MLX provider: compiled out.
    #[cfg(not(feature = "mlx"))]
    {
        let mut m = OlmoeModel::new(config("base"));
        let report = m.load().unwrap().clone();
        assert_eq!(report.backend, BackendKind::Candle);
        assert_eq!(report.attempts[0].outcome, Outcome::Skipped);
        assert_eq!(
            report.attempts[0].reason,
            "not compiled in (build with --features mlx)"
        );
    }
    // Compiled in but no device.
    let mut m = OlmoeModel::with_mlx_provider(
        config("base"),
        mlx(
            Availability::NoDevice("no device: MLX could not create its default device".into()),
            None,
        ),
    );
    let report = m.load().unwrap().clone();
    assert_eq!(report.backend, BackendKind::Candle);
    assert!(report.attempts[0].reason.starts_with("no device"));
}

#[test]
fn d_no_action_head_after_an_mlx_load() {
    let mut m = OlmoeModel::with_mlx_provider(config("base"), mlx(Availability::Available, None));
    let report = m.load().unwrap().clone();
    assert!(!report.action_head);
    assert!(m.action_head().is_none());
    let err = m
        .act("The user moved to Rome.", &memories())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs the candle path") && err.contains("mlx"),
        "{err}"
    );
}

#[test]
fn d_a_caller_that_needs_the_head_gets_candle_with_mlx_available() {
    let mut m = OlmoeModel::with_mlx_provider(config("base"), mlx(Availability::Available, None));
    let report = m.load_for(Need::ActionHead).unwrap().clone();
    assert_eq!(report.backend, BackendKind::Candle);
    assert!(report.action_head);
    assert_eq!(report.attempts[0].backend, BackendKind::Mlx);
    assert_eq!(report.attempts[0].outcome, Outcome::Skipped);
    assert_eq!(report.attempts[0].reason, HEAD_NEEDS_CANDLE);
    assert_eq!(report.attempts[1].outcome, Outcome::Loaded);
    let action = m.act("The user moved to Rome.", &memories()).unwrap();
    assert!(["ADD", "UPDATE", "DELETE", "NOOP"].contains(&action.op.as_str()));
    // use_mlx=false keeps its own reason: it is checked first.
    let mut c = config("base");
    c.use_mlx = false;
    let mut m = OlmoeModel::with_mlx_provider(c, mlx(Availability::Available, None));
    let report = m.load_for(Need::ActionHead).unwrap().clone();
    assert_eq!(report.attempts[0].reason, "disabled by use_mlx=false");
}

#[test]
fn a_named_backend_is_the_only_one_tried() {
    // candle named: MLX skipped although available.
    let mut m = OlmoeModel::with_mlx_provider(config("base"), mlx(Availability::Available, None));
    let report = m
        .load_for(Need::Backend(BackendKind::Candle))
        .unwrap()
        .clone();
    assert_eq!(report.backend, BackendKind::Candle);
    assert_eq!(report.attempts[0].outcome, Outcome::Skipped);
    assert_eq!(report.attempts[0].reason, "not asked for (backend candle)");
    // MLX named: loads it, and candle is never tried.
    let report = m.load_for(Need::Backend(BackendKind::Mlx)).unwrap().clone();
    assert_eq!(report.backend, BackendKind::Mlx);
    assert_eq!(report.attempts.len(), 1);
    // MLX named but failing: an error, not a fallback to candle.
    let mut m = OlmoeModel::with_mlx_provider(
        config("base"),
        mlx(
            Availability::Available,
            Some("libmlx refused the checkpoint"),
        ),
    );
    let err = m
        .load_for(Need::Backend(BackendKind::Mlx))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("libmlx refused the checkpoint")
            && err.contains("candle: not asked for (backend mlx)"),
        "{err}"
    );
    assert_eq!(m.attempts()[1].outcome, Outcome::Skipped);
    assert!(!m.is_loaded());
}

#[test]
fn loading_reports_each_layer_of_the_chosen_backend() {
    let mut m = OlmoeModel::new(candle_config("base"));
    let mut seen = Vec::new();
    let report = m
        .load_reporting(Need::Inference, &mut |done, total| seen.push((done, total)))
        .unwrap();
    assert_eq!(report.backend, BackendKind::Candle);
    assert_eq!(seen, vec![(1, 2), (2, 2)]);
    assert_eq!(m.model().unwrap().device(), "cpu");
}

#[test]
fn e_action_head_after_a_candle_load() {
    let mut m = OlmoeModel::new(candle_config("base"));
    assert!(m.action_head().is_none());
    let report = m.load().unwrap().clone();
    assert!(report.action_head);
    assert!(m.action_head().is_some());
    let action = m.act("The user moved to Rome.", &memories()).unwrap();
    assert!(["ADD", "UPDATE", "DELETE", "NOOP"].contains(&action.op.as_str()));
    let total: f32 = action.probabilities.values().sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    if let Some(t) = &action.target {
        assert!(t == "m1" || t == "m2");
    }
}

#[test]
#[traced_test]
fn f_both_failing_is_an_error_naming_each_reason() {
    let mut m = OlmoeModel::with_mlx_provider(
        OlmoeConfig::for_model("/nonexistent/olmoe"),
        mlx(
            Availability::Available,
            Some("libmlx refused the checkpoint"),
        ),
    );
    let err = m.load().unwrap_err();
    assert!(matches!(err, Error::NoBackend { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("No inference backend available (MLX and candle both unavailable)"),
        "{msg}"
    );
    assert!(
        msg.contains("mlx: failed:") && msg.contains("libmlx refused the checkpoint"),
        "{msg}"
    );
    assert!(msg.contains("candle: failed:"), "{msg}");
    assert!(!m.is_loaded());
    assert_eq!(m.backend(), None);
    // The attempts stay readable after the failure, with the words of the error.
    let attempts = m.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (attempts[0].backend, attempts[0].outcome),
        (BackendKind::Mlx, Outcome::Failed)
    );
    assert_eq!(
        (attempts[1].backend, attempts[1].outcome),
        (BackendKind::Candle, Outcome::Failed)
    );
    assert!(msg.contains(&attempts[1].reason), "{msg}");
    assert!(logs_contain("MLX load failed, falling back to candle"));
    assert!(logs_contain("No inference backend available"));
}

#[test]
#[traced_test]
fn an_mlx_failure_falls_back_to_candle_and_keeps_the_reason() {
    let mut m = OlmoeModel::with_mlx_provider(
        config("base"),
        mlx(Availability::Available, Some("out of memory")),
    );
    let report = m.load().unwrap().clone();
    assert_eq!(report.backend, BackendKind::Candle);
    assert_eq!(report.attempts[0].outcome, Outcome::Failed);
    assert!(report.attempts[0].reason.contains("out of memory"));
    assert!(report.action_head);
    assert!(logs_contain("Loading OLMoE via MLX:"));
    assert!(logs_contain("MLX load failed, falling back to candle"));
    assert!(logs_contain("Loading OLMoE via candle:"));
}

#[test]
fn encode_of_a_batch_equals_encode_one_by_one_and_matches_transformers() {
    let mut m = OlmoeModel::new(config("gqa_normtopk"));
    m.load().unwrap();
    let texts = [
        "The agent remembers.",
        "Tea",
        "A much longer sentence about memory and facts.",
    ];
    let batch = m.encode(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let one = m.encode(&[t]).unwrap();
        let d = batch[i]
            .iter()
            .zip(&one[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-4, "text {i}: batch vs single differ by {d}");
    }
    // Mean pooling of transformers' final hidden states.
    let r = Reference::load("gqa_normtopk");
    let model = m.model().unwrap();
    let pooled = model
        .encode(&[r.ids("ids_a"), r.ids("ids_b")], Pooling::Mean)
        .unwrap();
    for (row, key) in [(0, "hidden_a"), (1, "hidden_b")] {
        let want = r.get(key).mean(0).unwrap();
        let got = candle_core::Tensor::new(pooled[row].as_slice(), &Device::Cpu).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-4, "{key}: pooled hidden differs by {d}");
    }
    let last = model.encode(&[r.ids("ids_b")], Pooling::Last).unwrap();
    let want = r.get("hidden_b").get(4).unwrap();
    let d = max_abs_diff(
        &candle_core::Tensor::new(last[0].as_slice(), &Device::Cpu).unwrap(),
        &want,
    );
    assert!(d <= 1e-4, "last-token pooling differs by {d}");
}

#[test]
fn encode_under_a_small_token_budget_gives_the_same_vectors_in_the_callers_order() {
    let texts: Vec<String> = (0..40)
        .map(|i| "memory ".repeat(1 + (i * 7) % 23) + &format!("fact {i}"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut one_pass = OlmoeModel::new(OlmoeConfig {
        encode_batch_tokens: usize::MAX,
        ..config("gqa_normtopk")
    });
    one_pass.load().unwrap();
    let mut budgeted = OlmoeModel::new(OlmoeConfig {
        encode_batch_tokens: 64,
        ..config("gqa_normtopk")
    });
    budgeted.load().unwrap();
    let want = one_pass.encode(&refs).unwrap();
    let got = budgeted.encode(&refs).unwrap();
    assert_eq!(got.len(), texts.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-4, "text {i}: budgeted vs one pass differ by {d}");
    }
}

#[test]
fn a_saved_head_loads_back_with_identical_decisions() {
    let mut m = OlmoeModel::new(candle_config("base"));
    m.load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.action_head().unwrap().save(dir.path()).unwrap();
    let before = m.act("The user moved to Rome.", &memories()).unwrap();

    let mut c = candle_config("base");
    c.action_head.seed = 99; // ignored: the saved head wins
    c.action_head_path = Some(dir.path().to_path_buf());
    let mut again = OlmoeModel::new(c);
    again.load().unwrap();
    let after = again.act("The user moved to Rome.", &memories()).unwrap();
    assert_eq!(before, after);

    // A truncated head file is refused with a clear error, and nothing is loaded.
    let file = dir.path().join("head.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let mut c = candle_config("base");
    c.action_head_path = Some(dir.path().to_path_buf());
    let mut broken = OlmoeModel::new(c);
    let err = broken.load().unwrap_err().to_string();
    assert!(err.contains("head.safetensors"), "{err}");
    assert!(!broken.is_loaded());
}

#[test]
fn encode_and_act_before_load_are_errors() {
    let m = OlmoeModel::new(config("base"));
    assert!(matches!(m.encode(&["x"]), Err(Error::NotLoaded)));
    assert!(matches!(m.act("x", &[]), Err(Error::NotLoaded)));
}

/// The real MLX backend (libmlx) in the same selection tests.
#[cfg(feature = "mlx")]
mod real_mlx {
    use super::*;
    use athena::backend::mlx::MlxProvider;

    fn mlx_config(mlx_model: &std::path::Path) -> OlmoeConfig {
        let mut c = config("base");
        c.mlx_model_path = Some(mlx_model.to_string_lossy().into_owned());
        c
    }

    #[test]
    #[traced_test]
    fn a_mlx_is_tried_first_and_loads() {
        assert_eq!(MlxProvider.availability(), Availability::Available);
        let c = mlx_config(&fixture("mlx_q4"));
        let mut m = OlmoeModel::new(c.clone());
        let report = m.load().unwrap().clone();
        assert_eq!(report.backend, BackendKind::Mlx);
        assert_eq!(report.model_path, c.mlx_path());
        assert_eq!(report.attempts.len(), 1);
        assert_eq!(report.attempts[0].outcome, Outcome::Loaded);
        assert!(logs_contain("Loading OLMoE via MLX:"));
        let model = m.model().unwrap();
        assert_eq!(model.kind(), BackendKind::Mlx);
        assert_eq!(m.encode(&["hello"]).unwrap()[0].len(), 64);
        // The real engine: a 4-bit mlx-lm checkpoint gives mlx-lm's logits.
        let r = candle_core::safetensors::load(
            fixture("mlx_q4").join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let ids: Vec<u32> = r["ids_a"]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as u32)
            .collect();
        let got = common::logits_tensor(model, &ids);
        let d = max_abs_diff(&got, &r["logits_a"]);
        assert!(d <= 1e-3, "MLX vs mlx-lm: {d}");
    }

    #[test]
    fn d_no_action_head_after_a_real_mlx_load() {
        let mut m = OlmoeModel::new(config("base"));
        let report = m.load().unwrap().clone();
        assert_eq!(report.backend, BackendKind::Mlx);
        assert!(!report.action_head);
        assert!(m.action_head().is_none());
        let err = m
            .act("The user moved to Rome.", &memories())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs the candle path") && err.contains("mlx"),
            "{err}"
        );
    }

    #[test]
    #[traced_test]
    fn a_corrupt_mlx_checkpoint_falls_back_to_candle_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let src = fixture("mlx_q4");
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let shard = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
        let mut m = OlmoeModel::new(mlx_config(dir.path()));
        let report = m.load().unwrap().clone();
        assert_eq!(report.backend, BackendKind::Candle);
        assert_eq!(report.attempts[0].backend, BackendKind::Mlx);
        assert_eq!(report.attempts[0].outcome, Outcome::Failed);
        assert!(
            report.attempts[0].reason.starts_with("failed:")
                && report.attempts[0].reason.contains("model.safetensors"),
            "{}",
            report.attempts[0].reason
        );
        assert_eq!(report.attempts[1].outcome, Outcome::Loaded);
        assert!(report.action_head);
        assert!(logs_contain("MLX load failed, falling back to candle"));
    }
}
