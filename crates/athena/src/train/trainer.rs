//! Training the [`MemoryActionHead`] on frozen backbone features ([`FeatureStore`]):
//! supervised cross-entropy ([`Mode::Sft`]) or GRPO on sampled actions ([`Mode::Grpo`]), with
//! AdamW, linear LR warm-up, clipping of the global gradient norm, an optional k3 KL penalty
//! against a frozen reference head, periodic evaluation, and atomic checkpoints from which a
//! run resumes bit for bit.
//!
//! Every example of a step is scored in one batched pass of the head
//! ([`MemoryActionHead::batch_scores`]); the features of a step's texts are encoded when the
//! step first needs them, so the first epoch pays for the backbone and later ones do not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::models::action_head::MemoryActionHead;
use crate::models::olmoe::OlmoeModel;
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::data::Example;
use crate::train::features::FeatureStore;
use crate::train::grpo::{group_advantages, grpo_loss, GrpoConfig};
use crate::train::head_grad::{self, log_softmax_rows, Params, Rows, Tape};
use crate::train::optim::{AdamW, AdamWParams};
use crate::train::reward::{is_correct, Reward};
use crate::train::rng::SplitMix64;

/// Examples scored per pass when evaluating.
const EVAL_BATCH: usize = 256;

/// What the head is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// GRPO on actions sampled from the head, rewarded by a [`Reward`].
    #[default]
    Grpo,
    /// Cross-entropy on the labelled operation, plus on the target when the label names one.
    Sft,
}

/// Hyper-parameters of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// GRPO or SFT. Default GRPO.
    pub mode: Mode,
    /// Optimisation batches. Default 200.
    pub steps: usize,
    /// Examples per batch. Default 16.
    pub batch_size: usize,
    /// Actions sampled per example (GRPO). Default 8.
    pub group_size: usize,
    /// Optimisation steps per sampled batch (GRPO; SFT takes one). Default 1.
    pub mu: usize,
    /// Peak learning rate. Default 1e-3.
    pub lr: f64,
    /// AdamW weight decay. Default 0.
    pub weight_decay: f64,
    /// Steps of linear warm-up to `lr`. Default 0.
    pub warmup_steps: usize,
    /// Gradients are rescaled when their global norm exceeds this; 0 disables. Default 1.
    pub max_grad_norm: f64,
    /// Seed of batch order and action sampling. Default 0.
    pub seed: u64,
    /// The GRPO objective; with `beta > 0` a frozen reference head is kept (see
    /// [`TrainOptions::reference`]).
    pub grpo: GrpoConfig,
    /// Evaluate every this many steps (0: only at the end). Default 0.
    pub eval_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Grpo,
            steps: 200,
            batch_size: 16,
            group_size: 8,
            mu: 1,
            lr: 1e-3,
            weight_decay: 0.0,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            seed: 0,
            grpo: GrpoConfig::default(),
            eval_every: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every field, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("group_size", self.group_size),
            ("mu", self.mu),
        ] {
            if v == 0 {
                return Err(Error::invalid(field, "must be >= 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "lr",
                format!("must be finite and > 0, got {}", self.lr),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(
                "weight_decay",
                format!("must be finite and >= 0, got {}", self.weight_decay),
            ));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(Error::invalid(
                "max_grad_norm",
                format!("must be finite and >= 0, got {}", self.max_grad_norm),
            ));
        }
        self.grpo.validate()
    }

    /// The learning rate of step `step` (0-based): linear warm-up, then constant.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            self.lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            self.lr
        }
    }
}

/// What one optimisation batch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based step.
    pub step: usize,
    /// Loss (mean over the `mu` optimisation steps).
    pub loss: f32,
    /// Mean reward of the batch's actions (sampled for GRPO, greedy for SFT).
    pub reward_mean: f32,
    /// Their standard deviation (population).
    pub reward_std: f32,
    /// Fraction of those actions that are correct.
    pub accuracy: f32,
    /// Mean k3 KL of the sampled actions against the reference head (0 when none is kept).
    pub kl: f32,
    /// Fraction of clipped ratios (GRPO; 0 for SFT).
    pub clip_fraction: f32,
    /// Mean entropy of the operation distribution, in nats.
    pub entropy: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Greedy accuracy on the evaluation set, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f32>,
    /// Mean greedy reward on the evaluation set, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_reward: Option<f32>,
    /// The epoch this step completed, with its timing (only in the [`Event::Step`] of that
    /// step; timings are not kept in [`TrainReport::history`], which a resumed run repeats
    /// exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_end: Option<EpochLog>,
}

