//! Training the [`MemoryActionHead`] on precomputed backbone features ([`FeatureSet`]):
//! supervised cross-entropy ([`Mode::Sft`]) or GRPO on sampled actions ([`Mode::Grpo`]), with
//! AdamW, linear LR warm-up and clipping of the global gradient norm.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::action_head::{HeadScores, MemoryActionHead};
use crate::train::data::Example;
use crate::train::features::FeatureSet;
use crate::train::grpo::{group_advantages, grpo_loss, mean_entropy, GrpoConfig};
use crate::train::reward::{is_correct, Reward};

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
    /// The GRPO objective. `beta` must be 0: no reference policy is kept.
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
        self.grpo.validate()?;
        if self.mode == Mode::Grpo && self.grpo.beta != 0.0 {
            return Err(Error::invalid(
                "beta",
                "must be 0: training keeps no reference policy",
            ));
        }
        Ok(())
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// KL against the reference (0: none is kept).
    pub kl: f32,
    /// Fraction of clipped ratios (GRPO; 0 for SFT).
    pub clip_fraction: f32,
    /// Mean entropy of the operation distribution, in nats.
    pub entropy: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Greedy accuracy on the evaluation set, on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f32>,
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
    /// Steps taken.
    pub steps: usize,
    /// Wall time of training, evaluations included.
    pub seconds: f64,
    /// Greedy accuracy on the evaluation set before training.
    pub initial_eval_accuracy: f32,
    /// Greedy accuracy on the evaluation set after training.
    pub eval_accuracy: f32,
    /// Mean greedy reward on the evaluation set after training.
    pub eval_reward: f32,
    /// One entry per step.
    pub history: Vec<StepLog>,
}

/// Index of the largest value, the first on ties (as [`MemoryActionHead::decide`]).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if values.get(best).is_some_and(|&b| v > b) {
            best = i;
        }
    }
    best
}

fn scores(head: &MemoryActionHead, features: &FeatureSet, ex: &Example) -> Result<HeadScores> {
    head.scores(&features.fact(ex)?, &features.memories(ex)?)
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

/// The greedy action: the most probable operation and, for target operations, memory.
fn greedy(
    head: &MemoryActionHead,
    ex: &Example,
    s: &HeadScores,
) -> Result<(String, Option<String>)> {
    let ops = s.op_logits.to_vec1::<f32>()?;
    let op = head.config().operations[argmax(&ops)].clone();
    let mut target = None;
    if is_target_op(head, &op) {
        if let Some(t) = &s.target_logits {
            let t = t.to_vec1::<f32>()?;
            target = ex.memories.get(argmax(&t)).map(|m| m.id.clone());
        }
    }
    Ok((op, target))
}

/// Greedy accuracy and mean reward of `head` on `examples` (zeros when there are none).
pub fn evaluate(
    head: &MemoryActionHead,
    features: &FeatureSet,
    examples: &[Example],
    reward: &dyn Reward,
) -> Result<Evaluation> {
    if examples.is_empty() {
        return Ok(Evaluation {
            accuracy: 0.0,
            reward: 0.0,
        });
    }
    let (mut correct, mut total) = (0usize, 0f64);
    for ex in examples {
        let s = scores(head, features, ex)?;
        let (op, target) = greedy(head, ex, &s)?;
        correct += usize::from(is_correct(ex, &op, target.as_deref()));
        total += f64::from(reward.reward(ex, &op, target.as_deref()));
    }
    let n = examples.len() as f64;
    Ok(Evaluation {
        accuracy: (correct as f64 / n) as f32,
        reward: (total / n) as f32,
    })
}

/// The head's variables in name order (so that every sum over them is reproducible).
fn sorted_vars(head: &MemoryActionHead) -> Vec<Var> {
    let data = head
        .varmap()
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut named: Vec<(&String, &Var)> = data.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

/// Backward pass, clipping to `max_norm` (0: none), and one optimiser step.
fn optimise(opt: &mut AdamW, vars: &[Var], loss: &Tensor, max_norm: f64) -> Result<()> {
    let mut grads: GradStore = loss.backward()?;
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::tensor(
            "gradients",
            "the gradient norm is not finite; training diverged",
        ));
    }
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    opt.step(&grads)?;
    Ok(())
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

/// One sampled action: operation index, target index, log-prob under the sampling policy.
struct Sampled {
    op: usize,
    target: Option<usize>,
    logp: f32,
}

/// Trains `head` in place on `train`, evaluating on `eval`; `on_step` sees every step's log.
pub fn train(
    head: &MemoryActionHead,
    features: &FeatureSet,
    train: &[Example],
    eval: &[Example],
    reward: &dyn Reward,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(&StepLog),
) -> Result<TrainReport> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(Error::invalid("train", "no training examples"));
    }
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
    let start = Instant::now();
    let initial = evaluate(head, features, eval, reward)?;
    let vars = sorted_vars(head);
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut cursor = order.len();
    let mut history = Vec::with_capacity(cfg.steps);

    for step in 0..cfg.steps {
        let mut batch = Vec::with_capacity(cfg.batch_size);
        while batch.len() < cfg.batch_size {
            if cursor == order.len() {
                order.shuffle(&mut rng);
                cursor = 0;
            }
            batch.push(&train[order[cursor]]);
            cursor += 1;
        }
        let lr = cfg.lr_at(step);
        opt.set_learning_rate(lr);
        let mut log = match cfg.mode {
            Mode::Sft => sft_step(head, features, &batch, reward, &mut opt, &vars, cfg)?,
            Mode::Grpo => grpo_step(
                head, features, &batch, reward, &mut opt, &vars, cfg, &mut rng,
            )?,
        };
        log.step = step + 1;
        log.lr = lr;
        if cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0 {
            log.eval_accuracy = Some(evaluate(head, features, eval, reward)?.accuracy);
        }
        on_step(&log);
        history.push(log);
    }
    let last = evaluate(head, features, eval, reward)?;
    Ok(TrainReport {
        steps: cfg.steps,
        seconds: start.elapsed().as_secs_f64(),
        initial_eval_accuracy: initial.accuracy,
        eval_accuracy: last.accuracy,
        eval_reward: last.reward,
        history,
    })
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
    }
}

