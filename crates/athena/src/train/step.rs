//! One optimisation step of the head on a batch: supervised ([`sft_step`]) or GRPO
//! ([`grpo_step`]). Both score the batch with the hand-written pass of [`head_grad`], turn
//! the objective into gradients of the logits, and let [`head_grad::backward`] carry them to
//! the parameters.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::models::action_head::params::{Param, PARAM_COUNT};
use crate::models::action_head::MemoryActionHead;
use crate::train::config::TrainConfig;
use crate::train::data::Example;
use crate::train::evaluate::{greedy, is_target_op, op_index};
use crate::train::features::FeatureStore;
use crate::train::grpo::{group_advantages, grpo_loss};
use crate::train::head_grad::{self, log_softmax_rows, Params, Rows, Tape};
use crate::train::log::StepLog;
use crate::train::optim::AdamW;
use crate::train::reward::{is_correct, Reward};
use crate::train::rng::SplitMix64;

/// What a step works on: the head, the features of its batch's texts (already encoded), the
/// batch, the reward and the run's configuration.
#[derive(Clone, Copy)]
pub(crate) struct StepInputs<'s> {
    /// The head, updated in place.
    pub head: &'s MemoryActionHead,
    /// Holds every text of `batch`.
    pub features: &'s FeatureStore<'s>,
    /// The step's examples.
    pub batch: &'s [&'s Example],
    /// The reward of an action.
    pub reward: &'s dyn Reward,
    /// The run's hyper-parameters.
    pub config: &'s TrainConfig,
}

/// Clips the head's gradients (indexed by [`Param::index`]) to the global norm `max_norm`
/// (0: none) and takes one optimiser step.
fn optimise(opt: &mut AdamW, grads: [Vec<f32>; PARAM_COUNT], max_norm: f64) -> Result<()> {
    let mut grads = grads.map(Some);
    let mut ordered = Vec::with_capacity(opt.vars().len());
    for (name, _) in opt.vars() {
        let g = Param::from_name(name).and_then(|p| grads[p.index()].take());
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

/// One supervised step: cross-entropy of the labelled actions.
pub(crate) fn sft_step(inputs: &StepInputs, opt: &mut AdamW) -> Result<StepLog> {
    let StepInputs {
        head,
        features,
        batch,
        reward,
        config: cfg,
    } = *inputs;
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
        ..StepLog::empty()
    })
}

/// One GRPO step: samples `group_size` actions per example, rewards them, and takes `mu`
/// optimisation steps on the clipped objective (with the KL penalty against `reference`).
pub(crate) fn grpo_step(
    inputs: &StepInputs,
    reference: Option<&Params>,
    opt: &mut AdamW,
    rng: &mut SplitMix64,
) -> Result<StepLog> {
    let StepInputs {
        head,
        features,
        batch,
        reward,
        config: cfg,
    } = *inputs;
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
        ..StepLog::empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_cumulative_distribution() {
        let p = [0.0, 0.25, 0.75];
        assert_eq!(sample(&p, 0.0), 1);
        assert_eq!(sample(&p, 0.3), 2);
        assert_eq!(sample(&p, 0.999_999_9), 2);
    }
}