/// One pass over the training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// The step that completed it.
    pub end_step: usize,
    /// Wall time of its steps, feature encoding included, evaluations excluded.
    pub seconds: f64,
    /// Of which encoding texts with the backbone.
    pub encode_seconds: f64,
    /// Texts the backbone encoded during the epoch (0 once every text is cached).
    pub encoded_texts: usize,
    /// From the second epoch on: the first epoch's `seconds` divided by this one's, i.e. how
    /// much faster this epoch ran than the one that encoded the texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedup_vs_first: Option<f64>,
}

/// A line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// A step.
    Step(StepLog),
    /// An epoch's timing.
    Epoch(EpochLog),
    /// A checkpoint written after `checkpoint` steps.
    Checkpoint {
        /// Steps done.
        checkpoint: usize,
        /// The file.
        path: PathBuf,
    },
}

/// Greedy accuracy and mean reward on a set of examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Fraction of examples where the greedy action is correct ([`is_correct`]).
    pub accuracy: f32,
    /// Mean reward of the greedy action.
    pub reward: f32,
}

/// The outcome of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Steps taken in all (those of a resumed run's earlier part included).
    pub steps: usize,
    /// Wall time of this run's training, evaluations included.
    pub seconds: f64,
    /// Greedy accuracy on the evaluation set before training.
    pub initial_eval_accuracy: f32,
    /// Greedy accuracy on the evaluation set after training.
    pub eval_accuracy: f32,
    /// Mean greedy reward on the evaluation set after training.
    pub eval_reward: f32,
    /// One entry per step (from step 1, also when resumed).
    pub history: Vec<StepLog>,
    /// One entry per completed epoch.
    pub epochs: Vec<EpochLog>,
}

/// How a run is set up beyond its hyper-parameters.
#[derive(Debug, Default)]
pub struct TrainOptions<'a> {
    /// The frozen reference head of the KL penalty. When `beta > 0` and this is `None`, a
    /// frozen copy of the head as it is before the first step is kept (and checkpointed).
    pub reference: Option<&'a MemoryActionHead>,
    /// Where checkpoints go ([`checkpoint::CHECKPOINT_FILE`] in this directory).
    pub checkpoint_dir: Option<PathBuf>,
    /// Write a checkpoint every this many steps (0: only at the end, when a directory is set).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in `checkpoint_dir` (an error when there is none).
    pub resume: bool,
}

/// The head of a loaded model, to train. Training needs the candle path: a model that runs
/// on MLX (which carries no trainable head) is refused with [`Error::NeedsCandle`], whose
/// message says to load it with `use_mlx=false`.
pub fn head_for_training(model: &OlmoeModel) -> Result<&MemoryActionHead> {
    let backend = model.backend().ok_or(Error::NotLoaded)?;
    match model.action_head() {
        Some(head) if backend == BackendKind::Candle => Ok(head),
        _ => Err(Error::NeedsCandle {
            what: "training the action head (load the model with use_mlx=false)",
            backend,
        }),
    }
}

/// Index of the largest value, the first on ties (as [`MemoryActionHead::decide`]).
fn argmax(values: &[f32]) -> usize {
    crate::generate::argmax(values) as usize
}

fn op_index(head: &MemoryActionHead, op: &str) -> Result<usize> {
    head.config()
        .operations
        .iter()
        .position(|o| o == op)
        .ok_or_else(|| Error::invalid("label", format!("operation `{op}` is not the head's")))
}

fn is_target_op(head: &MemoryActionHead, op: &str) -> bool {
    head.config().target_operations.iter().any(|t| t == op)
}

/// Greedy actions `(op, target)` of every example of a batch, from its operation logits
/// `[B, n]` and target logits `[B, M]` (row-major).
fn greedy(
    head: &MemoryActionHead,
    batch: &[&Example],
    op_logits: &[f32],
    target_logits: &[f32],
    m: usize,
) -> Vec<(String, Option<String>)> {
    let ops = &head.config().operations;
    let n = ops.len();
    let mut out = Vec::with_capacity(batch.len());
    for (i, ex) in batch.iter().enumerate() {
        let op = ops[argmax(&op_logits[i * n..(i + 1) * n])].clone();
        let mut target = None;
        if is_target_op(head, &op) && !ex.memories.is_empty() && m > 0 {
            let row = &target_logits[i * m..i * m + ex.memories.len().min(m)];
            target = ex.memories.get(argmax(row)).map(|m| m.id.clone());
        }
        out.push((op, target));
    }
    out
}

