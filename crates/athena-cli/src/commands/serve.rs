//! `athena serve`: the OpenAI-compatible server, on the backend `OlmoeModel::load()` picks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use athena_server::ServerConfig;

use crate::agent::LoadFlags;

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
    /// Sequences decoded together at most (one batched step).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrency: u32,
    /// Requests that may wait beyond those; past them the server answers 429.
    #[arg(long, default_value_t = 64)]
    queue: u32,
    /// Largest request body in bytes (413 past it).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds open requests may still run after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 10.0)]
    shutdown_grace: f64,
    /// The model name `/v1/models` lists (default: --model).
    #[arg(long)]
    served_model_name: Option<String>,
}

/// Runs `athena serve` until SIGTERM or Ctrl-C.
pub fn run(a: Args) -> Result<()> {
    let config = a.load.config()?;
    let model_id = a
        .served_model_name
        .clone()
        .unwrap_or_else(|| config.model_name.clone());
    if !(a.shutdown_grace.is_finite() && a.shutdown_grace >= 0.0) {
        anyhow::bail!("--shutdown-grace must be a number of seconds >= 0");
    }
    let model = a.load.load()?;
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
    let server = ServerConfig {
        model_id,
        max_concurrency: a.max_concurrency as usize,
        queue: a.queue as usize,
        max_body_bytes: a.max_body_bytes,
        shutdown_grace: Duration::from_secs_f64(a.shutdown_grace),
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
