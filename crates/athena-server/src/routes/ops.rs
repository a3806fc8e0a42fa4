//! The operator's routes: health, metrics, the model list.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ErrorBody;
use crate::responses::{Health, HealthStatus, ModelCard, ModelList, ObjectKind};
use crate::state::Shared;

/// `/health`'s answer: 200 while serving, 503 while draining (or past the connection limit).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum HealthAnswer {
    /// The server's state.
    Health(Health),
    /// The connection limit's refusal.
    #[allow(dead_code)]
    Error(ErrorBody),
}

/// The server's state; the one route that asks for no API key.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Serving", body = Health),
        (status = 503, description = "Shutting down, or past the connection limit", body = HealthAnswer),
    ))]
pub(super) async fn health(State(s): State<Shared>) -> Response {
    let stats = s.engine.stats().snapshot();
    let held = s.admission.held();
    let status = if s.draining.load(Ordering::SeqCst) {
        HealthStatus::Draining
    } else {
        HealthStatus::Ok
    };
    let code = match status {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Draining => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = Health {
        status,
        backend: s.model.backend().map(|b| b.to_string()),
        model: s.config.model_id.clone(),
        running: stats.running,
        waiting: stats.waiting,
        requests_in_server: held.sequences,
        tokens_in_server: held.tokens,
        token_budget: s.admission.token_budget(),
        max_concurrency: s.config.max_concurrency,
        queue: s.config.queue,
        uptime_s: s.started.elapsed().as_secs(),
    };
    (code, Json(HealthAnswer::Health(body))).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format",
        body = String, content_type = "text/plain; version=0.0.4")))]
pub(super) async fn metrics(State(s): State<Shared>) -> Response {
    let st = s.engine.stats().snapshot();
    let held = s.admission.held();
    let mut text = s.metrics.render();
    text += &format!(
        "# TYPE athena_running_sequences gauge\nathena_running_sequences {}\n\
         # TYPE athena_waiting_sequences gauge\nathena_waiting_sequences {}\n\
         # TYPE athena_decode_steps_total counter\nathena_decode_steps_total {}\n\
         # TYPE athena_generated_tokens_total counter\nathena_generated_tokens_total {}\n\
         # TYPE athena_sequences_finished_total counter\nathena_sequences_finished_total {}\n\
         # TYPE athena_sequences_cancelled_total counter\nathena_sequences_cancelled_total {}\n\
         # TYPE athena_sequences_failed_total counter\nathena_sequences_failed_total {}\n\
         # TYPE athena_admitted_tokens gauge\nathena_admitted_tokens {}\n\
         # TYPE athena_admitted_requests gauge\nathena_admitted_requests {}\n",
        st.running,
        st.waiting,
        st.steps,
        st.tokens,
        st.finished,
        st.cancelled,
        st.failed,
        held.tokens,
        held.sequences
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// The model served.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "The one model served", body = ModelList)))]
pub(super) async fn models(State(s): State<Shared>) -> Json<ModelList> {
    Json(ModelList {
        object: ObjectKind::List,
        data: vec![ModelCard {
            id: s.config.model_id.clone(),
            object: ObjectKind::Model,
            created: 0,
            owned_by: "athena".into(),
            backend: s.model.backend().map(|b| b.to_string()),
            max_model_len: s.model.model().map(|m| m.args().max_position_embeddings),
        }],
    })
}
