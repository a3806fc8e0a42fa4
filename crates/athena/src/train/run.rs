//! One training run of the memory action head, from files to files: the examples are read,
//! the backbone's features cached on disk, the head trained ([`Trainer`]) and written
//! (`head.safetensors` + `head_config.json`) with its checkpoint and a JSONL step log.
//! `athena train-head` and the Python binding's `train_head` both call [`HeadTraining::run`].

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::models::action_head::{ActionHeadConfig, MemoryActionHead, CONFIG_FILE, WEIGHTS_FILE};
use crate::models::olmoe::OlmoeModel;
use crate::train::data::read_examples;
use crate::train::features::{FeatureStats, FeatureStore, DEFAULT_ENCODE_BATCH};
use crate::train::grpo::GrpoConfig;
use crate::train::reward::LabelReward;
use crate::train::trainer::{
    checkpoint_path, checkpoint_step, head_for_training, Event, Mode, Task, TrainConfig,
    TrainOptions, Trainer,
};

/// The name of the step log a run writes in its output directory.
pub const TRAIN_LOG_FILE: &str = "train_log.jsonl";

/// What one run trains on, with what, and where it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTraining {
    /// Training examples (JSONL: `{"fact", "memories", "label": {"op", "target"}}`).
    pub train: PathBuf,
    /// Held-out examples, same format.
    pub eval: PathBuf,
    /// Where the trained head, the step log, the checkpoint and the feature cache go.
    pub out: PathBuf,
    /// The hyper-parameters; `config.seed` also seeds a fresh head (`proj_dim`).
    pub config: TrainConfig,
    /// The reference head of the KL penalty; a frozen copy of the initial head when `None`.
    pub ref_head: Option<PathBuf>,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in `out`, bit for bit.
    pub resume: bool,
    /// Train a new head into an `out` that already holds one, replacing it.
    pub overwrite: bool,
    /// The feature cache directory; `out/feature_cache` when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Train a fresh head of this projection width instead of the model's own head.
    pub proj_dim: Option<usize>,
}

/// What a finished run reports: the figures `athena train-head --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSummary {
    /// Greedy accuracy on the held-out examples after training.
    pub eval_accuracy: f32,
    /// Mean greedy reward on the held-out examples after training.
    pub eval_reward: f32,
    /// Greedy accuracy on the held-out examples before training.
    pub initial_eval_accuracy: f32,
    /// Steps taken in all (a resumed run's earlier ones included).
    pub steps: usize,
    /// Wall time of this run's training, in seconds.
    pub seconds: f64,
    /// Wall time of each completed epoch, in seconds.
    pub epoch_seconds: Vec<f64>,
    /// How much faster the second epoch ran than the first (its features were cached).
    pub epoch2_speedup: Option<f64>,
    /// The feature store's counts.
    pub features: FeatureStats,
    /// The directory the head was written to.
    pub head: String,
}

impl TrainSummary {
    /// The summary as one JSON object, keys in the order `athena train-head --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "eval_accuracy": self.eval_accuracy,
            "eval_reward": self.eval_reward,
            "initial_eval_accuracy": self.initial_eval_accuracy,
            "steps": self.steps,
            "seconds": self.seconds,
            "epoch_seconds": self.epoch_seconds,
            "epoch2_speedup": self.epoch2_speedup,
            "features": self.features,
            "head": self.head,
        })
    }
}

impl HeadTraining {
    /// A run with the defaults of `athena train-head`: GRPO (DAPO loss, groups of 8, μ = 2),
    /// learning rate 3e-3 with 10 warm-up steps, 1500 steps of 16 examples, an evaluation and
    /// a checkpoint every 100 steps, seed 0.
    pub fn new(
        train: impl Into<PathBuf>,
        eval: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        HeadTraining {
            train: train.into(),
            eval: eval.into(),
            out: out.into(),
            config: TrainConfig {
                mode: Mode::Grpo,
                steps: 1500,
                batch_size: 16,
                group_size: 8,
                mu: 2,
                lr: 3e-3,
                weight_decay: 0.0,
                warmup_steps: 10,
                max_grad_norm: 1.0,
                seed: 0,
                eval_every: 100,
                grpo: GrpoConfig::default(),
            },
            ref_head: None,
            checkpoint_every: 100,
            resume: false,
            overwrite: false,
            cache_dir: None,
            proj_dim: None,
        }
    }

