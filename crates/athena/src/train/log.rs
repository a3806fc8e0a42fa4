//! What a run reports: one [`StepLog`] a step, one [`EpochLog`] an epoch, the [`Event`]s
//! a caller sees as they happen, [`Evaluation`]s, and the final [`TrainReport`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Fraction of examples where the greedy action is correct
    /// ([`is_correct`](crate::train::reward::is_correct)).
    pub accuracy: f32,
    /// Mean reward of the greedy action.
    pub reward: f32,
}

/// The outcome of [`Trainer::run`](crate::train::trainer::Trainer::run).
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

impl StepLog {
    /// A log of step 0 with every figure 0, for a step to fill in.
    pub(crate) fn empty() -> Self {
        Self {
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
}
