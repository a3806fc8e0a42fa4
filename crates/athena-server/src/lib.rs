//! `athena-server`: an OpenAI-compatible HTTP server over an [`OlmoeModel`], whatever backend
//! `load()` chose.
//!
//! - `GET /v1/models`, `GET /health`, `GET /metrics`
//! - `POST /v1/chat/completions`, `POST /v1/completions` (plain or streamed as server-sent
//!   events ending with `data: [DONE]`)
//! - `POST /v1/embeddings` (the model's pooled hidden states, [`OlmoeModel::encode`])
//! - `POST /v1/memory/actions` (the memory action head, [`OlmoeModel::act`]; candle only)
//!
//! Generation runs in one scheduler thread ([`engine`]) that decodes every running sequence
//! together, one batched step at a time (continuous batching). Requests beyond the running
//! sequences wait in a bounded queue; past it the server answers 429 with `Retry-After`.
#![warn(missing_docs)]

pub mod api;
mod config;
pub mod engine;
pub mod error;
mod routes;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use athena::models::olmoe::OlmoeModel;
use tokio::net::TcpListener;

pub use config::ServerConfig;
pub use engine::Engine;
pub use error::ApiError;
use state::{Admission, AppState};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The model is not loaded.
    #[error("the model must be loaded before serving")]
    NotLoaded,
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
    let engine =
        Engine::start(model.clone(), config.max_concurrency).map_err(|source| ServerError::Io {
            what: "starting the scheduler thread".into(),
            source,
        })?;
    let state = Arc::new(AppState {
        model,
        engine: engine.clone(),
        admission: Arc::new(Admission::new(config.max_concurrency + config.queue)),
        config: config.clone(),
        draining: AtomicBool::new(false),
        started: std::time::Instant::now(),
    });
    let app = routes::router(state.clone());
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "serving");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signalled = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.draining.store(true, Ordering::SeqCst);
            tracing::info!(
                grace = ?state.config.shutdown_grace,
                "shutting down: no new requests; open ones get the grace period"
            );
            let _ = stop_tx.send(());
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signalled);
    let grace = config.shutdown_grace;
    let deadline = async move {
        if stop_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over: cancelling open requests");
        engine.cancel_all();
        // Streams end at the next step; give them a moment to say so.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        r = server => r.map_err(|source| ServerError::Io { what: "serving".into(), source })?,
        _ = deadline => tracing::warn!("connections still open after the grace period; closing"),
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
    on_bound(bound);
    serve_on(listener, model, config, shutdown_signal()).await
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
