//! [`Trainer`]: trains the [`MemoryActionHead`] on frozen backbone features
//! ([`FeatureStore`]): supervised cross-entropy ([`Mode::Sft`]) or GRPO on sampled actions
//! ([`Mode::Grpo`]), with AdamW, linear LR warm-up, clipping of the global gradient norm, an
//! optional k3 KL penalty against a frozen reference head, periodic evaluation, and
//! checkpoints from which a run resumes bit for bit.
//!
//! Every example of a step is scored in one pass of the head over the batch's real rows;
//! the features of a step's texts are encoded when the step first needs them, so the first
//! epoch pays for the backbone and later ones do not.
//!
//! The loop lives here; the configuration (`config.rs`), the run's state (`state.rs`), the
//! logs (`log.rs`), one step (`step.rs`), evaluation (`evaluate.rs`) and checkpoints
//! (`checkpoint.rs`) each have a file, and none of them imports this one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::models::action_head::MemoryActionHead;
use crate::models::olmoe::OlmoeModel;
use crate::train::checkpoint::{self, Checkpoint, Writer};
use crate::train::data::Example;
use crate::train::features::FeatureStore;
use crate::train::head_grad::Params;
use crate::train::optim::{AdamW, AdamWParams};
use crate::train::reward::Reward;
use crate::train::rng::SplitMix64;
use crate::train::state::{sorted_vars, EpochClock, Progress};
use crate::train::step::{grpo_step, sft_step, StepInputs};

pub use crate::train::config::{Mode, TrainConfig, TrainOptions};
pub use crate::train::evaluate::evaluate;
pub use crate::train::log::{EpochLog, Evaluation, Event, StepLog, TrainReport};

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

/// What the head learns from: the training and evaluation examples, and the reward of an
/// action.
#[derive(Clone, Copy)]
pub struct Task<'a> {
    /// The examples the steps draw their batches from; at least one.
    pub train: &'a [Example],
    /// The held-out examples of every evaluation.
    pub eval: &'a [Example],
    /// The reward of an action, for GRPO and for the logs.
    pub reward: &'a dyn Reward,
}

impl std::fmt::Debug for Task<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("train", &self.train.len())
            .field("eval", &self.eval.len())
            .finish_non_exhaustive()
    }
}

/// Trains a head in place: [`Trainer::run`] takes the configured steps (continuing a
/// checkpointed run when asked to), [`Trainer::evaluate`] measures the head on the held-out
/// examples.
#[derive(Debug)]
pub struct Trainer<'a, 'm> {
    head: &'a MemoryActionHead,
    features: &'a mut FeatureStore<'m>,
    task: Task<'a>,
    config: &'a TrainConfig,
    options: &'a TrainOptions<'a>,
}

/// What a run keeps between steps besides [`Progress`].
struct Run {
    opt: AdamW,
    progress: Progress,
    /// The frozen reference head the run keeps itself (checkpointed with it).
    own_reference: Option<MemoryActionHead>,
    rng: SplitMix64,
    clock: EpochClock,
    checkpoints: Option<Writer>,
}

impl<'a, 'm> Trainer<'a, 'm> {
    /// A trainer of `head` on `task`. The configuration is checked here, and a task without
    /// training examples is refused.
    pub fn new(
        head: &'a MemoryActionHead,
        features: &'a mut FeatureStore<'m>,
        task: Task<'a>,
        config: &'a TrainConfig,
        options: &'a TrainOptions<'a>,
    ) -> Result<Self> {
        config.validate()?;
        if task.train.is_empty() {
            return Err(Error::invalid("train", "no training examples"));
        }
        Ok(Self {
            head,
            features,
            task,
            config,
            options,
        })
    }

    /// Greedy accuracy and mean reward of the head on the evaluation examples, encoding the
    /// texts not held yet.
    pub fn evaluate(&mut self) -> Result<Evaluation> {
        evaluate(self.head, self.features, self.task.eval, self.task.reward)
    }

