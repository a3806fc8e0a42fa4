//! Training the memory action head on the fixture backbone's pooled features, run through
//! the real candle path: SFT and GRPO lift held-out accuracy from chance to >= 90% encoding
//! each text once, a fixed seed reproduces a run, a resumed run equals an uninterrupted one bit for
//! bit, the feature cache is read instead of encoding again, and a model on MLX is refused.

mod common;

use athena::backend::candle::{load_olmoe, Olmoe};
use athena::backend::{
    Availability, Backend, BackendKind, BackendProvider, DecodeSession, LoadSpec, Pooling,
};
use athena::checkpoint::OlmoeArgs;
use athena::config::OlmoeConfig;
use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};
use athena::models::olmoe::OlmoeModel;
use athena::train::data::{synthetic_examples, Example};
use athena::train::features::FeatureStore;
use athena::train::grpo::GrpoConfig;
use athena::train::reward::LabelReward;
use athena::train::trainer::{
    evaluate, head_for_training, Event, Mode, Task, TrainConfig, TrainOptions, TrainReport, Trainer,
};
use athena::{Error, Result};
use candle_core::{DType, Device};
use common::fixture;

fn model() -> OlmoeModel {
    let mut c = OlmoeConfig::for_model(fixture("base").to_string_lossy());
    c.use_mlx = false;
    let mut model = OlmoeModel::new(c);
    model.load().unwrap();
    model
}

fn head(dim: usize) -> MemoryActionHead {
    let config = ActionHeadConfig {
        proj_dim: 64,
        seed: 3,
        ..ActionHeadConfig::default()
    };
    MemoryActionHead::new(config, dim, &Device::Cpu).unwrap()
}

fn sft() -> TrainConfig {
    TrainConfig {
        mode: Mode::Sft,
        steps: 1000,
        batch_size: 16,
        lr: 3e-3,
        warmup_steps: 10,
        seed: 5,
        ..TrainConfig::default()
    }
}

fn grpo() -> TrainConfig {
    TrainConfig {
        mode: Mode::Grpo,
        steps: 1500,
        batch_size: 16,
        group_size: 8,
        mu: 2,
        lr: 3e-3,
        warmup_steps: 10,
        seed: 5,
        ..TrainConfig::default()
    }
}

/// Trains a fresh head, features included: the report, the head, the events, the store.
fn train_fresh<'m>(
    model: &'m OlmoeModel,
    train_set: &[Example],
    eval_set: &[Example],
    cfg: &TrainConfig,
    opts: &TrainOptions,
    cache: Option<&std::path::Path>,
) -> (TrainReport, MemoryActionHead, Vec<Event>, FeatureStore<'m>) {
    let mut features = FeatureStore::for_model(model, cache, 16, &Device::Cpu).unwrap();
    let head = head(64);
    let mut events = Vec::new();
    let task = Task {
        train: train_set,
        eval: eval_set,
        reward: &LabelReward::default(),
    };
    let report = Trainer::new(&head, &mut features, task, cfg, opts)
        .unwrap()
        .run(|e| events.push(e.clone()))
        .unwrap();
    eprintln!(
        "{:?}: initial {:.3} -> eval {:.3} (reward {:.3}), {} steps in {:.2}s; epochs {:?}",
        cfg.mode,
        report.initial_eval_accuracy,
        report.eval_accuracy,
        report.eval_reward,
        report.steps,
        report.seconds,
        report
            .epochs
            .iter()
            .map(|e| (
                e.epoch,
                (e.seconds * 1000.0).round() / 1000.0,
                e.encoded_texts
            ))
            .collect::<Vec<_>>()
    );
    (report, head, events, features)
}

