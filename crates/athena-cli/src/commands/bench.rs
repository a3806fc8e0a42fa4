//! `athena bench`: load time, prefill and decode throughput, peak memory, and decode against
//! the machine's memory bandwidth.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use athena::generate::argmax;

use crate::agent::LoadFlags;
use crate::model::BackendArg;

/// Flags of `athena bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// Run on this engine only, without falling back (default: the backend rule, MLX first
    /// when enabled and available, else candle).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Prompt length (ids `(i·7919) mod vocab`, as the transformers anchor uses).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Greedy decode steps after the prompt.
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Threads of the compute pool (rayon's global pool, which candle uses too); default: one
    /// per CPU.
    #[arg(long)]
    threads: Option<usize>,
    /// Measure the machine's memory bandwidth first (a STREAM-style copy and a read-only
    /// pass) and report decode as a share of the read ceiling.
    #[arg(long)]
    stream: bool,
    /// Only measure the bandwidth; load no model.
    #[arg(long, requires = "stream")]
    stream_only: bool,
    /// Sequences decoded together (sequence b's prompt is the ids shifted by b·104729), for
    /// batched throughput; tok/s figures are then aggregates over the batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Time the first prefill and decode steps cold: without the untimed warm-up pass (the
    /// same prompt and one decode step in a throwaway session) that otherwise runs first, as
    /// llama-bench runs one.
    #[arg(long)]
    no_warmup: bool,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

/// Runs `athena bench`.
pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // Read by rayon when its global pool starts and by candle's CPU kernels; nothing has
        // used the pool yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let bandwidth = a
        .stream
        .then(|| athena::kernels::bandwidth::measure(512, 5));
    let stream_json = bandwidth.map(|b| {
        serde_json::json!({"copy_gb_s": round(b.copy_gb_s, 1), "read_gb_s": round(b.read_gb_s, 1)})
    });
    if a.stream_only {
        let report = serde_json::json!({
            "threads": threads(),
            "isa": athena::kernels::isa(),
            "bandwidth": stream_json,
        });
        println!("{report}");
        return Ok(());
    }
    if a.prompt_tokens == 0 {
        bail!("--prompt-tokens must be at least 1");
    }
    if !(1..=4096).contains(&a.batch) {
        bail!("--batch must be between 1 and 4096, got {}", a.batch);
    }
    let t0 = Instant::now();
    let loaded = a.load.load_on(a.backend)?;
    let model = loaded.model().context("the model did not load")?;
    let config = loaded.config();
    let dtype = config.dtype;
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = model.args().vocab_size;
    if a.prompt_tokens + a.gen_tokens > model.args().max_position_embeddings {
        bail!(
            "--prompt-tokens + --gen-tokens exceed the model's context of {}",
            model.args().max_position_embeddings
        );
    }
    // Sequence 0's prompt is the transformers anchor's; the others are shifted copies.
    let prompts: Vec<Vec<u32>> = (0..a.batch)
        .map(|b| {
            (0..a.prompt_tokens)
                .map(|i| ((i * 7919 + b * 104_729) % vocab) as u32)
                .collect()
        })
        .collect();
    // One-time costs (the first touch of the weights and of the step's buffers, the kernel
    // pool's start) out of the timed steps.
    if !a.no_warmup {
        let mut warm = model.session();
        let logits = warm.step(&prompts)?;
        let next: Vec<Vec<u32>> = logits.iter().map(|l| vec![argmax(l)]).collect();
        warm.step(&next)?;
    }
    let mut session = model.session();
    let t0 = Instant::now();
    let logits = session.step(&prompts)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut next: Vec<Vec<u32>> = logits.iter().map(|l| vec![argmax(l)]).collect();
    let t0 = Instant::now();
    for _ in 0..a.gen_tokens {
        let logits = session.step(&next)?;
        next = logits.iter().map(|l| vec![argmax(l)]).collect();
    }
    let decode_s = t0.elapsed().as_secs_f64();
    let batch = a.batch as f64;
    let decode_tok_s = batch * a.gen_tokens as f64 / decode_s.max(1e-9);
    // Counted from the weights as loaded (pre-quantized checkpoints included).
    let bytes = model.token_weight_bytes().map(|b| b as f64);
    let gb_s = bytes.map(|b| round(decode_tok_s * b / 1e9, 1));
    let report = serde_json::json!({
        "engine": format!("athena {} ({})", env!("CARGO_PKG_VERSION"), model.kind()),
        "backend": model.kind().to_string(),
        "dtype": format!("{dtype:?}").to_lowercase(),
        "quantization": format!("{:?}", config.quantization).to_lowercase(),
        "int8_activations": config.int8_activations,
        "threads": threads(),
        "isa": athena::kernels::isa(),
        "device": model.device(),
        "device_requested": format!("{:?}", config.device).to_lowercase(),
        "batch": a.batch,
        "prompt_tokens": a.prompt_tokens,
        "gen_tokens": a.gen_tokens,
        "warmup": !a.no_warmup,
        "load_s": round(load_s, 2),
        "prefill_tok_s": round(batch * a.prompt_tokens as f64 / prefill_s, 1),
        "decode_tok_s": round(decode_tok_s, 2),
        "weight_mb_per_token": bytes.map(|b| round(b / 1e6, 1)),
        "decode_gb_s": gb_s,
        "bandwidth": stream_json,
        "pct_of_read_ceiling": bandwidth.zip(gb_s).map(|(b, g)| round(100.0 * g / b.read_gb_s, 1)),
        "peak_rss_mb": peak_rss_mb(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{report:#}");
    }
    Ok(())
}

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
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