/// Greedy accuracy and mean reward of `head` on `examples` (zeros when there are none),
/// encoding the texts not held yet.
pub fn evaluate(
    head: &MemoryActionHead,
    features: &mut FeatureStore,
    examples: &[Example],
    reward: &dyn Reward,
) -> Result<Evaluation> {
    if examples.is_empty() {
        return Ok(Evaluation {
            accuracy: 0.0,
            reward: 0.0,
        });
    }
    features.ensure_examples(examples)?;
    let (mut correct, mut total) = (0usize, 0f64);
    for chunk in examples.chunks(EVAL_BATCH) {
        let batch: Vec<&Example> = chunk.iter().collect();
        let (facts, memories, counts) = features.batch(&batch)?;
        let s = head.batch_scores(&facts, &memories, &counts)?;
        let ops = s.op_logits.flatten_all()?.to_vec1::<f32>()?;
        let (targets, m) = match &s.target_logits {
            Some(t) => (t.flatten_all()?.to_vec1::<f32>()?, t.dim(1)?),
            None => (Vec::new(), 0),
        };
        for (ex, (op, target)) in batch.iter().zip(greedy(head, &batch, &ops, &targets, m)) {
            correct += usize::from(is_correct(ex, &op, target.as_deref()));
            total += f64::from(reward.reward(ex, &op, target.as_deref()));
        }
    }
    let n = examples.len() as f64;
    Ok(Evaluation {
        accuracy: (correct as f64 / n) as f32,
        reward: (total / n) as f32,
    })
}

/// The head's variables in name order (so that every sum over them is reproducible).
pub(crate) fn sorted_vars(head: &MemoryActionHead) -> Vec<(String, Var)> {
    let data = head
        .varmap()
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut named: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Clips the head's gradients (in [`head_grad::NAMES`] order) to the global norm `max_norm`
/// (0: none) and takes one optimiser step.
fn optimise(opt: &mut AdamW, grads: [Vec<f32>; 9], max_norm: f64) -> Result<()> {
    let mut grads = grads.map(Some);
    let mut ordered = Vec::with_capacity(opt.vars().len());
    for (name, _) in opt.vars() {
        let g = head_grad::NAMES
            .iter()
            .position(|n| n == name)
            .and_then(|i| grads[i].take());
        ordered.push(g);
    }
    let sq: f64 = ordered
        .iter()
        .flatten()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::tensor(
            "gradients",
            "the gradient norm is not finite; training diverged",
        ));
    }
    if max_norm > 0.0 && norm > max_norm {
        let scale = (max_norm / (norm + 1e-6)) as f32;
        for x in ordered.iter_mut().flatten().flat_map(|g| g.iter_mut()) {
            *x = *x * scale + 0.0;
        }
    }
    opt.step_flat(&ordered)
}

