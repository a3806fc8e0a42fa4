//! `athena memory`: the memory bank from the command line. Each subcommand opens the bank
//! given by `--db` (a SQLite file, created if missing, or a `postgres://` URL); the ones that
//! encode text load the model with the same flags as the other commands. `--json` prints
//! mem0's REST shapes.

mod add;
mod import;
mod ops;

use anyhow::{Context, Result};
use athena::memory::{BankConfig, MemoryBank, Scope, DEFAULT_MAX_TEXT_BYTES};

/// The bank used when `--db` is not given: a file in the working directory.
pub const DEFAULT_DB: &str = "athena-memory.db";

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
}

/// Where the bank is.
#[derive(Debug, clap::Args)]
pub struct DbFlags {
    /// A SQLite file (created if missing) or a postgres://user@host/database URL.
    #[arg(long, default_value = DEFAULT_DB)]
    db: String,
    /// Longest fact, query or memory text, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_TEXT_BYTES)]
    max_text_bytes: usize,
    /// How many candidates the action head chooses among.
    #[arg(long, default_value_t = 10)]
    candidates: usize,
    /// Weight of full-text ranking in retrieval (0: vectors alone).
    #[arg(long, default_value_t = 1.0)]
    text_weight: f32,
    /// Weight of vector similarity in retrieval.
    #[arg(long, default_value_t = 1.0)]
    vector_weight: f32,
}

impl DbFlags {
    /// Opens the bank.
    fn open(&self) -> Result<MemoryBank> {
        if !(self.text_weight.is_finite() && self.text_weight >= 0.0)
            || !(self.vector_weight.is_finite() && self.vector_weight >= 0.0)
        {
            anyhow::bail!("--text-weight and --vector-weight must be finite and not negative");
        }
        if self.candidates == 0 {
            anyhow::bail!("--candidates must be at least 1");
        }
        let mut config = BankConfig {
            max_text_bytes: self.max_text_bytes,
            candidates: self.candidates,
            ..BankConfig::default()
        };
        config.retrieval.text_weight = self.text_weight;
        config.retrieval.vector_weight = self.vector_weight;
        let where_ = if athena::memory::is_postgres_url(&self.db) {
            athena::memory::postgres::redact_url(&self.db)
        } else {
            self.db.clone()
        };
        MemoryBank::open(&self.db, config).with_context(|| format!("opening the bank {where_}"))
    }

    /// Opens a bank that must already exist (for reads and checks of a SQLite file).
    fn open_existing(&self) -> Result<MemoryBank> {
        if !athena::memory::is_postgres_url(&self.db) && !std::path::Path::new(&self.db).exists() {
            anyhow::bail!("{}: no such memory bank (give --db)", self.db);
        }
        self.open()
    }
}

/// Whose memories.
#[derive(Debug, clap::Args)]
pub struct ScopeFlags {
    /// The user's id.
    #[arg(long)]
    user: Option<String>,
    /// The agent's id.
    #[arg(long)]
    agent: Option<String>,
    /// The run's id.
    #[arg(long)]
    run: Option<String>,
}

impl ScopeFlags {
    /// The scope; at least one id is required.
    fn scope(&self) -> Result<Scope> {
        let scope = self.optional().unwrap_or_default();
        scope.validate().context("give --user, --agent or --run")?;
        Ok(scope)
    }

    /// The scope, or `None` when no id is given.
    fn optional(&self) -> Option<Scope> {
        let scope = Scope {
            user_id: self.user.clone(),
            agent_id: self.agent.clone(),
            run_id: self.run.clone(),
        };
        (scope != Scope::default()).then_some(scope)
    }
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
    }
}

/// Prints one JSON value on a line.
fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
