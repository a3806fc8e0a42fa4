//! `athena serve`: the OpenAI-compatible server, on the backend `OlmoeModel::load()` picks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use athena::memory::DEFAULT_MAX_TEXT_BYTES;
use athena::models::olmoe::OlmoeModel;
use athena_server::{AllowedHosts, ApiKey, Limits, MemoryBanks, MemoryOptions, ServerConfig};

use crate::agent::LoadFlags;
use crate::commands::memory::{bank_config, BankSettings};

/// Flags of `athena serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one; the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together at most (one batched step). Default: 16 on the CPU; on a
    /// GPU, as many as fit when each holds a KV cache of the whole context, in nine tenths of
    /// the memory free after loading (at most 256).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrency: Option<u32>,
    /// Requests that may wait beyond those; past them the server answers 429.
    #[arg(long, default_value_t = 64)]
    queue: u32,
    /// Tokens the server holds at most over its running and waiting requests: a generation
    /// costs prompt + max_tokens per choice, an encoding all its tokens. A request past what
    /// is free gets 429; one past the whole budget, 400.
    #[arg(long, default_value_t = athena_server::DEFAULT_TOKEN_BUDGET as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    token_budget: u64,
    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds open requests may still run after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 10.0)]
    shutdown_grace: f64,
    /// The model name `/v1/models` lists (default: --model). Requests may name either.
    #[arg(long)]
    served_model_name: Option<String>,
    /// The key every route but /health asks for, as `Authorization: Bearer KEY` (or `Token
    /// KEY`); 401 without it.
    #[arg(long, env = "ATHENA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Host names accepted in the Host header besides localhost and the bound address
    /// (comma-separated, `name` or `name:port`; `*` accepts any). Others get 421.
    #[arg(long, default_value = "")]
    allowed_hosts: String,
    /// Seconds a connection may take to send a request's headers, counted from when it starts
    /// waiting for one (a new or a kept-alive connection).
    #[arg(long, default_value_t = 10.0)]
    header_read_timeout: f64,
    /// Seconds a request's body may take to arrive after its headers (408 past them).
    #[arg(long, default_value_t = 30.0)]
    body_read_timeout: f64,
    /// Seconds a connection may sit idle (no request in flight, nothing arriving) before it
    /// is closed.
    #[arg(long, default_value_t = 5.0)]
    keep_alive_timeout: f64,
    /// Seconds a request other than a generation may take in all (504 past them).
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Seconds a generation may run, streamed or not, before it is cancelled.
    #[arg(long, default_value_t = 1800.0)]
    generation_timeout: f64,
    /// Open connections at most; one past them is answered 503 and closed.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    #[command(flatten)]
    memory: MemoryFlags,
}

/// The memory bank the server serves to the mem0 client (docs/MEMORY_API.md).
#[derive(Debug, clap::Args)]
struct MemoryFlags {
    /// Serve the memory bank in this SQLite file (created if missing) or PostgreSQL database
    /// (`postgres://user@host/db`; several servers may share one) on the routes the official
    /// mem0 client calls. With --head, adds go through the trained action head.
    #[arg(long, env = "ATHENA_MEMORY_DB", hide_env_values = true)]
    memory_db: Option<String>,
    /// Connections to the bank; as many memory requests use it at once.
    #[arg(long, default_value_t = 4, requires = "memory_db",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    memory_connections: u32,
    /// A file whose text replaces the instructions the model reads to extract facts from a
    /// conversation (`infer=true`); the answer is always JSON `{"facts": [...]}`.
    #[arg(long, requires = "memory_db")]
    memory_extraction_prompt: Option<std::path::PathBuf>,
    /// Longest fact, query or memory text, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_TEXT_BYTES, requires = "memory_db")]
    memory_max_text_bytes: usize,
    /// How many candidates the action head chooses among.
    #[arg(long, default_value_t = 10, requires = "memory_db")]
    memory_candidates: usize,
    /// Weight of full-text ranking in retrieval (0: vectors alone).
    #[arg(long, default_value_t = 1.0, requires = "memory_db")]
    memory_text_weight: f32,
    /// Weight of vector similarity in retrieval.
    #[arg(long, default_value_t = 1.0, requires = "memory_db")]
    memory_vector_weight: f32,
    /// Most memory, in MiB, the compact vector codes of searched scopes may take, over all
    /// connections together; a larger scope is searched exactly.
    #[arg(long, default_value_t = 1024, requires = "memory_db")]
    memory_index_mib: usize,
}

impl MemoryFlags {
    /// Opens the bank for `model`, when one is asked for.
    fn open(&self, model: &OlmoeModel) -> Result<Option<Arc<MemoryBanks>>> {
        let Some(location) = &self.memory_db else {
            return Ok(None);
        };
        let bank = bank_config(&BankSettings {
            max_text_bytes: self.memory_max_text_bytes,
            candidates: self.memory_candidates,
            text_weight: self.memory_text_weight,
            vector_weight: self.memory_vector_weight,
            index_mib: self.memory_index_mib,
        })
        .context("--memory-* flags")?;
        let extraction_prompt = match &self.memory_extraction_prompt {
            Some(path) => std::fs::read_to_string(path).with_context(|| {
                format!("reading --memory-extraction-prompt {}", path.display())
            })?,
            None => athena_server::DEFAULT_EXTRACTION_PROMPT.to_string(),
        };
        let options = MemoryOptions {
            location: location.clone(),
            bank,
            connections: self.memory_connections as usize,
            extraction_prompt,
        };
        let shown = if athena::memory::is_postgres_url(location) {
            athena::memory::postgres::redact_url(location)
        } else {
            location.clone()
        };
        let banks = MemoryBanks::open(options, model)
            .with_context(|| format!("opening the memory bank --memory-db {shown}"))?;
        tracing::info!(
            bank = %banks.location(),
            connections = banks.connections(),
            "serving the memory bank; adds {}",
            if banks.has_head() {
                "go through the trained action head unless a request says use_head=false"
            } else {
                "store every new fact (no trained action head: --head)"
            }
        );
        Ok(Some(Arc::new(banks)))
    }
}

