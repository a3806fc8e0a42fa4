//! Where a run stands ([`Progress`]): the step, the data order and cursor, the random
//! generator's state and what every step and epoch logged; how the next batch is drawn; and
//! how an epoch's time is added up ([`EpochClock`]).

use candle_core::Var;

use crate::models::action_head::MemoryActionHead;
use crate::train::features::FeatureStats;
use crate::train::log::{EpochLog, StepLog};
use crate::train::rng::SplitMix64;

/// Where a run stands: everything a checkpoint holds besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    /// Steps done.
    pub step: usize,
    /// State of the generator of batch order and sampling, as of the last checkpoint.
    pub rng: u64,
    /// The order of the training examples in the current epoch.
    pub order: Vec<usize>,
    /// Position in `order` of the next example.
    pub cursor: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// Greedy accuracy on the evaluation set before the first step.
    pub initial_eval_accuracy: f32,
    /// One entry per step, from step 1.
    pub history: Vec<StepLog>,
    /// One entry per completed epoch.
    pub epochs: Vec<EpochLog>,
}

impl Progress {
    /// The start of a run over `train_examples` examples: the cursor at the end of an order,
    /// so that the first batch shuffles.
    pub fn start(
        train_examples: usize,
        seed: u64,
        initial_eval_accuracy: f32,
        steps: usize,
    ) -> Self {
        Self {
            step: 0,
            rng: seed,
            order: (0..train_examples).collect(),
            cursor: train_examples,
            epoch: 0,
            initial_eval_accuracy,
            history: Vec::with_capacity(steps),
            epochs: Vec::new(),
        }
    }

    /// The indices of the next `batch_size` examples, shuffling `order` with `rng` whenever
    /// an epoch starts, and whether the batch completed an epoch.
    pub fn next_batch(&mut self, rng: &mut SplitMix64, batch_size: usize) -> (Vec<usize>, bool) {
        let mut batch = Vec::with_capacity(batch_size);
        let mut epoch_done = false;
        while batch.len() < batch_size {
            if self.cursor == self.order.len() {
                rng.shuffle(&mut self.order);
                self.cursor = 0;
            }
            batch.push(self.order[self.cursor]);
            self.cursor += 1;
            if self.cursor == self.order.len() {
                epoch_done = true;
            }
        }
        (batch, epoch_done)
    }
}

/// The time and encoding work of the current epoch's steps, evaluations excluded.
#[derive(Debug, Clone, Default)]
pub(crate) struct EpochClock {
    seconds: f64,
    encode_seconds: f64,
    encoded_texts: usize,
}

impl EpochClock {
    /// Adds a step that took `seconds`, with the feature store's counters before and after.
    pub fn add_step(&mut self, seconds: f64, before: &FeatureStats, after: &FeatureStats) {
        self.seconds += seconds;
        self.encode_seconds += after.encode_seconds - before.encode_seconds;
        self.encoded_texts += after.encoded - before.encoded;
    }

    /// Closes the epoch that step `progress.step` completed: its log, compared with the
    /// first epoch's time; the clock starts again from zero.
    pub fn finish_epoch(&mut self, progress: &mut Progress) -> EpochLog {
        progress.epoch += 1;
        let speedup_vs_first = match progress.epochs.first() {
            Some(first) if self.seconds > 0.0 => Some(first.seconds / self.seconds),
            _ => None,
        };
        let log = EpochLog {
            epoch: progress.epoch,
            end_step: progress.step,
            seconds: self.seconds,
            encode_seconds: self.encode_seconds,
            encoded_texts: self.encoded_texts,
            speedup_vs_first,
        };
        *self = Self::default();
        log
    }
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