/// Mean entropy (nats) of categorical distributions given as log-probabilities `[N, k]`;
/// impossible classes (probability 0) contribute nothing.
fn mean_entropy_of(logp: &[f32], k: usize) -> f32 {
    let rows = logp.len() / k.max(1);
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = logp
        .chunks_exact(k)
        .map(|row| {
            -row.iter()
                .map(|&l| {
                    let p = l.exp();
                    if p > 0.0 {
                        f64::from(p * l)
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
        })
        .sum();
    (total / rows as f64) as f32
}

fn mean_std(values: &[f32]) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, var.sqrt() as f32)
}

/// Index drawn from probabilities `p` with a uniform draw `u` in [0, 1).
fn sample(p: &[f32], u: f64) -> usize {
    let mut acc = 0f64;
    let mut last = 0;
    for (i, &x) in p.iter().enumerate() {
        if x > 0.0 {
            acc += f64::from(x);
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

/// Where a run stands: everything a checkpoint must hold besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub step: usize,
    pub rng: u64,
    pub order: Vec<usize>,
    pub cursor: usize,
    pub epoch: usize,
    pub initial_eval_accuracy: f32,
    pub history: Vec<StepLog>,
    pub epochs: Vec<EpochLog>,
}

/// Trains `head` in place on `train`, evaluating on `eval`; `on_event` sees every step,
/// epoch and checkpoint, in order (the JSONL log is these events, one a line).
#[allow(clippy::too_many_arguments)]
pub fn train(
    head: &MemoryActionHead,
    features: &mut FeatureStore,
    train: &[Example],
    eval: &[Example],
    reward: &dyn Reward,
    cfg: &TrainConfig,
    opts: &TrainOptions,
    mut on_event: impl FnMut(&Event),
) -> Result<TrainReport> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(Error::invalid("train", "no training examples"));
    }
    let start = Instant::now();
    let vars = sorted_vars(head);
    let mut opt = AdamW::new(
        vars,
        AdamWParams {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..AdamWParams::default()
        },
    )?;
    let ckpt_path = opts
        .checkpoint_dir
        .as_deref()
        .map(|d| d.join(checkpoint::CHECKPOINT_FILE));
    let kl_wanted = cfg.mode == Mode::Grpo && (cfg.grpo.beta > 0.0 || opts.reference.is_some());

    let (mut progress, own_reference) = if opts.resume {
        let path = ckpt_path
            .as_deref()
            .ok_or_else(|| Error::invalid("resume", "needs a checkpoint directory"))?;
        let ck = Checkpoint::read(path)?;
        ck.check_compatible(path, head, cfg, train.len())?;
        let reference = ck.restore(path, head, &mut opt)?;
        let mut progress = ck.progress;
        // JSON does not carry every f64 exactly; the learning rates follow from the
        // (checked equal) configuration.
        for log in &mut progress.history {
            log.lr = cfg.lr_at(log.step.saturating_sub(1));
        }
        (progress, reference)
    } else {
        if features.dim() != 0 && features.dim() != head.input_dim() {
            return Err(Error::invalid(
                "features",
                format!(
                    "width {} does not match the head's input_dim {}",
                    features.dim(),
                    head.input_dim()
                ),
            ));
        }
        let initial = evaluate(head, features, eval, reward)?;
        let reference = if kl_wanted && opts.reference.is_none() {
            Some(head.frozen_copy()?)
        } else {
            None
        };
        let progress = Progress {
            step: 0,
            rng: cfg.seed,
            order: (0..train.len()).collect(),
            cursor: train.len(),
            epoch: 0,
            initial_eval_accuracy: initial.accuracy,
            history: Vec::with_capacity(cfg.steps),
            epochs: Vec::new(),
        };
        (progress, reference)
    };
    let reference = opts.reference.or(own_reference.as_ref());
    if let Some(r) = reference {
        if r.input_dim() != head.input_dim() || r.config().operations != head.config().operations {
            return Err(Error::invalid(
                "reference",
                "the reference head's input width or operations differ from the head's",
            ));
        }
    }
    if features.dim() != 0 && features.dim() != head.input_dim() {
        return Err(Error::invalid(
            "features",
            format!(
                "width {} does not match the head's input_dim {}",
                features.dim(),
                head.input_dim()
            ),
        ));
    }

    // The reference head is frozen: its parameters are read once.
    let reference_params = reference.map(Params::read).transpose()?;
    let mut rng = SplitMix64::new(progress.rng);
    let (mut epoch_seconds, mut epoch_encode, mut epoch_encoded) = (0f64, 0f64, 0usize);
    while progress.step < cfg.steps {
        let step = progress.step;
        let step_start = Instant::now();
        let before = features.stats();
        let mut batch = Vec::with_capacity(cfg.batch_size);
        let mut epoch_done = false;
        while batch.len() < cfg.batch_size {
            if progress.cursor == progress.order.len() {
                rng.shuffle(&mut progress.order);
                progress.cursor = 0;
            }
            batch.push(&train[progress.order[progress.cursor]]);
            progress.cursor += 1;
            if progress.cursor == progress.order.len() {
                epoch_done = true;
            }
        }
        features.ensure_examples(batch.iter().copied())?;
        if features.dim() != head.input_dim() {
            return Err(Error::invalid(
                "features",
                format!(
                    "width {} does not match the head's input_dim {}",
                    features.dim(),
                    head.input_dim()
                ),
            ));
        }
        let lr = cfg.lr_at(step);
        opt.params.lr = lr;
        let mut log = match cfg.mode {
            Mode::Sft => sft_step(head, features, &batch, reward, &mut opt, cfg)?,
            Mode::Grpo => grpo_step(
                head,
                reference_params.as_ref(),
                features,
                &batch,
                reward,
                &mut opt,
                cfg,
                &mut rng,
            )?,
        };
        let after = features.stats();
        epoch_seconds += step_start.elapsed().as_secs_f64();
        epoch_encode += after.encode_seconds - before.encode_seconds;
        epoch_encoded += after.encoded - before.encoded;
        progress.step = step + 1;
        log.step = progress.step;
        log.lr = lr;
        if cfg.eval_every > 0 && progress.step % cfg.eval_every == 0 {
            let e = evaluate(head, features, eval, reward)?;
            log.eval_accuracy = Some(e.accuracy);
            log.eval_reward = Some(e.reward);
        }
        progress.history.push(log.clone());
        if epoch_done {
            progress.epoch += 1;
            let speedup_vs_first = match progress.epochs.first() {
                Some(first) if epoch_seconds > 0.0 => Some(first.seconds / epoch_seconds),
                _ => None,
            };
            let e = EpochLog {
                epoch: progress.epoch,
                end_step: progress.step,
                seconds: epoch_seconds,
                encode_seconds: epoch_encode,
                encoded_texts: epoch_encoded,
                speedup_vs_first,
            };
            (epoch_seconds, epoch_encode, epoch_encoded) = (0.0, 0.0, 0);
            log.epoch_end = Some(e.clone());
            on_event(&Event::Step(log));
            on_event(&Event::Epoch(e.clone()));
            progress.epochs.push(e);
            features.flush()?;
        } else {
            on_event(&Event::Step(log));
        }
        let due = opts.checkpoint_every > 0 && progress.step % opts.checkpoint_every == 0;
        if let (Some(path), true) = (&ckpt_path, due || progress.step == cfg.steps) {
            progress.rng = rng.state();
            features.flush()?;
            checkpoint::write(path, head, &opt, own_reference.as_ref(), cfg, &progress)?;
            on_event(&Event::Checkpoint {
                checkpoint: progress.step,
                path: path.clone(),
            });
        }
    }
    features.flush()?;
    let last = evaluate(head, features, eval, reward)?;
    features.flush()?;
    if let Some(log) = progress.history.last_mut() {
        log.eval_accuracy = Some(last.accuracy);
        log.eval_reward = Some(last.reward);
    }
    Ok(TrainReport {
        steps: progress.step,
        seconds: start.elapsed().as_secs_f64(),
        initial_eval_accuracy: progress.initial_eval_accuracy,
        eval_accuracy: last.accuracy,
        eval_reward: last.reward,
        history: progress.history,
        epochs: progress.epochs,
    })
}

/// The checkpoint file of a directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(checkpoint::CHECKPOINT_FILE)
}

