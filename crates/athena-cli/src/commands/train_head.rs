//! `athena train-head`: train the memory action head (GRPO or SFT) on the candle path, with the
//! backbone frozen. Features are encoded once and cached on disk; writes the head
//! (head.safetensors + head_config.json), checkpoints and a JSONL step log.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use athena::models::action_head::{ActionHeadConfig, MemoryActionHead, CONFIG_FILE, WEIGHTS_FILE};
use athena::train::data::read_examples;
use athena::train::features::{FeatureStore, DEFAULT_ENCODE_BATCH};
use athena::train::grpo::{GrpoConfig, LossType};
use athena::train::reward::LabelReward;
use athena::train::trainer::{
    checkpoint_path, checkpoint_step, head_for_training, Event, Mode, Task, TrainConfig,
    TrainOptions, Trainer,
};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::agent::LoadFlags;

/// Training objective.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    /// Group relative policy optimisation on sampled actions.
    Grpo,
    /// Supervised cross-entropy on the labels.
    Sft,
}

/// Aggregation of the GRPO loss (as TRL's `loss_type`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LossArg {
    Grpo,
    Dapo,
    DrGrpo,
    Bnpo,
}

/// Flags of `athena train-head`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// Training examples (JSONL: {"fact", "memories", "label": {"op", "target"}}).
    #[arg(long)]
    train: PathBuf,
    /// Held-out examples, same format.
    #[arg(long)]
    eval: PathBuf,
    /// Where to write the trained head, train_log.jsonl, the checkpoint and the feature cache.
    #[arg(long)]
    out: PathBuf,
    /// Objective.
    #[arg(long, value_enum, default_value = "grpo")]
    mode: ModeArg,
    /// Actions sampled per example (GRPO).
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Clip range ε of the policy ratio (below 1 − ε).
    #[arg(long, default_value_t = 0.2)]
    epsilon: f64,
    /// Upper clip range ε_high (above 1 + ε_high); ε when unset.
    #[arg(long)]
    epsilon_high: Option<f64>,
    /// KL coefficient β against the frozen reference head (0: none).
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// The reference head of the KL penalty; a frozen copy of the initial head when unset.
    #[arg(long)]
    ref_head: Option<PathBuf>,
    /// Aggregation of the GRPO loss.
    #[arg(long, value_enum, default_value = "dapo")]
    loss_type: LossArg,
    /// Optimisation steps per sampled batch (GRPO).
    #[arg(long, default_value_t = 2)]
    mu: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 10)]
    warmup_steps: usize,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Optimisation steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Evaluate on --eval every this many steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Continue from the checkpoint in --out, bit for bit.
    #[arg(long)]
    resume: bool,
    /// Train a new head into an --out that already holds one, replacing it.
    #[arg(long)]
    overwrite: bool,
    /// Feature cache directory (default: OUT/feature_cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Seed of batch order and sampling (and of a fresh head's initialisation).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train a fresh head of this projection width instead of the model's own head
    /// (the configured or `--head` one).
    #[arg(long)]
    proj_dim: Option<usize>,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// Keeps the log lines of steps up to `step` (a resumed run rewrites the rest).
