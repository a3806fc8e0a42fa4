//! `athena`: the command line of the OLMoE runtime. Each subcommand lives in its own file
//! and calls the library; logging goes to stderr, controlled by `RUST_LOG`.

mod agent;
mod commands;
mod model;

use clap::{Parser, Subcommand};

/// athena — run OLMoE (allenai/OLMoE-1B-7B and fine-tunes) exactly as transformers does.
#[derive(Parser)]
#[command(name = "athena", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout.
    Generate(commands::generate::Args),
    /// Write the float32 logits of every position of a sequence of ids to a .npy file.
    Logits(commands::logits::Args),
    /// Describe a checkpoint: architecture, parameters, bytes, dtype.
    Info(commands::info::Args),
    /// Measure load, prefill and decode speed and peak memory.
    Bench(commands::bench::Args),
    /// Load the model as the agent does (MLX first, else candle) and report why.
    Load(commands::load::Args),
    /// Pooled hidden states of texts.
    Encode(commands::encode::Args),
    /// Decide what to do with a new fact given existing memories (memory action head).
    Act(commands::act::Args),
    /// Write an mlx-lm affine-quantized checkpoint.
    Quantize(commands::quantize::Args),
    /// Train the memory action head (GRPO or SFT) on frozen backbone features.
    TrainHead(commands::train_head::Args),
    /// Write a synthetic memory task (JSONL) to try train-head on.
    SynthMemory(commands::synth_memory::Args),
    /// Serve the model over an OpenAI-compatible HTTP API (continuous batching).
    Serve(commands::serve::Args),
    /// The memory bank: add facts (the action head decides), search, list, history, check.
    Memory(commands::memory::Args),
}

/// glibc hands freed blocks above its thresholds back to the system, so a layer's large
/// buffers at prefill were mapped, faulted in and zeroed afresh for every layer (the kernel's
/// `clear_page` shows in a bf16 prefill's profile). Raised thresholds keep freed memory for
/// the next layer; the peak stays where it was, since only what is in use at once is ever
/// touched.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
        let set = unsafe {
            [
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20),
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30),
                libc::mallopt(libc::M_TOP_PAD, 64 << 20),
            ]
        };
        if set.contains(&0) {
            tracing::debug!("allocator thresholds not all taken: {set:?}");
        }
    }
}

/// Output piped into a program that stops reading (`athena info | head`) ends the process
/// quietly, as it ends other command-line tools, instead of a panic on the failed write.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    die_quietly_on_closed_pipe();
    // candle's CPU kernels look up their thread count on every call, through num_cpus, unless
    // RAYON_NUM_THREADS is set; set once here, before any thread starts, it costs nothing
    // per call (profiles of small matmuls spent a third of their time in that lookup).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => commands::generate::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Load(a) => commands::load::run(a),
        Command::Encode(a) => commands::encode::run(a),
        Command::Act(a) => commands::act::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::TrainHead(a) => commands::train_head::run(a),
        Command::SynthMemory(a) => commands::synth_memory::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Memory(a) => commands::memory::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", chain_message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose message already ends
/// the text (a library error that names its file shows the I/O error it wraps, which is also
/// its source).
fn chain_message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.ends_with(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}
