//! How a run is set up: the hyper-parameters ([`TrainConfig`], serialisable, checked once by
//! [`TrainConfig::validate`]) and the options beyond them ([`TrainOptions`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::action_head::MemoryActionHead;
use crate::train::grpo::GrpoConfig;

/// What the head is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// GRPO on actions sampled from the head, rewarded by a [`Reward`](crate::train::reward::Reward).
    #[default]
    Grpo,
    /// Cross-entropy on the labelled operation, plus on the target when the label names one.
    Sft,
}

/// Hyper-parameters of a run ([`Trainer`](crate::train::trainer::Trainer)).
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

/// How a run is set up beyond its hyper-parameters.
#[derive(Debug, Default)]
pub struct TrainOptions<'a> {
    /// The frozen reference head of the KL penalty. When `beta > 0` and this is `None`, a
    /// frozen copy of the head as it is before the first step is kept (and checkpointed).
    pub reference: Option<&'a MemoryActionHead>,
    /// Where checkpoints go ([`CHECKPOINT_FILE`](crate::train::checkpoint::CHECKPOINT_FILE)
    /// and its step history in this directory).
    pub checkpoint_dir: Option<PathBuf>,
    /// Write a checkpoint every this many steps (0: only at the end, when a directory is set).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in `checkpoint_dir` (an error when there is none).
    pub resume: bool,
}

#[cfg(test)]
mod tests;