fn parameters(head: &MemoryActionHead) -> Vec<(String, Vec<u32>)> {
    let data = head.varmap().data().lock().unwrap();
    let mut out: Vec<(String, Vec<u32>)> = data
        .iter()
        .map(|(n, v)| {
            let bits = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            (n.clone(), bits)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sft_and_grpo_reach_ninety_percent_encoding_each_text_once() {
    let model = model();
    let train_set = synthetic_examples(2000, 1);
    let eval_set = synthetic_examples(200, 2);
    for cfg in [grpo(), sft()] {
        let (report, _, events, features) = train_fresh(
            &model,
            &train_set,
            &eval_set,
            &cfg,
            &TrainOptions::default(),
            None,
        );
        assert!(
            report.initial_eval_accuracy < 0.4,
            "{:?} starts at {}",
            cfg.mode,
            report.initial_eval_accuracy
        );
        assert!(
            report.eval_accuracy >= 0.9,
            "{:?} eval accuracy {} from {}",
            cfg.mode,
            report.eval_accuracy,
            report.initial_eval_accuracy
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Step(_)))
                .count(),
            cfg.steps
        );
        // The first epoch encodes the texts; the later ones read them from memory.
        assert!(report.epochs.len() >= 2);
        assert!(report.epochs[0].encoded_texts > 0);
        assert!(report.epochs[1..].iter().all(|e| e.encoded_texts == 0));
        // Every text the run needed was encoded exactly once: the store holds each, and the
        // backbone ran once per text.
        assert_eq!(features.stats().encoded, features.len());
        let in_epochs: usize = report.epochs.iter().map(|e| e.encoded_texts).sum();
        assert_eq!(in_epochs, report.epochs[0].encoded_texts);
        assert!(in_epochs <= features.len());
        // Epochs are the same number of steps each, and each later one reports its speed-up
        // over the first from its own timing.
        let per_epoch = report.epochs[0].end_step;
        for (i, e) in report.epochs.iter().enumerate() {
            assert_eq!(e.epoch, i + 1);
            assert_eq!(e.end_step, per_epoch * (i + 1), "{e:?}");
        }
        let first = report.epochs[0].seconds;
        assert!(report.epochs[0].speedup_vs_first.is_none());
        for e in &report.epochs[1..] {
            let ratio = e.speedup_vs_first.unwrap();
            assert!((ratio - first / e.seconds).abs() <= 1e-9 * ratio, "{e:?}");
        }
        // The step that ends an epoch carries its timing in the log.
        let logged = events.iter().find_map(|e| match e {
            Event::Step(s) => s.epoch_end.as_ref().filter(|x| x.epoch == 2),
            _ => None,
        });
        assert_eq!(logged, Some(&report.epochs[1]));
    }
}

/// A short GRPO run with the KL penalty on (the run keeps its own frozen reference head).
fn short_grpo(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        grpo: GrpoConfig {
            beta: 0.04,
            ..GrpoConfig::default()
        },
        eval_every: 5,
        ..grpo()
    }
}

#[test]
fn a_seeded_run_repeats_and_a_resumed_run_equals_an_uninterrupted_one() {
    let model = model();
    let train_set = synthetic_examples(200, 1);
    let eval_set = synthetic_examples(40, 2);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");

    // Straight: 2N steps.
    let (a, head_a, events, _) = train_fresh(
        &model,
        &train_set,
        &eval_set,
        &short_grpo(20),
        &TrainOptions::default(),
        Some(&cache),
    );
    // The KL to the frozen initial head is logged, and grows from ~0 as the head moves.
    assert!(a.history[0].kl < 1e-3, "{:?}", a.history[0]);
    assert!(a.history[19].kl > a.history[0].kl, "{:?}", a.history[19]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Step(s) if s.eval_accuracy.is_some())));
    let (b, head_b, _, _) = train_fresh(
        &model,
        &train_set,
        &eval_set,
        &short_grpo(20),
        &TrainOptions::default(),
        Some(&cache),
    );
    assert_eq!(a.history, b.history);
    assert_eq!(parameters(&head_a), parameters(&head_b));

    // N steps with a checkpoint, then a new process's worth of state resumes for N more.
    let ckpt = dir.path().join("run");
    let first = TrainOptions {
        checkpoint_dir: Some(ckpt.clone()),
        checkpoint_every: 10,
        ..TrainOptions::default()
    };
    let (_, _, events, _) = train_fresh(
        &model,
        &train_set,
        &eval_set,
        &short_grpo(10),
        &first,
        Some(&cache),
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Checkpoint { checkpoint: 10, .. })));
    let resumed = TrainOptions {
        resume: true,
        ..first
    };
    let (c, head_c, _, _) = train_fresh(
        &model,
        &train_set,
        &eval_set,
        &short_grpo(20),
        &resumed,
        Some(&cache),
    );
    assert_eq!(parameters(&head_c), parameters(&head_a));
    assert_eq!(c.history, a.history);
    assert_eq!(c.eval_accuracy, a.eval_accuracy);

    // Another configuration cannot resume this checkpoint.
    let mut other = short_grpo(30);
    other.lr *= 2.0;
    let mut features = FeatureStore::for_model(&model, Some(&cache), 16, &Device::Cpu).unwrap();
    let task = Task {
        train: &train_set,
        eval: &eval_set,
        reward: &LabelReward::default(),
    };
    let head = head(64);
    let err = Trainer::new(&head, &mut features, task, &other, &resumed)
        .and_then(|mut trainer| trainer.run(|_| {}))
        .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("training configuration"), "{err}");
}