/// The step a checkpoint file was written after.
pub fn checkpoint_step(path: &Path) -> Result<usize> {
    Ok(Checkpoint::read(path)?.progress.step)
}

fn empty_log() -> StepLog {
    StepLog {
        step: 0,
        loss: 0.0,
        reward_mean: 0.0,
        reward_std: 0.0,
        accuracy: 0.0,
        kl: 0.0,
        clip_fraction: 0.0,
        entropy: 0.0,
        lr: 0.0,
        eval_accuracy: None,
        eval_reward: None,
        epoch_end: None,
    }
}

/// A training pass over a batch: the head's scores (with what the backward pass needs) and
/// their log-probabilities.
struct Pass {
    tape: Tape,
    /// `[B, n]`.
    op_lp: Vec<f32>,
    /// `[B, M]`.
    target_lp: Vec<f32>,
}

impl Pass {
    fn new(params: &Params, rows: &Rows) -> Result<Self> {
        let tape = head_grad::forward(params, rows)?;
        let mut op_lp = tape.op_logits.clone();
        log_softmax_rows(&mut op_lp, params.n_ops);
        let mut target_lp = tape.target_logits.clone();
        log_softmax_rows(&mut target_lp, tape.m);
        Ok(Self {
            tape,
            op_lp,
            target_lp,
        })
    }

