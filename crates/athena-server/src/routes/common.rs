//! What every handler does first: parse the body, admit the request, name it.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use athena::models::cancel::Cancel;
use athena::models::olmoe::OlmoeModel;

use crate::error::ApiError;
use crate::state::{AppState, Refusal, Shared, Ticket};

/// The body as `T`: 413 past the size limit, 400 for bytes that are not JSON (or not UTF-8),
/// 422 for JSON of the wrong shape.
pub(super) fn parse<T: DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.config.max_body_bytes)
        } else {
            ApiError::malformed(format!("reading the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable(format!("invalid request: {e}"))
        }
        _ => ApiError::malformed(format!("the body is not valid JSON: {e}")),
    })
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn request_id(prefix: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos:08x}{n:06x}")
}

/// Admits a request of `sequences` sequences costing `tokens` tokens: 429 when the server is
/// full, 400 when the request alone costs more than the whole token budget.
pub(super) fn admit(
    state: &AppState,
    param: &str,
    sequences: usize,
    tokens: usize,
) -> Result<Ticket, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    state
        .admission
        .try_acquire(sequences, tokens)
        .map_err(|refusal| match refusal {
            Refusal::Busy => ApiError::overloaded(state.admission.capacity()),
            Refusal::TooCostly { budget } => ApiError {
                code: Some("request_too_large"),
                ..ApiError::bad_request(
                    param,
                    format!(
                        "the request costs {tokens} tokens; the server holds at most {budget} \
                         (--token-budget)"
                    ),
                )
            },
        })
}

pub(super) fn context(state: &AppState) -> Result<(usize, usize), ApiError> {
    let m = state
        .model
        .model()
        .ok_or_else(|| ApiError::internal("the model is not loaded"))?;
    Ok((m.args().max_position_embeddings, m.args().vocab_size))
}

/// 404 `model_not_found` for a `model` this server does not serve.
pub(super) fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if !state.config.serves(Some(m)) => Err(ApiError::model_not_found(m)),
        _ => Ok(()),
    }
}

/// The ids of `texts` (with special tokens), tokenized off the async workers.
pub(super) async fn tokenize(
    state: &Shared,
    texts: Vec<String>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let model = state.model.clone();
    state
        .tokenizing
        .run(move || {
            let tok = model
                .tokenizer()
                .ok_or_else(|| ApiError::internal("the model is not loaded"))?;
            texts.iter().map(|t| Ok(tok.encode(t, true)?)).collect()
        })
        .await
}

/// Runs `work` on the model on the blocking pool, holding `hold` (a [`Ticket`], say) until it
/// returns. Dropping the returned future (a timeout, a client gone) raises the [`Cancel`] flag
/// that `work` is given, so the work stops at its next check and lets go of what it holds.
pub(super) async fn model_work<T: Send + 'static, H: Send + 'static>(
    state: &Shared,
    hold: H,
    what: &'static str,
    work: impl FnOnce(&OlmoeModel, &Cancel) -> athena::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let cancel = Cancel::new();
    let _cancel_on_drop = cancel.on_drop();
    let model = state.model.clone();
    let metrics = state.metrics.clone();
    tokio::task::spawn_blocking(move || {
        let _held = hold;
        let done = work(&model, &cancel);
        if matches!(done, Err(athena::Error::Cancelled { .. })) {
            metrics.cancelled_work();
        }
        done
    })
    .await
    .map_err(|_| ApiError::internal(format!("the {what} task failed")))?
    .map_err(ApiError::from)
}
