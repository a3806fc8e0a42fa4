//! `athena encode`: pooled final-norm hidden states of texts.

use anyhow::Result;

use crate::agent::{backend_name, LoadFlags};

/// Flags of `athena encode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// A text to encode (repeatable).
    #[arg(long, required = true)]
    text: Vec<String>,
    /// Print `{"embeddings": [[...], ...], "backend": "candle"|"mlx"}`.
    #[arg(long)]
    json: bool,
}

/// Runs `athena encode`.
pub fn run(a: Args) -> Result<()> {
    let model = a.load.load()?;
    let texts: Vec<&str> = a.text.iter().map(String::as_str).collect();
    let embeddings = model.encode(&texts)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "embeddings": embeddings, "backend": backend_name(&model) })
        );
    } else {
        for (t, e) in texts.iter().zip(&embeddings) {
            let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:.4}")).collect();
            println!("{t:?}: [{} …] ({} dims)", head.join(", "), e.len());
        }
    }
    Ok(())
}
