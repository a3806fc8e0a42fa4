//! The head's configuration, initialisation, scores, decisions and gradients.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::params::{HeadDims, Param};
use super::{Action, ActionHeadConfig, MemoryActionHead};
use crate::error::{Error, Result};

pub(super) const WIDTH: usize = 64;

pub(super) fn head(seed: u64) -> MemoryActionHead {
    let config = ActionHeadConfig {
        seed,
        ..ActionHeadConfig::default()
    };
    MemoryActionHead::new(config, WIDTH, &Device::Cpu).unwrap()
}

pub(super) fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub(super) fn random_memories(rng: &mut StdRng, m: usize) -> Vec<(String, Vec<f32>)> {
    (0..m)
        .map(|j| (format!("mem-{j}"), random_vec(rng, WIDTH)))
        .collect()
}

pub(super) fn parameters(head: &MemoryActionHead) -> BTreeMap<String, Vec<f32>> {
    let data = head.varmap().data().lock().unwrap();
    data.iter()
        .map(|(name, var)| {
            let values = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            (name.clone(), values)
        })
        .collect()
}

/// Sets `op.bias` so that the operation at `index` dominates when it is allowed.
fn favour(head: &MemoryActionHead, index: usize) {
    let n = head.config().operations.len();
    let mut bias = vec![0f32; n];
    bias[index] = 100.0;
    let data = head.varmap().data().lock().unwrap();
    data["op.bias"]
        .set(&Tensor::from_vec(bias, n, &Device::Cpu).unwrap())
        .unwrap();
}

pub(super) fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn invalid_field(config: ActionHeadConfig) -> &'static str {
    match config.validate() {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn config_defaults_and_validation_name_the_field() {
    let default = ActionHeadConfig::default();
    default.validate().unwrap();
    let parsed: ActionHeadConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, default);
    assert!(serde_json::from_str::<ActionHeadConfig>(r#"{"proj": 3}"#).is_err());

    let with = |f: fn(&mut ActionHeadConfig)| {
        let mut c = ActionHeadConfig::default();
        f(&mut c);
        c
    };
    let ops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(invalid_field(with(|c| c.operations.clear())), "operations");
    assert_eq!(
        invalid_field(with(|c| c.operations.push("ADD".into()))),
        "operations"
    );
    assert_eq!(
        invalid_field(with(|c| c.operations.push(String::new()))),
        "operations"
    );
    assert_eq!(
        invalid_field(with(|c| c.target_operations.push("MERGE".into()))),
        "target_operations"
    );
    assert_eq!(
        invalid_field(with(|c| c.target_operations.push("UPDATE".into()))),
        "target_operations"
    );
    let all_targets = ActionHeadConfig {
        operations: ops(&["UPDATE", "DELETE"]),
        ..ActionHeadConfig::default()
    };
    assert_eq!(invalid_field(all_targets), "target_operations");
    assert_eq!(invalid_field(with(|c| c.proj_dim = 0)), "proj_dim");
    assert_eq!(invalid_field(with(|c| c.proj_dim = 65537)), "proj_dim");

    let custom = ActionHeadConfig {
        operations: ops(&["KEEP", "REPLACE"]),
        target_operations: ops(&["REPLACE"]),
        ..ActionHeadConfig::default()
    };
    custom.validate().unwrap();
}

#[test]
fn new_refuses_bad_dimensions() {
    let err = MemoryActionHead::new(ActionHeadConfig::default(), 0, &Device::Cpu).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "input_dim",
                ..
            }
        ),
        "{err}"
    );
    let huge = ActionHeadConfig {
        proj_dim: 65536,
        ..ActionHeadConfig::default()
    };
    let err = MemoryActionHead::new(huge, WIDTH, &Device::Cpu).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "proj_dim",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn initialisation_is_deterministic_in_the_seed() {
    let a = parameters(&head(0));
    let b = parameters(&head(0));
    let c = parameters(&head(1));
    assert_eq!(a.len(), 9);
    assert_eq!(a, b);
    for (name, values) in &a {
        assert_ne!(values, &c[name], "{name} does not depend on the seed");
    }
    // Torch-style range: |w| < 1/sqrt(fan_in).
    let bound = 1.0 / (WIDTH as f32).sqrt();
    assert!(a["proj.weight"].iter().all(|v| v.abs() < bound));
}

#[test]
fn scores_have_the_documented_shapes() {
    let head = head(0);
    let fact = Tensor::zeros(WIDTH, DType::F32, &Device::Cpu).unwrap();
    let memories = Tensor::ones((3, WIDTH), DType::F32, &Device::Cpu).unwrap();
    let scores = head.scores(&fact, &memories).unwrap();
    assert_eq!(scores.op_logits.dims(), [4]);
    assert_eq!(scores.target_logits.unwrap().dims(), [3]);
    let none = Tensor::zeros((0, WIDTH), DType::F32, &Device::Cpu).unwrap();
    let scores = head.scores(&fact, &none).unwrap();
    assert_eq!(scores.op_logits.dims(), [4]);
    assert!(scores.target_logits.is_none());

    let wrong = Tensor::zeros((3, WIDTH + 1), DType::F32, &Device::Cpu).unwrap();
    let err = head.scores(&fact, &wrong).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "memories",
                ..
            }
        ),
        "{err}"
    );
    let f64_fact = Tensor::zeros(WIDTH, DType::F64, &Device::Cpu).unwrap();
    let err = head.scores(&f64_fact, &memories).unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "fact", .. }), "{err}");
}

