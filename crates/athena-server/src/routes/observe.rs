//! Every answer counted in the metrics, by route and status, with its latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::Shared;

pub(super) async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    // The route's pattern, never the raw path: unknown paths share one label.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    s.metrics
        .request(&route, res.status().as_u16(), start.elapsed());
    res
}
