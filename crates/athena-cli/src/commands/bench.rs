//! `athena bench`: load time, prefill and decode throughput, peak memory.

use std::time::Instant;

use anyhow::{bail, Result};
use athena::backend::Backend;

use crate::model::ModelArgs;

/// Flags of `athena bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length (ids `(i·7919) mod vocab`, as the transformers anchor uses).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Greedy decode steps after the prompt.
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

/// Runs `athena bench`.
pub fn run(a: Args) -> Result<()> {
    if a.prompt_tokens == 0 {
        bail!("--prompt-tokens must be at least 1");
    }
    let t0 = Instant::now();
    let (_, model) = a.model.load_any()?;
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = model.args().vocab_size;
    if a.prompt_tokens + a.gen_tokens > model.args().max_position_embeddings {
        bail!(
            "--prompt-tokens + --gen-tokens exceed the model's context of {}",
            model.args().max_position_embeddings
        );
    }
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|i| ((i * 7919) % vocab) as u32)
        .collect();
    let mut session = Backend::session(&model);
    let t0 = Instant::now();
    let logits = session.step(&[prompt])?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut next = argmax(&logits[0]);
    let t0 = Instant::now();
    for _ in 0..a.gen_tokens {
        let logits = session.step(&[vec![next]])?;
        next = argmax(&logits[0]);
    }
    let decode_s = t0.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "engine": format!("athena {} ({})", env!("CARGO_PKG_VERSION"), model.kind()),
        "dtype": format!("{:?}", model.dtype()).to_lowercase(),
        "quantization": format!("{:?}", a.model.quantization).to_lowercase(),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "prompt_tokens": a.prompt_tokens,
        "gen_tokens": a.gen_tokens,
        "load_s": round(load_s, 2),
        "prefill_tok_s": round(a.prompt_tokens as f64 / prefill_s, 1),
        "decode_tok_s": round(a.gen_tokens as f64 / decode_s.max(1e-9), 2),
        "peak_rss_mb": peak_rss_mb(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{report:#}");
    }
    Ok(())
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Peak resident set size of this process (VmHWM), in MiB; null where /proc is absent.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round(kb / 1024.0, 1))
}
