//! `athena memory search|list|get|update|delete|history|reset|check`.

use anyhow::{Context, Result};
use athena::memory::{mem0, parse_id, parse_metadata, rfc3339, Record, SearchOptions};
use serde_json::json;

use super::flags::{print_json, DbFlags, ScopeFlags};
use crate::agent::LoadFlags;

/// Flags of `athena memory search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    db: DbFlags,
    #[command(flatten)]
    scope: ScopeFlags,
    #[command(flatten)]
    load: LoadFlags,
    /// What to look for.
    #[arg(long)]
    query: String,
    /// How many memories at most.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Drop memories whose cosine similarity to the query is below this.
    #[arg(long)]
    threshold: Option<f32>,
    /// Keep only memories whose metadata holds these keys with equal values (a JSON object).
    #[arg(long)]
    filters: Option<String>,
    /// Print mem0's `{"results": [...]}`.
    #[arg(long)]
    json: bool,
}

/// Flags of `athena memory list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: DbFlags,
    #[command(flatten)]
    scope: ScopeFlags,
    /// How many to skip.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// How many at most.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Print mem0's `{"results": [...]}`.
    #[arg(long)]
    json: bool,
}

/// Flags of the commands on one memory.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    db: DbFlags,
    /// Restrict to this scope (a memory outside it is unknown).
    #[command(flatten)]
    scope: ScopeFlags,
    /// The memory's id.
    #[arg(long)]
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `athena memory update`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    db: DbFlags,
    #[command(flatten)]
    scope: ScopeFlags,
    #[command(flatten)]
    load: LoadFlags,
    /// The memory's id.
    #[arg(long)]
    id: String,
    /// Its new text.
    #[arg(long)]
    text: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `athena memory delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    db: DbFlags,
    #[command(flatten)]
    scope: ScopeFlags,
    /// The memory's id.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    /// Delete every memory of the scope (--user/--agent/--run).
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `athena memory reset`.
#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    db: DbFlags,
    /// Confirms that every memory of every scope goes.
    #[arg(long)]
    yes: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `athena memory check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    db: DbFlags,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn print_record(r: &Record) {
    println!("{} [{}] {}", r.id, r.scope, r.text);
}

/// Runs `athena memory search`.
pub fn search(a: SearchArgs) -> Result<()> {
    let mut options = SearchOptions::new(a.scope.scope()?);
    options.top_k = a.top_k;
    options.threshold = a.threshold;
    if let Some(f) = &a.filters {
        options.filters = parse_metadata(f).context("--filters")?;
    }
    let mut bank = a.db.open_existing()?;
    bank.check_text("query", &a.query)?;
    let model = a.load.load()?;
    let hits = bank.search(&model, &a.query, &options)?;
    if a.json {
        print_json(&mem0::search_results(&hits))?;
    } else {
        for h in &hits {
            println!("{:.4} {} {}", h.score, h.record.id, h.record.text);
        }
    }
    Ok(())
}

/// Runs `athena memory list`.
pub fn list(a: ListArgs) -> Result<()> {
    let scope = a.scope.scope()?;
    let mut bank = a.db.open_existing()?;
    let records = bank.get_all(&scope, a.offset, a.limit)?;
    if a.json {
        print_json(&mem0::list_results(&records))?;
    } else {
        records.iter().for_each(print_record);
    }
    Ok(())
}

/// Runs `athena memory get`.
pub fn get(a: IdArgs) -> Result<()> {
    let id = parse_id(&a.id)?;
    let mut bank = a.db.open_existing()?;
    let record = bank.get(id, a.scope.optional().as_ref())?;
    if a.json {
        print_json(&mem0::record(&record))?;
    } else {
        print_record(&record);
    }
    Ok(())
}

/// Runs `athena memory update`.
pub fn update(a: UpdateArgs) -> Result<()> {
    let id = parse_id(&a.id)?;
    let scope = a.scope.optional();
    let mut bank = a.db.open_existing()?;
    bank.check_text("text", &a.text)?;
    bank.get(id, scope.as_ref())?;
    let model = a.load.load()?;
    let event = bank.update(&model, id, scope.as_ref(), &a.text)?;
    if a.json {
        print_json(&mem0::updated(id, event.event))?;
    } else {
        println!("{} {id} {}", event.event.as_str(), event.memory);
    }
    Ok(())
}

/// Runs `athena memory delete`.
pub fn delete(a: DeleteArgs) -> Result<()> {
    if a.all {
        let scope = a.scope.scope()?;
        let mut bank = a.db.open_existing()?;
        let n = bank.delete_all(&scope)?;
        if a.json {
            print_json(&mem0::deleted_all(n))?;
        } else {
            println!("deleted {n} memories of {scope}");
        }
        return Ok(());
    }
    let id = parse_id(a.id.as_deref().unwrap_or_default())?;
    let mut bank = a.db.open_existing()?;
    bank.delete(id, a.scope.optional().as_ref())?;
    if a.json {
        print_json(&mem0::deleted(id))?;
    } else {
        println!("DELETE {id}");
    }
    Ok(())
}

/// Runs `athena memory history`.
pub fn history(a: IdArgs) -> Result<()> {
    let id = parse_id(&a.id)?;
    let mut bank = a.db.open_existing()?;
    let rows = bank.history(id, a.scope.optional().as_ref())?;
    if a.json {
        print_json(&mem0::history_results(&rows))?;
    } else {
        for h in &rows {
            println!(
                "{} {} {} -> {}",
                rfc3339(h.created_at),
                h.event.as_str(),
                h.old_memory.as_deref().unwrap_or("-"),
                h.new_memory.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// Runs `athena memory reset`.
pub fn reset(a: ResetArgs) -> Result<()> {
    if !a.yes {
        anyhow::bail!("reset deletes every memory of every scope: add --yes to confirm");
    }
    let mut bank = a.db.open_existing()?;
    bank.reset()?;
    if a.json {
        print_json(&mem0::reset())?;
    } else {
        println!("reset {}", bank.location());
    }
    Ok(())
}

/// Runs `athena memory check`.
pub fn check(a: CheckArgs) -> Result<()> {
    let mut bank = a.db.open_existing()?;
    let report = bank.check()?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = json!(report.is_ok());
        print_json(&v)?;
    } else {
        println!(
            "{}: {} memories, {} history rows",
            bank.location(),
            report.memories,
            report.history_rows
        );
    }
    if !report.is_ok() {
        anyhow::bail!("the bank at {} is damaged: {report:?}", bank.location());
    }
    if !a.json {
        println!("ok");
    }
    Ok(())
}
