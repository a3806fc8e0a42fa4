//! Training the memory action head on the fixture backbone's pooled features: SFT and GRPO
//! on the synthetic memory task, and reproducibility under a fixed seed.

mod common;

use athena::config::OlmoeConfig;
use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};
use athena::models::olmoe::OlmoeModel;
use athena::train::data::{synthetic_examples, Example};
use athena::train::features::FeatureSet;
use athena::train::reward::LabelReward;
use athena::train::trainer::{evaluate, train, Mode, TrainConfig, TrainReport};
use candle_core::Device;
use common::fixture;

struct Setup {
    features: FeatureSet,
    train: Vec<Example>,
    eval: Vec<Example>,
}

fn setup() -> Setup {
    let mut model = OlmoeModel::new(OlmoeConfig::for_model(fixture("base").to_string_lossy()));
    model.load().unwrap();
    let train = synthetic_examples(200, 1);
    let eval = synthetic_examples(80, 2);
    let features = FeatureSet::build(&model, &[&train, &eval], 16, &Device::Cpu).unwrap();
    Setup {
        features,
        train,
        eval,
    }
}

fn head(dim: usize) -> MemoryActionHead {
    let config = ActionHeadConfig {
        proj_dim: 64,
        seed: 3,
        ..ActionHeadConfig::default()
    };
    MemoryActionHead::new(config, dim, &Device::Cpu).unwrap()
}

fn run(s: &Setup, cfg: &TrainConfig) -> TrainReport {
    let head = head(s.features.dim());
    let mut seen = 0;
    let report = train(
        &head,
        &s.features,
        &s.train,
        &s.eval,
        &LabelReward::default(),
        cfg,
        |_| seen += 1,
    )
    .unwrap();
    assert_eq!(seen, cfg.steps);
    eprintln!(
        "{:?}: initial {:.3} -> eval {:.3} (reward {:.3}) in {:.2}s",
        cfg.mode,
        report.initial_eval_accuracy,
        report.eval_accuracy,
        report.eval_reward,
        report.seconds
    );
    report
}

#[test]
fn sft_grpo_and_reproducibility() {
    let s = setup();
    assert_eq!(s.features.dim(), 64);
    let reward = LabelReward::default();
    let initial = evaluate(&head(64), &s.features, &s.eval, &reward).unwrap();
    eprintln!("initial eval accuracy {:.3}", initial.accuracy);
    assert!(initial.accuracy < 0.45, "{}", initial.accuracy);

    let sft = TrainConfig {
        mode: Mode::Sft,
        steps: 500,
        batch_size: 16,
        lr: 1e-2,
        warmup_steps: 10,
        seed: 5,
        ..TrainConfig::default()
    };
    let report = run(&s, &sft);
    assert_eq!(report.initial_eval_accuracy, initial.accuracy);
    // The head fits the training set: the last steps' batches are all but perfectly right.
    let tail = &report.history[report.history.len() - 20..];
    let fit = tail.iter().map(|l| l.accuracy).sum::<f32>() / tail.len() as f32;
    assert!(fit >= 0.95, "SFT train accuracy {fit}");
    // On held-out examples the random fixture backbone's pooled features do not reach 0.9:
    // measured 0.800 here (0.800 also with 800 steps, train accuracy 1.0), so the bound is
    // that measurement with margin.
    assert!(
        report.eval_accuracy >= 0.7,
        "SFT eval accuracy {}",
        report.eval_accuracy
    );

    let grpo = TrainConfig {
        mode: Mode::Grpo,
        steps: 200,
        batch_size: 16,
        group_size: 8,
        mu: 2,
        lr: 3e-3,
        seed: 5,
        ..TrainConfig::default()
    };
    let a = run(&s, &grpo);
    let b = run(&s, &grpo);
    assert_eq!(a.history, b.history);
    assert_eq!(a.eval_accuracy, b.eval_accuracy);
    // Measured: 0.200 -> 0.700 after 200 steps; the bound asks for half of that gain.
    assert!(
        a.eval_accuracy >= a.initial_eval_accuracy + 0.25,
        "GRPO eval accuracy {} from {}",
        a.eval_accuracy,
        a.initial_eval_accuracy
    );
    let first = a.history[..20].iter().map(|l| l.reward_mean).sum::<f32>();
    let last = a.history[a.history.len() - 20..]
        .iter()
        .map(|l| l.reward_mean)
        .sum::<f32>();
    assert!(
        last > first + 20.0 * 0.3,
        "GRPO reward {first} -> {last} (sums of 20 steps)"
    );
}
