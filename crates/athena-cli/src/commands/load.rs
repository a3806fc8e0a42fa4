//! `athena load`: load the model as the agent does and report which backend runs it and why.

use anyhow::Result;
use athena::models::olmoe::OlmoeModel;

use crate::agent::LoadFlags;

/// Flags of `athena load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `athena load`. With `--json`, a failure is a JSON object too
/// (`{"loaded": false, "error": ...}`, exit status 1), so that a consumer always has a line
/// to parse.
pub fn run(a: Args) -> Result<()> {
    let mut model = OlmoeModel::new(a.load.config()?);
    let report = match model.load() {
        Ok(report) => report,
        Err(e) if a.json => {
            println!(
                "{}",
                serde_json::json!({"loaded": false, "error": e.to_string()})
            );
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("backend      {}", report.backend);
    println!(
        "action head  {}",
        if report.action_head {
            "attached"
        } else {
            "none (MLX path)"
        }
    );
    println!("model        {}", report.model_path);
    for at in &report.attempts {
        println!(
            "  {:<7} {:<8} {}",
            at.backend.to_string(),
            format!("{:?}", at.outcome).to_lowercase(),
            at.reason
        );
    }
    Ok(())
}