    /// Checks what can be checked before a model is loaded: the hyper-parameters, that `out`
    /// holds no trained head unless `overwrite` or `resume` is set, and that a resumed run has
    /// a checkpoint. Returns the step the run starts from.
    pub fn check(&self) -> Result<usize> {
        self.config.validate()?;
        if !self.resume && !self.overwrite {
            if let Some(file) = [CONFIG_FILE, WEIGHTS_FILE]
                .iter()
                .map(|f| self.out.join(f))
                .find(|f| f.exists())
            {
                return Err(Error::HeadExists {
                    out: self.out.clone(),
                    file,
                });
            }
        }
        if self.resume {
            checkpoint_step(&checkpoint_path(&self.out))
        } else {
            Ok(0)
        }
    }

    /// Trains the head of `model` (loaded on the candle path) and writes it to `out`, with
    /// one JSON line per step in `out/train_log.jsonl`. `on_event` sees every step, epoch and
    /// checkpoint, in order.
    pub fn run(
        &self,
        model: &OlmoeModel,
        mut on_event: impl FnMut(&Event),
    ) -> Result<TrainSummary> {
        let start_step = self.check()?;
        let loaded = head_for_training(model)?;
        let fresh = match self.proj_dim {
            Some(proj_dim) => Some(MemoryActionHead::new(
                ActionHeadConfig {
                    proj_dim,
                    seed: self.config.seed,
                    ..loaded.config().clone()
                },
                loaded.input_dim(),
                &Device::Cpu,
            )?),
            None => None,
        };
        let head = fresh.as_ref().unwrap_or(loaded);
        let train_set = read_examples(&self.train, head.config())?;
        let eval_set = read_examples(&self.eval, head.config())?;
        let reference = match &self.ref_head {
            Some(dir) => Some(MemoryActionHead::load(dir, &Device::Cpu)?),
            None => None,
        };
        std::fs::create_dir_all(&self.out).map_err(|source| Error::Io {
            path: self.out.clone(),
            source,
        })?;
        let cache_dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.out.join("feature_cache"));
        let mut features =
            FeatureStore::for_model(model, Some(&cache_dir), DEFAULT_ENCODE_BATCH, &Device::Cpu)?;

        let log_path = self.out.join(TRAIN_LOG_FILE);
        if self.resume {
            truncate_log(&log_path, start_step)?;
        }
        let io_error = |source| Error::Io {
            path: log_path.clone(),
            source,
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(self.resume)
            .write(true)
            .truncate(!self.resume)
            .open(&log_path)
            .map_err(io_error)?;
        let options = TrainOptions {
            reference: reference.as_ref(),
            checkpoint_dir: Some(self.out.clone()),
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
        };
        let task = Task {
            train: &train_set,
            eval: &eval_set,
            reward: &LabelReward::default(),
        };
        let mut log_error = None;
        let mut trainer = Trainer::new(head, &mut features, task, &self.config, &options)?;
        let report = trainer.run(|event| {
            if let Event::Step(step) = event {
                if let Err(e) = serde_json::to_string(step)
                    .map_err(std::io::Error::other)
                    .and_then(|l| writeln!(log, "{l}"))
                {
                    log_error.get_or_insert(e);
                }
            }
            on_event(event);
        })?;
        if let Some(e) = log_error {
            return Err(io_error(e));
        }
        head.save(&self.out)?;
        Ok(TrainSummary {
            eval_accuracy: report.eval_accuracy,
            eval_reward: report.eval_reward,
            initial_eval_accuracy: report.initial_eval_accuracy,
            steps: report.steps,
            seconds: report.seconds,
            epoch_seconds: report.epochs.iter().map(|e| e.seconds).collect(),
            epoch2_speedup: report.epochs.get(1).and_then(|e| e.speedup_vs_first),
            features: features.stats(),
            head: self.out.display().to_string(),
        })
    }
}

/// Keeps the log lines of steps up to `step` (a resumed run rewrites the rest).
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    crate::io::write_atomic(path, |tmp| {
        std::fs::write(tmp, &kept).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_in_out_is_kept_unless_overwrite_or_resume() {
        let dir = tempfile::tempdir().unwrap();
        let run = HeadTraining::new("t.jsonl", "e.jsonl", dir.path());
        assert_eq!(run.check().unwrap(), 0);
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        let e = run.check().unwrap_err().to_string();
        assert!(
            e.contains("already holds") && e.contains("--overwrite"),
            "{e}"
        );
        let overwrite = HeadTraining {
            overwrite: true,
            ..run.clone()
        };
        assert_eq!(overwrite.check().unwrap(), 0);
        let resume = HeadTraining {
            resume: true,
            ..run
        };
        assert!(resume.check().is_err(), "no checkpoint to resume from");
    }

    #[test]
    fn truncate_log_keeps_the_steps_up_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRAIN_LOG_FILE);
        std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n").unwrap();
        truncate_log(&path, 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"step\":1}\n{\"step\":2}\n"
        );
        truncate_log(&dir.path().join("none.jsonl"), 2).unwrap();
    }
}