#[test]
fn the_second_run_reads_the_feature_cache_instead_of_encoding() {
    let model = model();
    let train_set = synthetic_examples(100, 1);
    let eval_set = synthetic_examples(20, 2);
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { steps: 20, ..sft() };
    let (_, _, _, first) = train_fresh(
        &model,
        &train_set,
        &eval_set,
        &cfg,
        &TrainOptions::default(),
        Some(dir.path()),
    );
    let stats = first.stats();
    assert_eq!(stats.from_cache, 0);
    assert!(stats.encoded > 0);
    let path = first.cache_path().unwrap().to_path_buf();
    assert!(path.exists());
    let encoded = stats.encoded;
    drop(first);

    let (_, _, _, second) = train_fresh(
        &model,
        &train_set,
        &eval_set,
        &cfg,
        &TrainOptions::default(),
        Some(dir.path()),
    );
    assert_eq!(second.stats().from_cache, encoded);
    assert_eq!(second.stats().encoded, 0);
    // The cached vectors are the backbone's own (encoded alone rather than in a padded
    // batch, they differ only by rounding).
    let text = &train_set[0].fact;
    let direct = model.encode(&[text.as_str()]).unwrap().remove(0);
    let cached = second.vector(text).unwrap();
    assert_eq!(cached.len(), direct.len());
    for (a, b) in cached.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    // Another pooling is another model identity: another file, encoded afresh.
    let mut c = OlmoeConfig::for_model(fixture("base").to_string_lossy());
    c.use_mlx = false;
    c.pooling = Pooling::Last;
    let mut last = OlmoeModel::new(c);
    last.load().unwrap();
    let store = FeatureStore::for_model(&last, Some(dir.path()), 16, &Device::Cpu).unwrap();
    assert_eq!(store.stats().from_cache, 0);
    assert_ne!(store.cache_path().unwrap(), path);

    // A damaged cache file is refused with its path.
    std::fs::write(&path, b"not safetensors").unwrap();
    let err = FeatureStore::for_model(&model, Some(dir.path()), 16, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("features-"), "{err}");
}

/// The candle engine presented as MLX: stands in for libmlx, which this test does not need.
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

/// MLX simulated as available.
struct SimulatedMlx;

impl BackendProvider for SimulatedMlx {
    fn kind(&self) -> BackendKind {
        BackendKind::Mlx
    }
    fn availability(&self) -> Availability {
        Availability::Available
    }
    fn load_reporting(
        &self,
        spec: &LoadSpec,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Backend>> {
        Ok(Box::new(AsMlx(load_olmoe(
            std::path::Path::new(&spec.model),
            &Device::Cpu,
            DType::F32,
            on_layer,
        )?)))
    }
}

#[test]
fn a_model_on_mlx_is_refused_with_the_candle_path_named() {
    let mut c = OlmoeConfig::for_model(fixture("base").to_string_lossy());
    c.use_mlx = true;
    let mut model = OlmoeModel::with_mlx_provider(c, Box::new(SimulatedMlx));
    assert!(matches!(head_for_training(&model), Err(Error::NotLoaded)));
    model.load().unwrap();
    assert_eq!(model.backend(), Some(BackendKind::Mlx));
    let err = head_for_training(&model).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NeedsCandle {
                backend: BackendKind::Mlx,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("candle path") && msg.contains("use_mlx=false"),
        "{msg}"
    );

    // The same checkpoint on the candle path gives the head, which evaluates.
    let model = self::model();
    let head = head_for_training(&model).unwrap();
    let mut features = FeatureStore::for_model(&model, None, 16, &Device::Cpu).unwrap();
    let e = evaluate(
        head,
        &mut features,
        &synthetic_examples(8, 3),
        &LabelReward::default(),
    )
    .unwrap();
    assert!((0.0..=1.0).contains(&e.accuracy));
}
