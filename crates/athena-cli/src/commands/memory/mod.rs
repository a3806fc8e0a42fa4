//! `athena memory`: the memory bank from the command line. Each subcommand opens the bank
//! given by `--db` (a SQLite file, created if missing, or a `postgres://` URL); the ones that
//! encode text load the model with the same flags as the other commands. `--json` prints
//! mem0's REST shapes.

mod add;
mod eval;
mod flags;
mod import;
mod ops;

use anyhow::Result;

pub use flags::{bank_config, BankSettings};

/// Flags of `athena memory`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add facts (the trained action head decides ADD/UPDATE/DELETE/NOOP; --no-infer adds).
    Add(add::Args),
    /// Search a scope's memories (cosine similarity fused with full-text ranking).
    Search(ops::SearchArgs),
    /// List a scope's memories, oldest first.
    List(ops::ListArgs),
    /// Show one memory.
    Get(ops::IdArgs),
    /// Replace a memory's text (re-encodes it).
    Update(ops::UpdateArgs),
    /// Delete one memory (--id) or every memory of a scope (--all).
    Delete(ops::DeleteArgs),
    /// Show a memory's history.
    History(ops::IdArgs),
    /// Delete every memory and all history.
    Reset(ops::ResetArgs),
    /// Check the bank's integrity (exit code 1 when anything is wrong).
    Check(ops::CheckArgs),
    /// Add the user messages of a conversation (JSONL) as facts, in batches.
    Import(import::Args),
    /// Replay a fact stream into a fresh bank and score its end state against the truth.
    Eval(eval::EvalArgs),
    /// Write a synthetic fact stream (JSONL) with its ground truth.
    SynthStream(eval::SynthStreamArgs),
    /// Write train-head examples drawn from a stream, with the candidates retrieval gives.
    StreamExamples(eval::StreamExamplesArgs),
}

/// Runs `athena memory`.
pub fn run(a: Args) -> Result<()> {
    match a.command {
        Command::Add(a) => add::run(a),
        Command::Search(a) => ops::search(a),
        Command::List(a) => ops::list(a),
        Command::Get(a) => ops::get(a),
        Command::Update(a) => ops::update(a),
        Command::Delete(a) => ops::delete(a),
        Command::History(a) => ops::history(a),
        Command::Reset(a) => ops::reset(a),
        Command::Check(a) => ops::check(a),
        Command::Import(a) => import::run(a),
        Command::Eval(a) => eval::run_eval(a),
        Command::SynthStream(a) => eval::run_synth_stream(a),
        Command::StreamExamples(a) => eval::run_stream_examples(a),
    }
}
