//! What every request passes before its handler: the `Host` check, the API key and, for a
//! POST or PUT, a JSON content type.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::Shared;
use crate::{auth, origin};

pub(super) async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let checked = origin::check_host(&s.config.allowed_hosts, s.bound, headers)
        .and_then(|()| auth::check(s.config.api_key.as_ref(), req.uri().path(), headers))
        .and_then(|()| origin::check_content_type(req.method(), headers));
    match checked {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