    /// Log-probability of an action of example `i`: its operation, plus its target if any.
    fn logp(&self, n: usize, i: usize, action: &Action) -> f32 {
        let lp = self.op_lp[i * n + action.op];
        match action.target {
            Some(t) => lp + self.target_lp[i * self.tape.m + t],
            None => lp,
        }
    }

    /// Adds `weight · ∂logp(action)/∂logits` of example `i` to the logit gradients.
    fn add_logp_grad(
        &self,
        n: usize,
        i: usize,
        action: &Action,
        weight: f32,
        g_op: &mut [f32],
        g_target: &mut [f32],
    ) {
        for k in 0..n {
            let onehot = if k == action.op { 1.0 } else { 0.0 };
            g_op[i * n + k] += weight * (onehot - self.op_lp[i * n + k].exp());
        }
        if let Some(t) = action.target {
            let m = self.tape.m;
            for j in 0..m {
                let onehot = if j == t { 1.0 } else { 0.0 };
                g_target[i * m + j] += weight * (onehot - self.target_lp[i * m + j].exp());
            }
        }
    }
}

/// An action: operation index, and the index of the target memory when one is named.
#[derive(Debug, Clone, Copy)]
struct Action {
    op: usize,
    target: Option<usize>,
}

fn sft_step(
    head: &MemoryActionHead,
    features: &FeatureStore,
    batch: &[&Example],
    reward: &dyn Reward,
    opt: &mut AdamW,
    cfg: &TrainConfig,
) -> Result<StepLog> {
    let b = batch.len();
    let n = head.config().operations.len();
    let params = Params::read(head)?;
    let rows = features.rows(batch)?;
    let pass = Pass::new(&params, &rows)?;
    let (mut rewards, mut correct) = (Vec::with_capacity(b), 0usize);
    let actions = greedy(
        head,
        batch,
        &pass.tape.op_logits,
        &pass.tape.target_logits,
        pass.tape.m,
    );
    for (ex, (op, target)) in batch.iter().zip(actions) {
        correct += usize::from(is_correct(ex, &op, target.as_deref()));
        rewards.push(reward.reward(ex, &op, target.as_deref()));
    }
    // Cross-entropy of the labelled operation, plus of the labelled target when there is one.
    let mut ll = 0f32;
    let mut g_op = vec![0f32; b * n];
    let mut g_target = vec![0f32; b * pass.tape.m];
    for (i, ex) in batch.iter().enumerate() {
        let target =
            match &ex.label.target {
                Some(t) => Some(ex.memories.iter().position(|m| &m.id == t).ok_or_else(|| {
                    Error::invalid("label", format!("target `{t}` is no memory"))
                })?),
                None => None,
            };
        let label = Action {
            op: op_index(head, &ex.label.op)?,
            target,
        };
        ll += pass.logp(n, i, &label);
        pass.add_logp_grad(n, i, &label, -1.0 / b as f32, &mut g_op, &mut g_target);
    }
    let loss = -ll / b as f32;
    let grads = head_grad::backward(&params, &rows, &pass.tape, &g_op, &g_target)?;
    optimise(opt, grads, cfg.max_grad_norm)?;
    let (reward_mean, reward_std) = mean_std(&rewards);
    Ok(StepLog {
        loss,
        reward_mean,
        reward_std,
        accuracy: correct as f32 / b as f32,
        entropy: mean_entropy_of(&pass.op_lp, n),
        ..empty_log()
    })
}

