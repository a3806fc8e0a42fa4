//! `athena synth-memory`: write a synthetic memory task (JSONL) for trying `train-head`.

use std::path::PathBuf;

use anyhow::Result;
use athena::train::data::{synthetic_examples, write_examples};

/// Flags of `athena synth-memory`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of examples.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output JSONL file (written atomically).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `athena synth-memory`.
pub fn run(a: Args) -> Result<()> {
    write_examples(&a.out, &synthetic_examples(a.n, a.seed))?;
    eprintln!("wrote {} examples to {}", a.n, a.out.display());
    Ok(())
}
