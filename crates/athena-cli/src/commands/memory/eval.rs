//! `athena memory eval`, `athena memory synth-stream` and `athena memory stream-examples`:
//! how well the bank keeps memory on a fact stream with its ground truth, and training data
//! for the action head drawn from such streams.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use athena::memory::eval::examples::stream_examples;
use athena::memory::eval::metrics::Report;
use athena::memory::eval::replay::{evaluate, Strategy};
use athena::memory::eval::stream::{read_stream, write_stream};
use athena::memory::eval::synth::{synthetic_stream, StreamConfig};
use athena::memory::{head_hash, BankConfig, Decider, MemoryBank};
use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};
use athena::models::olmoe::{Need, OlmoeModel};
use athena::train::data::write_examples;
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};

use crate::agent::LoadFlags;

/// Flags of `athena memory eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    load: LoadFlags,
    /// The stream (JSONL, as `athena memory synth-stream` writes it).
    #[arg(long)]
    stream: PathBuf,
    /// Always ADD, without the head (the baseline of mem0 v3).
    #[arg(long, conflicts_with_all = ["head", "random_head"])]
    no_infer: bool,
    /// Decide with a fresh, untrained head (a baseline: it decides at random).
    #[arg(long, conflicts_with = "head")]
    random_head: bool,
    /// Seed of the --random-head's initialisation.
    #[arg(long, default_value_t = 0, requires = "random_head")]
    seed: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Flags of `athena memory synth-stream`.
#[derive(Debug, clap::Args)]
pub struct SynthStreamArgs {
    /// Number of facts.
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Number of users (`u1`, `u2`, ...).
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write each line's full `state` too.
    #[arg(long)]
    with_state: bool,
    /// Output JSONL file (written atomically).
    #[arg(long)]
    out: PathBuf,
}

/// Flags of `athena memory stream-examples`.
#[derive(Debug, clap::Args)]
pub struct StreamExamplesArgs {
    #[command(flatten)]
    load: LoadFlags,
    /// The stream.
    #[arg(long)]
    stream: PathBuf,
    /// Output JSONL file of train-head examples (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Print the counts as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A directory removed when dropped, holding the fresh bank of one run.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("athena-memory-eval-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }

    fn fresh_bank(&self) -> Result<MemoryBank> {
        let path = self.0.join("memory.db");
        let location = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        Ok(MemoryBank::open(location, BankConfig::default())?)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("removing {}: {e}", self.0.display());
        }
    }
}

fn progress_bar(n: usize) -> ProgressBar {
    ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} facts {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// Which head decides, and what the figures call it.
enum Chosen {
    AlwaysAdd,
    Trained { hash: String, dir: PathBuf },
    Random(Box<MemoryActionHead>),
}

fn choose(a: &EvalArgs, model: &OlmoeModel) -> Result<Chosen> {
    if a.no_infer {
        return Ok(Chosen::AlwaysAdd);
    }
    let loaded = model
        .action_head()
        .context("the action head runs on the candle path only; pass --use-mlx false")?;
    if a.random_head {
        let config = ActionHeadConfig {
            seed: a.seed,
            ..loaded.config().clone()
        };
        let head = MemoryActionHead::new(config, loaded.input_dim(), &Device::Cpu)?;
        return Ok(Chosen::Random(Box::new(head)));
    }
    let Some(dir) = model.config().action_head_path.clone() else {
        bail!(
            "give --head DIR (a head trained with `athena train-head`), --no-infer (always \
             ADD) or --random-head (an untrained head, as a baseline)"
        );
    };
    Ok(Chosen::Trained {
        hash: head_hash(&dir)?,
        dir,
    })
}

/// Runs `athena memory eval`.
pub fn run_eval(a: EvalArgs) -> Result<()> {
    let facts = read_stream(&a.stream)?;
    let model = a.load.load_for(Need::ActionHead)?;
    let chosen = choose(&a, &model)?;
    let (strategy, name) = match &chosen {
        Chosen::AlwaysAdd => (Strategy::AlwaysAdd, "always-add".to_string()),
        Chosen::Trained { hash, dir } => {
            let head = model
                .action_head()
                .context("the model was loaded without its action head")?;
            let decider = Decider {
                head,
                head_hash: Some(hash),
            };
            (Strategy::Head(decider), format!("head {}", dir.display()))
        }
        Chosen::Random(head) => {
            let decider = Decider {
                head,
                head_hash: None,
            };
            (
                Strategy::Head(decider),
                format!("random head (seed {})", a.seed),
            )
        }
    };
    let scratch = ScratchDir::new()?;
    let mut bank = scratch.fresh_bank()?;
    let bar = progress_bar(facts.len());
    let start = Instant::now();
    let report = evaluate(&mut bank, &model, &facts, strategy, &mut |n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    if a.json {
        let out = serde_json::json!({
            "strategy": name,
            "stream": a.stream.display().to_string(),
            "seconds": seconds,
            "report": report,
        });
        println!("{out}");
    } else {
        print_report(&name, &a.stream, &report, seconds);
    }
    Ok(())
}

fn print_report(name: &str, stream: &Path, r: &Report, seconds: f64) {
    let e = &r.end_state;
    println!(
        "{name} on {} ({} facts, {} scopes, {seconds:.1} s)",
        stream.display(),
        r.facts,
        e.scopes
    );
    println!(
        "end state: precision {:.3} ({}/{} held), recall {:.3} ({}/{} expected), exact match {:.3} ({}/{} scopes)",
        e.precision, e.correct, e.held, e.recall, e.correct, e.expected, e.exact_match,
        e.exact_scopes, e.scopes
    );
    println!("decisions: accuracy {:.3}", r.accuracy);
    for (op, s) in &r.operations {
        let acc = s
            .accuracy
            .map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
        println!("  {op:<6} {acc} ({}/{})", s.correct, s.total);
    }
}

/// Runs `athena memory synth-stream`.
pub fn run_synth_stream(a: SynthStreamArgs) -> Result<()> {
    if a.users == 0 {
        bail!("--users must be at least 1");
    }
    let config = StreamConfig {
        facts: a.n,
        users: a.users,
        seed: a.seed,
        with_state: a.with_state,
        ..StreamConfig::default()
    };
    let facts = synthetic_stream(&config);
    write_stream(&a.out, &facts)?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &facts {
        *counts.entry(f.op.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
    eprintln!(
        "wrote {} facts ({}) for {} users to {}",
        facts.len(),
        counts.join(", "),
        a.users,
        a.out.display()
    );
    Ok(())
}

/// Runs `athena memory stream-examples`.
pub fn run_stream_examples(a: StreamExamplesArgs) -> Result<()> {
    let facts = read_stream(&a.stream)?;
    let model = a.load.load()?;
    let scratch = ScratchDir::new()?;
    let mut bank = scratch.fresh_bank()?;
    let (examples, stats) = stream_examples(&mut bank, &model, &facts)?;
    if examples.is_empty() {
        bail!("{}: no fact gave an example", a.stream.display());
    }
    write_examples(&a.out, &examples)?;
    if a.json {
        println!("{}", serde_json::to_string(&stats)?);
    } else {
        eprintln!(
            "wrote {} examples from {} facts to {} ({} already held, {} targets not retrieved)",
            stats.examples,
            stats.facts,
            a.out.display(),
            stats.known,
            stats.target_not_retrieved
        );
    }
    Ok(())
}
