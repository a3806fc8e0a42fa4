//! Checks, defaults and the learning-rate schedule of a run's configuration.

use super::*;

#[test]
fn validate_names_the_field() {
    let field = |c: TrainConfig| match c.validate() {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Error::Invalid, got {other:?}"),
    };
    let base = TrainConfig::default();
    assert!(base.validate().is_ok());
    assert_eq!(
        field(TrainConfig {
            batch_size: 0,
            ..base.clone()
        }),
        "batch_size"
    );
    assert_eq!(
        field(TrainConfig {
            group_size: 0,
            ..base.clone()
        }),
        "group_size"
    );
    assert_eq!(
        field(TrainConfig {
            mu: 0,
            ..base.clone()
        }),
        "mu"
    );
    assert_eq!(
        field(TrainConfig {
            lr: 0.0,
            ..base.clone()
        }),
        "lr"
    );
    assert_eq!(
        field(TrainConfig {
            weight_decay: -1.0,
            ..base.clone()
        }),
        "weight_decay"
    );
    assert_eq!(
        field(TrainConfig {
            max_grad_norm: f64::NAN,
            ..base.clone()
        }),
        "max_grad_norm"
    );
    let mut c = base.clone();
    c.grpo.beta = -0.1;
    assert_eq!(field(c), "beta");
}

#[test]
fn warmup_is_linear() {
    let c = TrainConfig {
        lr: 1.0,
        warmup_steps: 4,
        ..TrainConfig::default()
    };
    let lrs: Vec<f64> = (0..6).map(|s| c.lr_at(s)).collect();
    assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
}

#[test]
fn the_config_round_trips_and_refuses_unknown_fields() {
    let c: TrainConfig = serde_json::from_str(r#"{"mode":"sft","steps":3}"#).unwrap();
    assert_eq!(c.mode, Mode::Sft);
    assert_eq!(c.steps, 3);
    assert_eq!(c.group_size, 8);
    let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    assert!(serde_json::from_str::<TrainConfig>(r#"{"stepz":3}"#).is_err());
}
