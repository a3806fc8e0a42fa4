//! `athena-server`: an OpenAI-compatible HTTP server over an [`OlmoeModel`], whatever backend
//! `load()` chose.
//!
//! - `GET /v1/models`, `GET /health`, `GET /metrics`
//! - `POST /v1/chat/completions`, `POST /v1/completions` (plain or streamed as server-sent
//!   events ending with `data: [DONE]`)
//! - `POST /v1/embeddings` (the model's pooled hidden states, [`OlmoeModel::encode`])
//! - `POST /v1/memory/actions` (the memory action head, [`OlmoeModel::act`]; candle only)
//! - the memory bank in the routes the official mem0 client calls (`/v1/ping/`,
//!   `/v3/memories/...`, `/v1/memories/...`; [`memory_api`], docs/MEMORY_API.md), with
//!   `--memory-db`
//! - `GET /openapi.json` (the OpenAPI description of all of these, from their types)
//!
//! Generation runs in one scheduler thread ([`engine`]) that decodes every running sequence
//! together, one batched step at a time (continuous batching). Requests beyond the running
//! sequences wait in a bounded queue; past it the server answers 429 with `Retry-After`.
//!
//! Every request passes the `Host` check, the API key (when there is one) and, for a POST, a
//! JSON content type; connections, bodies and requests have time bounds ([`Limits`]); a
//! request is admitted by its cost in tokens. docs/SERVER_LIMITS.md lists every bound.
#![warn(missing_docs)]

mod accept;
pub mod api;
mod auth;
mod banks;
mod config;
pub mod engine;
pub mod error;
mod limits;
pub mod memory_api;
pub mod memory_filters;
pub mod memory_responses;
pub mod metrics;
mod openapi;
mod origin;
pub mod pyliteral;
pub mod refused;
pub mod responses;
mod routes;
mod state;
pub mod structured;
mod tokenize;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use athena::models::olmoe::OlmoeModel;
use tokio::net::TcpListener;

pub use auth::{ApiKey, InvalidApiKey};
pub use banks::{MemoryBanks, MemoryOptions, DEFAULT_EXTRACTION_PROMPT};
pub use config::{
    default_max_concurrency, ServerConfig, DEFAULT_MAX_CONCURRENCY, DEFAULT_TOKEN_BUDGET,
    MAX_DEVICE_CONCURRENCY,
};
pub use engine::Engine;
pub use error::ApiError;
pub use limits::Limits;
use metrics::{Metrics, MetricsError};
pub use origin::AllowedHosts;
use state::{Admission, AppState};
use tokenize::Tokenizing;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The model is not loaded.
    #[error("the model must be loaded before serving")]
    NotLoaded,
    /// The model has no tokenizer: the API speaks text.
    #[error("serving needs the model's tokenizer: {0}")]
    NoTokenizer(athena::Error),
    /// The metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Binding, accepting or the scheduler thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Serves `model` on `listener` until `shutdown` completes; then stops accepting, lets open
/// requests run for `config.shutdown_grace`, cancels what is left and returns.
pub async fn serve_on(
    listener: TcpListener,
    model: OlmoeModel,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if !model.is_loaded() {
        return Err(ServerError::NotLoaded);
    }
    let model = Arc::new(model);
    let tokenizer = model.text_tokenizer().map_err(ServerError::NoTokenizer)?;
    let backend = model.model().ok_or(ServerError::NotLoaded)?;
    let tokenizing = Tokenizing::new(tokenizer, backend.args().max_position_embeddings);
    let metrics = Arc::new(Metrics::new()?);
    let engine = Engine::start(model.clone(), config.max_concurrency, metrics.clone()).map_err(
        |source| ServerError::Io {
            what: "starting the scheduler thread".into(),
            source,
        },
    )?;
    let state = Arc::new(AppState {
        model,
        engine: engine.clone(),
        admission: Arc::new(Admission::new(
            config.max_concurrency + config.queue,
            config.token_budget,
        )),
        tokenizing,
        metrics,
        config: config.clone(),
        draining: AtomicBool::new(false),
        started: std::time::Instant::now(),
        bound: listener.local_addr().ok(),
    });
    let app = routes::router(state.clone());
    let addr = state.bound;
    tracing::info!(?addr, "serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signalled = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.draining.store(true, Ordering::SeqCst);
            tracing::info!(
                grace = ?state.config.shutdown_grace,
                "shutting down: no new requests; open ones get the grace period"
            );
            let _ = stop_tx.send(true);
            // Keep the sender: a dropped one would read as a stop too, but say nothing new.
            std::future::pending::<()>().await;
        }
    };
    let server = accept::serve(listener, app, config.limits.clone(), stop_rx.clone());
    let grace = config.shutdown_grace;
    let mut stopped = stop_rx;
    let deadline = async move {
        if stopped.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over: cancelling open requests");
        engine.cancel_all();
        // Streams end at the next step; give them a moment to say so.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        () = server => {}
        () = deadline => tracing::warn!("connections still open after the grace period; closing"),
        () = signalled => {}
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Binds `addr` and serves until SIGTERM or Ctrl-C (see [`serve_on`]). `on_bound` gets the
/// address actually bound (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    model: OlmoeModel,
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Io {
            what: format!("binding {addr}"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    // The handlers are in place before anyone learns the address: a SIGTERM that follows the
    // first answer always drains, never kills.
    let shutdown = shutdown_signal();
    on_bound(bound);
    serve_on(listener, model, config, shutdown).await
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the future is
/// first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let (mut term, mut int) = match (term, int) {
                (Ok(term), Ok(int)) => (term, int),
                (term, int) => {
                    tracing::warn!(
                        "no signal handlers ({:?}, {:?}): SIGTERM and Ctrl-C end the process at once",
                        term.err(),
                        int.err()
                    );
                    return std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
