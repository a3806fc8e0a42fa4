//! `/openapi.json`: the server's description, rendered once when the router is built.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;

/// The description as JSON text.
#[derive(Debug, Clone)]
pub(super) struct Document(pub(super) Arc<str>);

/// This description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of the server",
        body = Object, content_type = "application/json")))]
pub(super) async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response()
}