/// A flag's seconds as a duration: finite, positive (zero, for the grace period).
fn seconds(flag: &str, s: f64, zero_ok: bool) -> Result<Duration> {
    let ok = s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s < 1e9;
    anyhow::ensure!(ok, "--{flag} must be a number of seconds > 0, got {s}");
    Ok(Duration::from_secs_f64(s))
}

/// Runs `athena serve` until SIGTERM or Ctrl-C.
pub fn run(a: Args) -> Result<()> {
    few_malloc_arenas();
    let config = a.load.config()?;
    let model_id = a
        .served_model_name
        .clone()
        .unwrap_or_else(|| config.model_name.clone());
    let shutdown_grace = seconds("shutdown-grace", a.shutdown_grace, true)?;
    let limits = Limits {
        header_read_timeout: seconds("header-read-timeout", a.header_read_timeout, false)?,
        body_read_timeout: seconds("body-read-timeout", a.body_read_timeout, false)?,
        idle_timeout: seconds("keep-alive-timeout", a.keep_alive_timeout, false)?,
        request_timeout: seconds("request-timeout", a.request_timeout, false)?,
        generation_timeout: seconds("generation-timeout", a.generation_timeout, false)?,
        max_connections: a.max_connections as usize,
    };
    let api_key = a
        .api_key
        .as_deref()
        .map(ApiKey::new)
        .transpose()
        .context("--api-key / ATHENA_API_KEY")?;
    if api_key.is_none() && !a.host.is_loopback() {
        let warning = format!(
            "serving on {} without an API key: anyone who can reach this address can use the \
             model; set --api-key or ATHENA_API_KEY",
            a.host
        );
        tracing::warn!("{warning}");
        eprintln!("warning: {warning}");
    }
    let mut aliases = Vec::new();
    if model_id != config.model_name {
        aliases.push(config.model_name.clone());
    }
    let model = a.load.load()?;
    let memory = a.memory.open(&model)?;
    if let Some(report) = model.report() {
        for attempt in &report.attempts {
            tracing::info!(
                "{}: {:?}: {}",
                attempt.backend,
                attempt.outcome,
                attempt.reason
            );
        }
    }
    let max_concurrency = match a.max_concurrency {
        Some(n) => n as usize,
        None => default_max_concurrency(&model),
    };
    let server = ServerConfig {
        model_id,
        aliases,
        max_concurrency,
        queue: a.queue as usize,
        token_budget: usize::try_from(a.token_budget).unwrap_or(usize::MAX),
        max_body_bytes: a.max_body_bytes,
        shutdown_grace,
        api_key,
        allowed_hosts: AllowedHosts::parse(&a.allowed_hosts),
        limits,
        memory,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("starting the async runtime")?;
    let addr = SocketAddr::new(a.host, a.port);
    let backend = model.backend();
    runtime.block_on(athena_server::serve(addr, model, server, |bound| {
        // One line on stdout that scripts can wait for.
        println!(
            "athena serve: listening on http://{bound} (backend {})",
            backend.map(|b| b.to_string()).unwrap_or_default()
        );
    }))?;
    Ok(())
}

/// A long-running server keeps glibc to two malloc arenas unless `MALLOC_ARENA_MAX` says
/// otherwise. With the default (eight per core), each thread that serves a request may draw on
/// an arena of its own, and the freed memory every arena keeps (the thresholds raised in
/// `main`) added up to a resident size that crept up under a steady load; two arenas reach
/// their peak early and stay there (docs/BENCHMARKS.md, "Soak").
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before the server's threads
        // start.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) } == 0 {
            tracing::debug!("the malloc arena limit was not taken");
        }
    }
}

/// `--max-concurrency`'s default for the loaded model (`athena_server::default_max_concurrency`),
/// said on stderr where it comes from the accelerator's memory.
fn default_max_concurrency(model: &OlmoeModel) -> usize {
    let Some(backend) = model.model() else {
        return athena_server::DEFAULT_MAX_CONCURRENCY;
    };
    let memory = backend.device_memory();
    let context = backend.args().max_position_embeddings as u64;
    let per_sequence = backend
        .kv_bytes_per_token()
        .map(|b| (b as u64).saturating_mul(context));
    let n = athena_server::default_max_concurrency(memory.map(|m| m.free), per_sequence);
    if let (Some(memory), Some(per_sequence)) = (memory, per_sequence) {
        eprintln!(
            "max concurrency {n}: KV caches of {context} tokens ({:.0} MiB each) in 9/10 of the \
             {:.1} GiB free on the {} (--max-concurrency sets it)",
            per_sequence as f64 / (1u64 << 20) as f64,
            memory.free as f64 / (1u64 << 30) as f64,
            backend.device(),
        );
    }
    n
}
