//! `athena info`: what a checkpoint is, without loading its weights.

use anyhow::Result;
use athena::checkpoint::{CheckpointReader, OlmoeArgs, WeightFiles};
use candle_core::{DType, Device};

/// Flags of `athena info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory, or a hub id.
    #[arg(long)]
    model: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `athena info`.
pub fn run(a: Args) -> Result<()> {
    let dir = athena::checkpoint::hub::resolve(&a.model)?;
    let args = OlmoeArgs::from_file(&dir.join("config.json"))?;
    let files = WeightFiles::open(&dir)?;
    let layout = CheckpointReader::new(&files, &args, &Device::Cpu, DType::F32)?.layout();
    let dtype = args.dtype.map_or("unspecified".to_string(), |d| {
        format!("{d:?}").to_lowercase()
    });
    let info = serde_json::json!({
        "model": dir.display().to_string(),
        "architecture": "OlmoeForCausalLM",
        "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size,
        "layers": args.num_hidden_layers,
        "heads": args.num_attention_heads,
        "kv_heads": args.num_key_value_heads,
        "head_dim": args.head_dim,
        "experts": args.num_experts,
        "experts_per_token": args.num_experts_per_tok,
        "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_position_embeddings,
        "params_total": args.total_params(),
        "params_active_per_token": args.active_params(),
        "bytes": files.data_bytes(),
        "dtype": dtype,
        "expert_layout": format!("{layout:?}"),
        "files": files.paths().count(),
    });
    if a.json {
        println!("{info}");
        return Ok(());
    }
    println!("{}", dir.display());
    println!(
        "  architecture      OlmoeForCausalLM ({} layers, hidden {}, {} heads / {} kv heads of {})",
        args.num_hidden_layers,
        args.hidden_size,
        args.num_attention_heads,
        args.num_key_value_heads,
        args.head_dim
    );
    println!(
        "  experts           {} per layer, {} routed per token, intermediate {}",
        args.num_experts, args.num_experts_per_tok, args.intermediate_size
    );
    println!(
        "  vocabulary        {} (context {})",
        args.vocab_size, args.max_position_embeddings
    );
    println!(
        "  parameters        {} total, {} active per token",
        human(args.total_params()),
        human(args.active_params())
    );
    println!(
        "  bytes             {} in {} file(s), stored as {dtype}",
        human(files.data_bytes()),
        files.paths().count()
    );
    println!("  expert layout     {layout:?}");
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
