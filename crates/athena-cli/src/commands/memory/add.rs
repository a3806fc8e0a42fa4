//! `athena memory add`.

use anyhow::{Context, Result};
use athena::memory::{mem0, parse_metadata, MemoryError, Metadata};
use athena::models::olmoe::{Need, OlmoeModel};

use super::flags::{print_json, DbFlags, ScopeFlags};
use crate::agent::LoadFlags;

/// Flags of `athena memory add`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: DbFlags,
    #[command(flatten)]
    scope: ScopeFlags,
    #[command(flatten)]
    load: LoadFlags,
    /// A fact to remember (repeat for several).
    #[arg(long = "fact", required = true)]
    facts: Vec<String>,
    /// Add every new fact without asking the action head (no head needed).
    #[arg(long)]
    no_infer: bool,
    /// A JSON object attached to the facts that are added.
    #[arg(long)]
    metadata: Option<String>,
    /// Print mem0's `{"results": [...]}`.
    #[arg(long)]
    json: bool,
}

/// Loads the model for `add`/`import`: refuses inference without a trained head before
/// anything is loaded; inference asks for the head, hence candle ([`Need::ActionHead`]).
pub(super) fn load_model(load: &LoadFlags, infer: bool) -> Result<OlmoeModel> {
    if !infer {
        return load.load();
    }
    if load.config()?.action_head_path.is_none() {
        return Err(MemoryError::UntrainedHead.into());
    }
    load.load_for(Need::ActionHead)
}

/// The metadata flag, parsed.
pub(super) fn metadata(flag: Option<&str>) -> Result<Metadata> {
    Ok(match flag {
        Some(text) => parse_metadata(text).context("--metadata")?,
        None => Metadata::new(),
    })
}

/// Runs `athena memory add`.
pub fn run(a: Args) -> Result<()> {
    let scope = a.scope.scope()?;
    let metadata = metadata(a.metadata.as_deref())?;
    if !a.no_infer && a.load.config()?.action_head_path.is_none() {
        return Err(MemoryError::UntrainedHead.into());
    }
    let mut bank = a.db.open()?;
    let facts: Vec<&str> = a.facts.iter().map(String::as_str).collect();
    for (i, f) in facts.iter().enumerate() {
        bank.check_text(&format!("fact {}", i + 1), f)?;
    }
    let model = load_model(&a.load, !a.no_infer)?;
    let events = bank.add(&model, &facts, &scope, &metadata, !a.no_infer)?;
    if a.json {
        print_json(&mem0::add_results(&events))?;
    } else {
        for e in &events {
            let id = e.id.map_or_else(|| "-".to_string(), |id| id.to_string());
            match &e.previous_memory {
                Some(prev) => println!("{} {id} {} (was: {prev})", e.event.as_str(), e.memory),
                None => println!("{} {id} {}", e.event.as_str(), e.memory),
            }
        }
    }
    Ok(())
}
