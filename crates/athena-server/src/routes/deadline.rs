//! Time bounds inside a request: the body must arrive within its timeout, and a request other
//! than a generation must be answered within its own (generation keeps a deadline of its own,
//! in [`super::generation`]).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::ApiError;
use crate::state::Shared;

/// The routes that generate, whose time is bounded by the generation timeout instead.
const GENERATION_ROUTES: [&str; 2] = ["/v1/chat/completions", "/v1/completions"];

/// Reads the whole body within the body timeout and the size limit, then runs the request
/// (within the request timeout unless it generates). A body too slow is 408 and closes the
/// connection; a body too large, 413.
pub(super) async fn bounded(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let limits = &s.config.limits;
    let read = Limited::new(body, s.config.max_body_bytes).collect();
    let bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::too_large(s.config.max_body_bytes).into_response()
        }
        Ok(Err(e)) => {
            return ApiError::malformed(format!("reading the request body: {e}")).into_response()
        }
        Err(_) => {
            let mut res = ApiError::body_timeout(limits.body_read_timeout).into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
    };
    let generates = GENERATION_ROUTES.contains(&parts.uri.path());
    let req = Request::from_parts(parts, Body::from(bytes));
    if generates {
        return next.run(req).await;
    }
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::timeout("the request", limits.request_timeout).into_response(),
    }
}
