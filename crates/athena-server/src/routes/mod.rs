//! The HTTP handlers: parse the body once into validated types, hand generation to the
//! scheduler, answer in OpenAI's shapes (and mem0's, for the memory bank).
mod common;
mod deadline;
mod doc;
mod encode;
mod generation;
mod guard;
mod memories;
mod memory_extract;
mod memory_ids;
mod observe;
mod ops;
mod stream;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::{Extension, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi;
use crate::state::Shared;
use doc::Document;

/// Every route, each with its description: a handler registers here or not at all, so
/// `/openapi.json` describes exactly the routes the router has.
fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(ops::health))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::models))
        .routes(routes!(generation::chat))
        .routes(routes!(generation::completions))
        .routes(routes!(encode::embeddings))
        .routes(routes!(encode::memory_actions))
        .routes(routes!(memories::ping))
        .routes(routes!(memories::add))
        .routes(routes!(memories::list))
        .routes(routes!(memories::search))
        .routes(routes!(
            memory_ids::get,
            memory_ids::update,
            memory_ids::delete
        ))
        .routes(routes!(memory_ids::delete_all))
        .routes(routes!(memory_ids::history))
        .routes(routes!(doc::openapi_json))
}

pub(crate) fn router(state: Shared) -> Router {
    let limit = state.config.max_body_bytes;
    let (router, paths) = routes().split_for_parts();
    let mut models = vec![state.config.model_id.as_str()];
    models.extend(state.config.aliases.iter().map(String::as_str));
    let json = openapi::render(&openapi::complete(paths), &models)
        .unwrap_or_else(|e| format!(r#"{{"error": "the description did not render: {e}"}}"#));
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                ..ApiError::not_found("method not allowed on this route")
            }
        })
        .layer(Extension(Document(Arc::from(json))))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline::bounded,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}
