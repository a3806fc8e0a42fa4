//! The flags every `athena memory` subcommand shares: where the bank is, whose memories.

use anyhow::{Context, Result};
use athena::memory::{BankConfig, MemoryBank, Scope, DEFAULT_MAX_TEXT_BYTES};

/// The bank used when `--db` is not given: a file in the working directory.
pub const DEFAULT_DB: &str = "athena-memory.db";

/// Where the bank is.
#[derive(Debug, clap::Args)]
pub struct DbFlags {
    /// A SQLite file (created if missing) or a postgres://user@host/database URL.
    #[arg(long, default_value = DEFAULT_DB)]
    pub(super) db: String,
    /// Longest fact, query or memory text, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_TEXT_BYTES)]
    pub(super) max_text_bytes: usize,
    /// How many candidates the action head chooses among.
    #[arg(long, default_value_t = 10)]
    candidates: usize,
    /// Weight of full-text ranking in retrieval (0: vectors alone).
    #[arg(long, default_value_t = 1.0)]
    text_weight: f32,
    /// Weight of vector similarity in retrieval.
    #[arg(long, default_value_t = 1.0)]
    vector_weight: f32,
    /// Most memory, in MiB, the compact vector codes of searched scopes may take (about
    /// 4.4 KiB per memory at a hidden size of 2048); a larger scope is searched exactly.
    #[arg(long, default_value_t = 1024)]
    index_mib: usize,
}

impl DbFlags {
    /// Opens the bank.
    pub(super) fn open(&self) -> Result<MemoryBank> {
        let config = bank_config(&BankSettings {
            max_text_bytes: self.max_text_bytes,
            candidates: self.candidates,
            text_weight: self.text_weight,
            vector_weight: self.vector_weight,
            index_mib: self.index_mib,
        })?;
        let where_ = if athena::memory::is_postgres_url(&self.db) {
            athena::memory::postgres::redact_url(&self.db)
        } else {
            self.db.clone()
        };
        MemoryBank::open(&self.db, config).with_context(|| format!("opening the bank {where_}"))
    }

    /// Opens a bank that must already exist (for reads and checks of a SQLite file).
    pub(super) fn open_existing(&self) -> Result<MemoryBank> {
        if !athena::memory::is_postgres_url(&self.db) && !std::path::Path::new(&self.db).exists() {
            anyhow::bail!("{}: no such memory bank (give --db)", self.db);
        }
        self.open()
    }
}

/// What a bank's flags say, in `athena memory` and in `athena serve --memory-db`.
pub struct BankSettings {
    /// Longest fact, query or memory text, in bytes.
    pub max_text_bytes: usize,
    /// How many candidates the action head chooses among.
    pub candidates: usize,
    /// Weight of full-text ranking in retrieval.
    pub text_weight: f32,
    /// Weight of vector similarity in retrieval.
    pub vector_weight: f32,
    /// Most MiB of cached vector codes.
    pub index_mib: usize,
}

/// The bank configuration the flags describe, checked.
pub fn bank_config(s: &BankSettings) -> Result<BankConfig> {
    let usable = |w: f32| w.is_finite() && w >= 0.0;
    if !usable(s.text_weight) || !usable(s.vector_weight) {
        anyhow::bail!("the text and vector weights must be finite and not negative");
    }
    if s.candidates == 0 {
        anyhow::bail!("the candidates must be at least 1");
    }
    let mut config = BankConfig {
        max_text_bytes: s.max_text_bytes,
        candidates: s.candidates,
        index_bytes: s.index_mib.saturating_mul(1 << 20),
        ..BankConfig::default()
    };
    config.retrieval.text_weight = s.text_weight;
    config.retrieval.vector_weight = s.vector_weight;
    Ok(config)
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
    pub(super) fn scope(&self) -> Result<Scope> {
        let scope = self.optional().unwrap_or_default();
        scope.validate().context("give --user, --agent or --run")?;
        Ok(scope)
    }

    /// The scope, or `None` when no id is given.
    pub(super) fn optional(&self) -> Option<Scope> {
        let scope = Scope {
            user_id: self.user.clone(),
            agent_id: self.agent.clone(),
            run_id: self.run.clone(),
        };
        (scope != Scope::default()).then_some(scope)
    }
}

/// Prints one JSON value on a line.
pub(super) fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
