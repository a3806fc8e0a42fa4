//! `athena memory import FILE.jsonl`: each user message of a conversation becomes a fact.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use athena::memory::{mem0, parse_conversation_line, EventKind, Scope};
use serde_json::json;

use super::add::{load_model, metadata};
use super::flags::{print_json, DbFlags};
use crate::agent::LoadFlags;

/// Flags of `athena memory import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: DbFlags,
    #[command(flatten)]
    load: LoadFlags,
    /// The conversation: one `{"user_id", "role", "content"}` object per line (`agent_id`,
    /// `run_id` and `timestamp` optional).
    file: PathBuf,
    /// Add every new fact without asking the action head (no head needed).
    #[arg(long)]
    no_infer: bool,
    /// How many facts are encoded together.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// A JSON object attached to the facts that are added.
    #[arg(long)]
    metadata: Option<String>,
    /// Print the events and the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The user messages of the file, with their scopes; errors name the line.
fn read_facts(a: &Args, max_bytes: usize) -> Result<Vec<(Scope, String)>> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut facts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", a.file.display(), i + 1);
        facts.extend(parse_conversation_line(line, max_bytes).with_context(at)?);
    }
    Ok(facts)
}

/// Runs `athena memory import`.
pub fn run(a: Args) -> Result<()> {
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let metadata = metadata(a.metadata.as_deref())?;
    if !a.no_infer && a.load.config()?.action_head_path.is_none() {
        return Err(athena::memory::MemoryError::UntrainedHead.into());
    }
    let facts = read_facts(&a, a.db.max_text_bytes)?;
    let mut bank = a.db.open()?;
    let model = load_model(&a.load, !a.no_infer)?;
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(facts.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} facts {per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut events = Vec::new();
    let mut start = 0;
    while start < facts.len() {
        let scope = &facts[start].0;
        let mut end = start + 1;
        while end < facts.len() && end - start < a.batch_size && &facts[end].0 == scope {
            end += 1;
        }
        let batch: Vec<&str> = facts[start..end].iter().map(|(_, f)| f.as_str()).collect();
        events.extend(bank.add(&model, &batch, scope, &metadata, !a.no_infer)?);
        bar.inc(batch.len() as u64);
        start = end;
    }
    bar.finish_and_clear();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for kind in [
        EventKind::Add,
        EventKind::Update,
        EventKind::Delete,
        EventKind::Noop,
    ] {
        counts.insert(
            kind.as_str(),
            events.iter().filter(|e| e.event == kind).count(),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        print_json(&json!({
            "results": events.iter().map(mem0::event).collect::<Vec<_>>(),
            "summary": { "facts": facts.len(), "events": counts, "seconds": secs },
        }))?;
    } else {
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{} facts in {secs:.1} s ({:.1} facts/s): {}",
            facts.len(),
            facts.len() as f64 / secs.max(1e-9),
            summary.join(", ")
        );
    }
    Ok(())
}