    /// Trains the head for the configured steps, evaluating on the held-out examples;
    /// `on_event` sees every step, epoch and checkpoint, in order (the JSONL log is these
    /// events, one a line).
    pub fn run(&mut self, mut on_event: impl FnMut(&Event)) -> Result<TrainReport> {
        let start = Instant::now();
        let mut run = self.begin()?;
        let reference = self.options.reference.or(run.own_reference.as_ref());
        if let Some(r) = reference {
            if r.input_dim() != self.head.input_dim()
                || r.config().operations != self.head.config().operations
            {
                return Err(Error::invalid(
                    "reference",
                    "the reference head's input width or operations differ from the head's",
                ));
            }
        }
        self.check_width(true)?;
        // The reference head is frozen: its parameters are read once.
        let reference_params = reference.map(Params::read).transpose()?;
        while run.progress.step < self.config.steps {
            self.step(&mut run, reference_params.as_ref(), &mut on_event)?;
        }
        self.features.flush()?;
        let last = self.evaluate()?;
        self.features.flush()?;
        let mut progress = run.progress;
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

    /// Refuses features whose width is not the head's input width; with `allow_empty`, a
    /// store that holds no vector yet passes.
    fn check_width(&self, allow_empty: bool) -> Result<()> {
        let dim = self.features.dim();
        if dim == self.head.input_dim() || (allow_empty && dim == 0) {
            return Ok(());
        }
        Err(Error::invalid(
            "features",
            format!(
                "width {dim} does not match the head's input_dim {}",
                self.head.input_dim()
            ),
        ))
    }

    /// The optimiser and the state of the run: read from the checkpoint when resuming, else
    /// fresh, after an evaluation of the initial head.
    fn begin(&mut self) -> Result<Run> {
        let cfg = self.config;
        let mut opt = AdamW::new(
            sorted_vars(self.head),
            AdamWParams {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..AdamWParams::default()
            },
        )?;
        let checkpoints = self.options.checkpoint_dir.as_deref().map(Writer::new);
        let (progress, own_reference) = if self.options.resume {
            let path = checkpoints
                .as_ref()
                .map(Writer::path)
                .ok_or_else(|| Error::invalid("resume", "needs a checkpoint directory"))?;
            let ck = Checkpoint::read(path)?;
            ck.check_compatible(path, self.head, cfg, self.task.train.len())?;
            let reference = ck.restore(path, self.head, &mut opt)?;
            let mut progress = ck.progress;
            // JSON does not carry every f64 exactly; the learning rates follow from the
            // (checked equal) configuration.
            for log in &mut progress.history {
                log.lr = cfg.lr_at(log.step.saturating_sub(1));
            }
            (progress, reference)
        } else {
            self.check_width(true)?;
            let initial = self.evaluate()?;
            let kl_wanted =
                cfg.mode == Mode::Grpo && (cfg.grpo.beta > 0.0 || self.options.reference.is_some());
            let reference = if kl_wanted && self.options.reference.is_none() {
                Some(self.head.frozen_copy()?)
            } else {
                None
            };
            let progress =
                Progress::start(self.task.train.len(), cfg.seed, initial.accuracy, cfg.steps);
            (progress, reference)
        };
        Ok(Run {
            opt,
            rng: SplitMix64::new(progress.rng),
            progress,
            own_reference,
            clock: EpochClock::default(),
            checkpoints,
        })
    }

    /// One step: draws the batch, encodes what it lacks, optimises, logs, evaluates and
    /// checkpoints when due.
    fn step(
        &mut self,
        run: &mut Run,
        reference: Option<&Params>,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<()> {
        let cfg = self.config;
        let step_start = Instant::now();
        let before = self.features.stats();
        let (indices, epoch_done) = run.progress.next_batch(&mut run.rng, cfg.batch_size);
        let batch: Vec<&Example> = indices.iter().map(|&i| &self.task.train[i]).collect();
        self.features.ensure_examples(batch.iter().copied())?;
        self.check_width(false)?;
        let lr = cfg.lr_at(run.progress.step);
        run.opt.params.lr = lr;
        let inputs = StepInputs {
            head: self.head,
            features: self.features,
            batch: &batch,
            reward: self.task.reward,
            config: cfg,
        };
        let mut log = match cfg.mode {
            Mode::Sft => sft_step(&inputs, &mut run.opt)?,
            Mode::Grpo => grpo_step(&inputs, reference, &mut run.opt, &mut run.rng)?,
        };
        let after = self.features.stats();
        run.clock
            .add_step(step_start.elapsed().as_secs_f64(), &before, &after);
        run.progress.step += 1;
        log.step = run.progress.step;
        log.lr = lr;
        if cfg.eval_every > 0 && run.progress.step.is_multiple_of(cfg.eval_every) {
            let e = self.evaluate()?;
            log.eval_accuracy = Some(e.accuracy);
            log.eval_reward = Some(e.reward);
        }
        run.progress.history.push(log.clone());
        if epoch_done {
            let e = run.clock.finish_epoch(&mut run.progress);
            log.epoch_end = Some(e.clone());
            on_event(&Event::Step(log));
            on_event(&Event::Epoch(e.clone()));
            run.progress.epochs.push(e);
            self.features.flush()?;
        } else {
            on_event(&Event::Step(log));
        }
        let step = run.progress.step;
        let due =
            self.options.checkpoint_every > 0 && step.is_multiple_of(self.options.checkpoint_every);
        if let (Some(writer), true) = (&mut run.checkpoints, due || step == cfg.steps) {
            run.progress.rng = run.rng.state();
            self.features.flush()?;
            let reference = run.own_reference.as_ref();
            writer.write(self.head, &run.opt, reference, cfg, &run.progress)?;
            on_event(&Event::Checkpoint {
                checkpoint: step,
                path: writer.path().to_path_buf(),
            });
        }
        Ok(())
    }
}

/// The checkpoint file of a directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(checkpoint::CHECKPOINT_FILE)
}

/// The step a checkpoint file was written after. A file that does not exist is an
/// [`Error::Checkpoint`] saying that no checkpoint has been written yet.
pub fn checkpoint_step(path: &Path) -> Result<usize> {
    Ok(Checkpoint::read(path)?.progress.step)
}
