//! `athena act`: what the memory action head does with a new fact.

use std::path::PathBuf;

use anyhow::Result;
use athena::models::olmoe::read_memories;

use athena::models::olmoe::Need;

use crate::agent::{backend_name, LoadFlags};

/// Flags of `athena act`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// The new fact.
    #[arg(long)]
    fact: String,
    /// JSONL file of existing memories, one `{"id": "...", "text": "..."}` per line.
    #[arg(long)]
    memories: Option<PathBuf>,
    /// Print the action as one JSON object (with the `"backend"` that ran the model).
    #[arg(long)]
    json: bool,
}

/// Runs `athena act`.
pub fn run(a: Args) -> Result<()> {
    let memories = match &a.memories {
        Some(p) => read_memories(p)?,
        None => vec![],
    };
    let model = a.load.load_for(Need::ActionHead)?;
    let action = model.act(&a.fact, &memories)?;
    if a.json {
        let mut json = serde_json::to_value(&action)?;
        json["backend"] = backend_name(&model).into();
        println!("{json}");
    } else {
        match &action.target {
            Some(t) => println!("{} {t}", action.op),
            None => println!("{}", action.op),
        }
    }
    Ok(())
}