#[test]
fn decide_gives_a_valid_operation_and_distributions() {
    let head = head(0);
    let mut rng = StdRng::seed_from_u64(7);
    for m in [1, 3, 8] {
        let fact = random_vec(&mut rng, WIDTH);
        let memories = random_memories(&mut rng, m);
        let action = head.decide(&fact, &memories).unwrap();
        assert!(head.config().operations.contains(&action.op));
        let keys: Vec<_> = action.probabilities.keys().cloned().collect();
        let mut ops = head.config().operations.clone();
        ops.sort();
        assert_eq!(keys, ops);
        let total: f32 = action.probabilities.values().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(action.target_probabilities.len(), m);
        let total: f32 = action.target_probabilities.values().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(
            action.target.is_some(),
            head.config().target_operations.contains(&action.op)
        );
    }
}

#[test]
fn without_memories_target_operations_are_impossible() {
    let head = head(0);
    favour(&head, 1); // UPDATE, a target operation
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..5 {
        let fact = random_vec(&mut rng, WIDTH);
        let action = head.decide(&fact, &[]).unwrap();
        assert!(action.op == "ADD" || action.op == "NOOP", "{}", action.op);
        assert_eq!(action.probabilities["UPDATE"], 0.0);
        assert_eq!(action.probabilities["DELETE"], 0.0);
        assert!(action.target.is_none());
        assert!(action.target_probabilities.is_empty());
        let total: f32 = action.probabilities.values().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
}

#[test]
fn the_target_is_one_of_the_given_memories() {
    let head = head(0);
    favour(&head, 2); // DELETE
    let mut rng = StdRng::seed_from_u64(11);
    for m in [1, 2, 5] {
        let fact = random_vec(&mut rng, WIDTH);
        let memories = random_memories(&mut rng, m);
        let action = head.decide(&fact, &memories).unwrap();
        assert_eq!(action.op, "DELETE");
        let target = action.target.clone().unwrap();
        assert!(memories.iter().any(|(id, _)| *id == target));
        let best = action
            .target_probabilities
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        assert_eq!(action.target_probabilities[&target], *best.1);
    }
}

#[test]
fn decide_refuses_bad_inputs() {
    let head = head(0);
    let fact = vec![0.5; WIDTH];
    let field = |r: Result<Action>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Error::Invalid, got {other:?}"),
    };
    assert_eq!(field(head.decide(&fact[1..], &[])), "fact");
    let short = vec![("a".to_string(), vec![0.0; WIDTH - 1])];
    assert_eq!(field(head.decide(&fact, &short)), "memories");
    let twice = vec![
        ("a".to_string(), vec![0.0; WIDTH]),
        ("a".to_string(), vec![1.0; WIDTH]),
    ];
    assert_eq!(field(head.decide(&fact, &twice)), "memories");
    let mut nan = fact.clone();
    nan[3] = f32::NAN;
    assert_eq!(field(head.decide(&nan, &[])), "fact");
}

#[test]
fn gradients_reach_every_parameter() {
    let head = head(0);
    let mut rng = StdRng::seed_from_u64(5);
    let fact = Tensor::from_vec(random_vec(&mut rng, WIDTH), WIDTH, &Device::Cpu).unwrap();
    let memories =
        Tensor::from_vec(random_vec(&mut rng, 3 * WIDTH), (3, WIDTH), &Device::Cpu).unwrap();
    let scores = head.scores(&fact, &memories).unwrap();
    let op_lp = candle_nn::ops::log_softmax(&scores.op_logits, D::Minus1).unwrap();
    let target_lp = candle_nn::ops::log_softmax(&scores.target_logits.unwrap(), D::Minus1).unwrap();
    let loss = (op_lp.get(1).unwrap() + target_lp.get(2).unwrap())
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    let vars = head.varmap().data().lock().unwrap();
    assert_eq!(vars.len(), 9);
    for (name, var) in vars.iter() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no grad for {name}"));
        let values = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
        assert!(values.iter().any(|v| *v != 0.0), "zero grad for {name}");
    }
}

#[test]
fn gradients_stay_finite_without_memories() {
    let head = head(0);
    let fact = Tensor::ones(WIDTH, DType::F32, &Device::Cpu).unwrap();
    let none = Tensor::zeros((0, WIDTH), DType::F32, &Device::Cpu).unwrap();
    let scores = head.scores(&fact, &none).unwrap();
    let op_lp = candle_nn::ops::log_softmax(&scores.op_logits, D::Minus1).unwrap();
    let loss = op_lp.get(0).unwrap().neg().unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    let grads = loss.backward().unwrap();
    let vars = head.varmap().data().lock().unwrap();
    for name in ["proj.weight", "proj.bias", "op.weight", "op.bias"] {
        let grad = grads.get(vars[name].as_tensor()).unwrap();
        let values = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
        assert!(values.iter().any(|v| *v != 0.0), "zero grad for {name}");
    }
}

#[test]
fn the_parameter_table_names_every_variable_with_its_shape() {
    let head = head(0);
    let dims = HeadDims {
        input: WIDTH,
        proj: 64,
        ops: 4,
    };
    let vars = head.varmap().data().lock().unwrap();
    assert_eq!(vars.len(), Param::ALL.len());
    for (i, param) in Param::ALL.into_iter().enumerate() {
        assert_eq!(param.index(), i);
        assert_eq!(Param::from_name(param.name()), Some(param));
        let var = &vars[param.name()];
        assert_eq!(var.dims(), param.shape(dims).as_slice(), "{}", param.name());
        assert_eq!(head.param(param).dims(), var.dims());
    }
    assert_eq!(Param::from_name("proj"), None);
}
