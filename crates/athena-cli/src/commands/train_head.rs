//! `athena train-head`: train the memory action head (GRPO or SFT) on the candle path, with the
//! backbone frozen. Features are encoded once and cached on disk; writes the head
//! (head.safetensors + head_config.json), checkpoints and a JSONL step log
//! ([`HeadTraining::run`] does the run; this file reads the flags and shows progress).

use std::path::PathBuf;

use anyhow::Result;
use athena::models::olmoe::Need;
use athena::train::grpo::{GrpoConfig, LossType};
use athena::train::run::HeadTraining;
use athena::train::trainer::{Event, Mode, TrainConfig};
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

/// Runs `athena train-head`.
pub fn run(a: Args) -> Result<()> {
    let training = HeadTraining {
        train: a.train,
        eval: a.eval,
        out: a.out.clone(),
        config: TrainConfig {
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
        },
        ref_head: a.ref_head,
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        overwrite: a.overwrite,
        cache_dir: a.cache_dir,
        proj_dim: a.proj_dim,
    };
    // Before the model loads: a run that cannot start or resume says so at once.
    let start_step = training.check()?;
    let model = a.load.load_for(Need::ActionHead)?;
    let bar = ProgressBar::new(training.config.steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start_step as u64);
    let result = training.run(&model, |event| match event {
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
    });
    bar.finish_and_clear();
    let summary = result?;
    if a.json {
        println!("{}", summary.to_json());
    } else {
        println!(
            "eval accuracy {:.3} (from {:.3}), eval reward {:.3}, {} steps in {:.1} s; head written to {}",
            summary.eval_accuracy, summary.initial_eval_accuracy, summary.eval_reward, summary.steps, summary.seconds,
            a.out.display()
        );
    }
    Ok(())
}
