//! `athena train-head`: train the memory action head (GRPO or SFT) on the candle path, with the
//! backbone frozen; writes the head (head.safetensors + head_config.json) and a JSONL step log.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use athena::backend::BackendKind;
use athena::train::data::read_examples;
use athena::train::features::FeatureSet;
use athena::train::grpo::GrpoConfig;
use athena::train::reward::LabelReward;
use athena::train::trainer::{train, Mode, TrainConfig};
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
    /// Where to write the trained head and train_log.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Objective.
    #[arg(long, value_enum, default_value = "grpo")]
    mode: ModeArg,
    /// Actions sampled per example (GRPO).
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Clip range ε of the policy ratio.
    #[arg(long, default_value_t = 0.2)]
    epsilon: f64,
    /// KL coefficient β (0: no reference head).
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Optimisation steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Seed of batch order and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,
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
        lr: a.lr,
        seed: a.seed,
        grpo: GrpoConfig {
            epsilon: a.epsilon,
            beta: a.beta,
            ..GrpoConfig::default()
        },
        ..TrainConfig::default()
    };
    cfg.validate()?;
    let model = a.load.load()?;
    if model.backend() == Some(BackendKind::Mlx) {
        bail!("training the action head needs the candle path; load with --use-mlx false");
    }
    let head = model
        .action_head()
        .context("training the action head needs the candle path")?;
    let train_set = read_examples(&a.train, head.config())?;
    let eval_set = read_examples(&a.eval, head.config())?;
    let features = FeatureSet::build(&model, &[&train_set, &eval_set], 16, &Device::Cpu)?;

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let log_path = a.out.join("train_log.jsonl");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let bar = ProgressBar::new(cfg.steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut log_error = None;
    let report = train(
        head,
        &features,
        &train_set,
        &eval_set,
        &LabelReward::default(),
        &cfg,
        |step| {
            bar.set_position(step.step as u64 + 1);
            bar.set_message(format!(
                "reward {:.3} acc {:.3}",
                step.reward_mean, step.accuracy
            ));
            if let Err(e) = serde_json::to_string(step)
                .map_err(std::io::Error::other)
                .and_then(|l| writeln!(log, "{l}"))
            {
                log_error.get_or_insert(e);
            }
        },
    )?;
    bar.finish_and_clear();
    if let Some(e) = log_error {
        bail!("writing {}: {e}", log_path.display());
    }
    head.save(&a.out)?;
    let summary = serde_json::json!({
        "eval_accuracy": report.eval_accuracy,
        "eval_reward": report.eval_reward,
        "initial_eval_accuracy": report.initial_eval_accuracy,
        "steps": report.steps,
        "seconds": report.seconds,
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