fn sft_step(
    head: &MemoryActionHead,
    features: &FeatureSet,
    batch: &[&Example],
    reward: &dyn Reward,
    opt: &mut AdamW,
    vars: &[Var],
    cfg: &TrainConfig,
) -> Result<StepLog> {
    let mut terms = Vec::with_capacity(batch.len());
    let mut op_logits = Vec::with_capacity(batch.len());
    let (mut rewards, mut correct) = (Vec::with_capacity(batch.len()), 0usize);
    for ex in batch {
        let s = scores(head, features, ex)?;
        let (op, target) = greedy(head, ex, &s)?;
        correct += usize::from(is_correct(ex, &op, target.as_deref()));
        rewards.push(reward.reward(ex, &op, target.as_deref()));
        let op_lp = candle_nn::ops::log_softmax(&s.op_logits, D::Minus1)?;
        let mut nll = op_lp.get(op_index(head, &ex.label.op)?)?.neg()?;
        if let Some(t) = &ex.label.target {
            let ti = ex
                .memories
                .iter()
                .position(|m| &m.id == t)
                .ok_or_else(|| Error::invalid("label", format!("target `{t}` is no memory")))?;
            let logits = s
                .target_logits
                .as_ref()
                .ok_or_else(|| Error::invalid("label", "a target without memories"))?;
            let t_lp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            nll = (nll - t_lp.get(ti)?)?;
        }
        terms.push(nll);
        op_logits.push(s.op_logits.detach());
    }
    let loss = (Tensor::stack(&terms, 0)?.sum_all()? / batch.len() as f64)?;
    let loss_value = loss.to_scalar::<f32>()?;
    optimise(opt, vars, &loss, cfg.max_grad_norm)?;
    let (reward_mean, reward_std) = mean_std(&rewards);
    Ok(StepLog {
        loss: loss_value,
        reward_mean,
        reward_std,
        accuracy: correct as f32 / batch.len() as f32,
        entropy: mean_entropy(&Tensor::stack(&op_logits, 0)?)?,
        ..empty_log()
    })
}