fn truncate_log(path: &std::path::Path, step: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
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
    athena::io::write_atomic(path, |tmp| {
        std::fs::write(tmp, &kept).map_err(|source| athena::Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })?;
    Ok(())
}

/// Runs `athena train-head`.
pub fn run(a: Args) -> Result<()> {
    let cfg = TrainConfig {
        mode: match a.mode {
            ModeArg::Grpo => Mode::Grpo,
            ModeArg::Sft => Mode::Sft,
        },
        steps: a.steps,
        batch_size: a.batch_size,
        group_size: a.group_size,
        mu: a.mu,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup_steps: a.warmup_steps,
        max_grad_norm: a.max_grad_norm,
        seed: a.seed,
        eval_every: a.eval_every,
        grpo: GrpoConfig {
            epsilon: a.epsilon,
            epsilon_high: a.epsilon_high,
            beta: a.beta,
            loss_type: match a.loss_type {
                LossArg::Grpo => LossType::Grpo,
                LossArg::Dapo => LossType::Dapo,
                LossArg::DrGrpo => LossType::DrGrpo,
                LossArg::Bnpo => LossType::Bnpo,
            },
            ..GrpoConfig::default()
        },
    };
    cfg.validate()?;
    if !a.resume && !a.overwrite {
        if let Some(file) = [CONFIG_FILE, WEIGHTS_FILE]
            .iter()
            .map(|f| a.out.join(f))
            .find(|f| f.exists())
        {
            bail!(
                "{} already holds a trained head ({}); pass --overwrite to train a new one in \
                 its place, or --resume to continue its run",
                a.out.display(),
                file.display()
            );
        }
    }
    // Before the model loads: a run that cannot resume says so at once.
    let start_step = if a.resume {
        checkpoint_step(&checkpoint_path(&a.out))?
    } else {
        0
    };
    let model = a.load.load()?;
    let loaded = head_for_training(&model)?;
    let fresh = match a.proj_dim {
        Some(proj_dim) => Some(MemoryActionHead::new(
            ActionHeadConfig {
                proj_dim,
                seed: a.seed,
                ..loaded.config().clone()
            },
            loaded.input_dim(),
            &Device::Cpu,
        )?),
        None => None,
    };
    let head = fresh.as_ref().unwrap_or(loaded);
    let train_set = read_examples(&a.train, head.config())?;
    let eval_set = read_examples(&a.eval, head.config())?;
    let reference = match &a.ref_head {
        Some(dir) => Some(MemoryActionHead::load(dir, &Device::Cpu)?),
        None => None,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let cache_dir = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| a.out.join("feature_cache"));
    let mut features =
        FeatureStore::for_model(&model, Some(&cache_dir), DEFAULT_ENCODE_BATCH, &Device::Cpu)?;

    let log_path = a.out.join("train_log.jsonl");
    if a.resume {
        truncate_log(&log_path, start_step)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(a.resume)
        .write(true)
        .truncate(!a.resume)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let bar = ProgressBar::new(cfg.steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start_step as u64);
    let opts = TrainOptions {
        reference: reference.as_ref(),
        checkpoint_dir: Some(a.out.clone()),
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
    };
    let mut log_error = None;
    let task = Task {
        train: &train_set,
        eval: &eval_set,
        reward: &LabelReward::default(),
    };
    let mut trainer = Trainer::new(head, &mut features, task, &cfg, &opts)?;
    let report = trainer.run(|event| match event {
        Event::Step(step) => {
            bar.set_position(step.step as u64);
            bar.set_message(format!(
                "reward {:.3}±{:.3} acc {:.3} kl {:.4} clip {:.3} H {:.3}",
                step.reward_mean,
                step.reward_std,
                step.accuracy,
                step.kl,
                step.clip_fraction,
                step.entropy
            ));
            if let Err(e) = serde_json::to_string(step)
                .map_err(std::io::Error::other)
                .and_then(|l| writeln!(log, "{l}"))
            {
                log_error.get_or_insert(e);
            }
        }
        Event::Epoch(e) => {
            let speedup = e
                .speedup_vs_first
                .map(|x| format!(", {x:.1}x faster than epoch 1"))
                .unwrap_or_default();
            bar.println(format!(
                "epoch {} done at step {}: {:.3} s ({:.3} s encoding {} texts){speedup}",
                e.epoch, e.end_step, e.seconds, e.encode_seconds, e.encoded_texts
            ));
        }
        Event::Checkpoint { checkpoint, path } => {
            tracing::info!("checkpoint after step {checkpoint}: {}", path.display())
        }
    })?;
    bar.finish_and_clear();
    if let Some(e) = log_error {
        bail!("writing {}: {e}", log_path.display());
    }
    head.save(&a.out)?;
    let epoch_seconds: Vec<f64> = report.epochs.iter().map(|e| e.seconds).collect();
    let summary = serde_json::json!({
        "eval_accuracy": report.eval_accuracy,
        "eval_reward": report.eval_reward,
        "initial_eval_accuracy": report.initial_eval_accuracy,
        "steps": report.steps,
        "seconds": report.seconds,
        "epoch_seconds": epoch_seconds,
        "epoch2_speedup": report.epochs.get(1).and_then(|e| e.speedup_vs_first),
        "features": features.stats(),
        "head": a.out.display().to_string(),
    });
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "eval accuracy {:.3} (from {:.3}), eval reward {:.3}, {} steps in {:.1} s; head written to {}",
            report.eval_accuracy, report.initial_eval_accuracy, report.eval_reward, report.steps, report.seconds,
            a.out.display()
        );
    }
    Ok(())
}