#[allow(clippy::too_many_arguments)]
fn grpo_step(
    head: &MemoryActionHead,
    reference: Option<&Params>,
    features: &FeatureStore,
    batch: &[&Example],
    reward: &dyn Reward,
    opt: &mut AdamW,
    cfg: &TrainConfig,
    rng: &mut SplitMix64,
) -> Result<StepLog> {
    let g = cfg.group_size;
    let b = batch.len();
    let n_actions = b * g;
    let n = head.config().operations.len();
    let cpu = Device::Cpu;
    let rows = features.rows(batch)?;
    // Sampling pass; it is also the first optimisation step's forward pass (same parameters).
    let params = Params::read(head)?;
    let first = Pass::new(&params, &rows)?;
    let m = first.tape.m;
    let mut actions = Vec::with_capacity(n_actions);
    let mut old = Vec::with_capacity(n_actions);
    let mut rewards = Vec::with_capacity(n_actions);
    let mut correct = 0usize;
    let mut op_p = vec![0f32; n];
    let mut t_p = Vec::with_capacity(m);
    for (i, ex) in batch.iter().enumerate() {
        for (p, lp) in op_p.iter_mut().zip(&first.op_lp[i * n..(i + 1) * n]) {
            *p = lp.exp();
        }
        t_p.clear();
        if m > 0 {
            let row = &first.target_lp[i * m..i * m + ex.memories.len().min(m)];
            t_p.extend(row.iter().map(|l| l.exp()));
        }
        for _ in 0..g {
            let op = sample(&op_p, rng.next_f64());
            let name = &head.config().operations[op];
            let mut target = None;
            if is_target_op(head, name) && !ex.memories.is_empty() && m > 0 {
                target = Some(sample(&t_p, rng.next_f64()));
            }
            let action = Action { op, target };
            let target_id = target
                .and_then(|ti| ex.memories.get(ti))
                .map(|m| m.id.as_str());
            correct += usize::from(is_correct(ex, name, target_id));
            rewards.push(reward.reward(ex, name, target_id));
            old.push(first.logp(n, i, &action));
            actions.push(action);
        }
    }
    let adv = group_advantages(&rewards, g, cfg.grpo.scale_rewards, cfg.grpo.adv_eps as f32)?;
    let advantages = Tensor::from_vec(adv, n_actions, &cpu)?;
    let old_logp = Tensor::from_vec(old, (n_actions, 1), &cpu)?;
    let mask = Tensor::ones((n_actions, 1), DType::F32, &cpu)?;
    let ref_logp = match reference {
        Some(r) => {
            let pass = Pass::new(r, &rows)?;
            let lp: Vec<f32> = actions
                .iter()
                .enumerate()
                .map(|(k, a)| pass.logp(n, k / g, a))
                .collect();
            Some(Tensor::from_vec(lp, (n_actions, 1), &cpu)?)
        }
        None => None,
    };

    let entropy = mean_entropy_of(&first.op_lp, n);
    let mut current = Some((params, first));
    let (mut loss_sum, mut clip_sum, mut kl_sum) = (0f32, 0f32, 0f32);
    for _ in 0..cfg.mu {
        let (params, pass) = match current.take() {
            Some(x) => x,
            None => {
                let params = Params::read(head)?;
                let pass = Pass::new(&params, &rows)?;
                (params, pass)
            }
        };
        // The GRPO objective on the actions' log-probabilities, differentiated by candle;
        // the chain rule through the log-softmax and the head is `head_grad`'s.
        let logp: Vec<f32> = actions
            .iter()
            .enumerate()
            .map(|(k, a)| pass.logp(n, k / g, a))
            .collect();
        let logp = Var::from_vec(logp, (n_actions, 1), &cpu)?;
        let out = grpo_loss(
            &cfg.grpo,
            logp.as_tensor(),
            &old_logp,
            ref_logp.as_ref(),
            &advantages,
            &mask,
        )?;
        loss_sum += out.loss.to_scalar::<f32>()?;
        clip_sum += out.clip_fraction;
        kl_sum += out.kl_mean;
        let d_logp = match out.loss.backward()?.get(logp.as_tensor()) {
            Some(d) => d.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0f32; n_actions],
        };
        let mut g_op = vec![0f32; b * n];
        let mut g_target = vec![0f32; b * m];
        for (k, (a, &w)) in actions.iter().zip(&d_logp).enumerate() {
            pass.add_logp_grad(n, k / g, a, w, &mut g_op, &mut g_target);
        }
        let grads = head_grad::backward(&params, &rows, &pass.tape, &g_op, &g_target)?;
        optimise(opt, grads, cfg.max_grad_norm)?;
    }
    let mu = cfg.mu as f32;
    let (reward_mean, reward_std) = mean_std(&rewards);
    Ok(StepLog {
        loss: loss_sum / mu,
        reward_mean,
        reward_std,
        accuracy: correct as f32 / n_actions as f32,
        kl: kl_sum / mu,
        clip_fraction: clip_sum / mu,
        entropy,
        ..empty_log()
    })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn sampling_follows_the_cumulative_distribution() {
        let p = [0.0, 0.25, 0.75];
        assert_eq!(sample(&p, 0.0), 1);
        assert_eq!(sample(&p, 0.3), 2);
        assert_eq!(sample(&p, 0.999_999_9), 2);
    }
}