#[allow(clippy::too_many_arguments)]
fn grpo_step(
    head: &MemoryActionHead,
    features: &FeatureSet,
    batch: &[&Example],
    reward: &dyn Reward,
    opt: &mut AdamW,
    vars: &[Var],
    cfg: &TrainConfig,
    rng: &mut StdRng,
) -> Result<StepLog> {
    let g = cfg.group_size;
    let device = head.device().clone();
    // Sampling pass.
    let mut sampled: Vec<Vec<Sampled>> = Vec::with_capacity(batch.len());
    let mut rewards = Vec::with_capacity(batch.len() * g);
    let mut op_logits = Vec::with_capacity(batch.len());
    let mut correct = 0usize;
    for ex in batch {
        let s = scores(head, features, ex)?;
        let op_lp = candle_nn::ops::log_softmax(&s.op_logits, D::Minus1)?.to_vec1::<f32>()?;
        let op_p: Vec<f32> = op_lp.iter().map(|l| l.exp()).collect();
        let t_lp = match &s.target_logits {
            Some(t) => Some(candle_nn::ops::log_softmax(t, D::Minus1)?.to_vec1::<f32>()?),
            None => None,
        };
        let mut group = Vec::with_capacity(g);
        for _ in 0..g {
            let op = sample(&op_p, rng.random::<f64>());
            let name = &head.config().operations[op];
            let mut logp = op_lp[op];
            let mut target = None;
            if is_target_op(head, name) {
                if let Some(t_lp) = &t_lp {
                    let t_p: Vec<f32> = t_lp.iter().map(|l| l.exp()).collect();
                    let ti = sample(&t_p, rng.random::<f64>());
                    logp += t_lp[ti];
                    target = Some(ti);
                }
            }
            let target_id = target
                .and_then(|ti| ex.memories.get(ti))
                .map(|m| m.id.as_str());
            correct += usize::from(is_correct(ex, name, target_id));
            rewards.push(reward.reward(ex, name, target_id));
            group.push(Sampled { op, target, logp });
        }
        sampled.push(group);
        op_logits.push(s.op_logits.detach());
    }
    let adv = group_advantages(&rewards, g, cfg.grpo.scale_rewards, cfg.grpo.adv_eps as f32)?;
    let n = batch.len() * g;
    let advantages = Tensor::from_vec(adv, n, &device)?;
    let old: Vec<f32> = sampled.iter().flatten().map(|a| a.logp).collect();
    let old_logp = Tensor::from_vec(old, (n, 1), &device)?;
    let mask = Tensor::ones((n, 1), candle_core::DType::F32, &device)?;

    let (mut loss_sum, mut clip_sum, mut kl_sum) = (0f32, 0f32, 0f32);
    for _ in 0..cfg.mu {
        let mut parts = Vec::with_capacity(batch.len());
        for (ex, group) in batch.iter().zip(&sampled) {
            let s = scores(head, features, ex)?;
            let op_lp = candle_nn::ops::log_softmax(&s.op_logits, D::Minus1)?;
            let ops: Vec<u32> = group.iter().map(|a| a.op as u32).collect();
            let ops = Tensor::from_vec(ops, g, &device)?;
            let mut lp = op_lp.index_select(&ops, 0)?;
            if let Some(t) = &s.target_logits {
                let t_lp = candle_nn::ops::log_softmax(t, D::Minus1)?;
                let idx: Vec<u32> = group.iter().map(|a| a.target.unwrap_or(0) as u32).collect();
                let used: Vec<f32> = group
                    .iter()
                    .map(|a| if a.target.is_some() { 1.0 } else { 0.0 })
                    .collect();
                let picked = t_lp.index_select(&Tensor::from_vec(idx, g, &device)?, 0)?;
                lp = (lp + picked.mul(&Tensor::from_vec(used, g, &device)?)?)?;
            }
            parts.push(lp);
        }
        let logp = Tensor::cat(&parts, 0)?.reshape((n, 1))?;
        let out = grpo_loss(&cfg.grpo, &logp, &old_logp, None, &advantages, &mask)?;
        loss_sum += out.loss.to_scalar::<f32>()?;
        clip_sum += out.clip_fraction;
        kl_sum += out.kl_mean;
        optimise(opt, vars, &out.loss, cfg.max_grad_norm)?;
    }
    let mu = cfg.mu as f32;
    let (reward_mean, reward_std) = mean_std(&rewards);
    Ok(StepLog {
        loss: loss_sum / mu,
        reward_mean,
        reward_std,
        accuracy: correct as f32 / n as f32,
        kl: kl_sum / mu,
        clip_fraction: clip_sum / mu,
        entropy: mean_entropy(&Tensor::stack(&op_logits, 0)?)?,
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
        c.grpo.beta = 0.1;
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
