//! The operator's routes: health, metrics, the model list.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::Shared;

pub(super) async fn health(State(s): State<Shared>) -> Response {
    let stats = s.engine.stats().snapshot();
    let held = s.admission.held();
    let status = if s.draining.load(Ordering::SeqCst) {
        "draining"
    } else {
        "ok"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status,
        "backend": s.model.backend().map(|b| b.to_string()),
        "model": s.config.model_id,
        "running": stats.running,
        "waiting": stats.waiting,
        "requests_in_server": held.sequences,
        "tokens_in_server": held.tokens,
        "token_budget": s.admission.token_budget(),
        "max_concurrency": s.config.max_concurrency,
        "queue": s.config.queue,
        "uptime_s": s.started.elapsed().as_secs(),
    });
    (code, Json(body)).into_response()
}

pub(super) async fn metrics(State(s): State<Shared>) -> Response {
    let st = s.engine.stats().snapshot();
    let mut text = s.metrics.render();
    text += &format!(
        "# TYPE athena_running_sequences gauge\nathena_running_sequences {}\n\
         # TYPE athena_waiting_sequences gauge\nathena_waiting_sequences {}\n\
         # TYPE athena_decode_steps_total counter\nathena_decode_steps_total {}\n\
         # TYPE athena_generated_tokens_total counter\nathena_generated_tokens_total {}\n\
         # TYPE athena_sequences_finished_total counter\nathena_sequences_finished_total {}\n\
         # TYPE athena_sequences_cancelled_total counter\nathena_sequences_cancelled_total {}\n\
         # TYPE athena_sequences_failed_total counter\nathena_sequences_failed_total {}\n",
        st.running, st.waiting, st.steps, st.tokens, st.finished, st.cancelled, st.failed
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

pub(super) async fn models(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.config.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "athena",
            "backend": s.model.backend().map(|b| b.to_string()),
            "max_model_len": s.model.model().map(|m| m.args().max_position_embeddings),
        }],
    }))
}
