//! The memory bank's routes that the official mem0 client calls to construct itself, add,
//! list and search (the routes on one memory are in `memory_ids.rs`), and what both share:
//! the bank, the query's scope, and encoding through the served model. Every route works
//! within one scope (docs/MEMORY_API.md).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::common::{admit, context, model_work, parse, tokenize};
use super::memory_extract;
use crate::banks::MemoryBanks;
use crate::error::{ApiError, ErrorBody};
use crate::memory_api::{
    self, AddInput, MemoryAddRequest, MemoryListRequest, MemorySearchRequest, PageQuery, ScopeQuery,
};
use crate::memory_filters::resolve_scope;
use crate::memory_responses::{
    MemoryAddResponse, MemoryEvent, MemoryHit, MemoryPage, MemoryRecord, MemorySearchResponse, Ping,
};
use crate::state::{AppState, Shared, Ticket};

/// The server's bank; 404 `memory_disabled` when it was started without one.
pub(super) fn banks(s: &AppState) -> Result<Arc<MemoryBanks>, ApiError> {
    s.config.memory.clone().ok_or_else(|| ApiError {
        code: Some("memory_disabled"),
        ..ApiError::not_found(
            "this server has no memory bank: start it with --memory-db PATH (a SQLite file) or \
             --memory-db postgres://...",
        )
    })
}

/// The query string as `T`; 400 naming what is wrong with it.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("query", format!("the query string: {}", e.body_text())))
}

/// Encodes `texts` with the served model as the encode routes do: each text checked against
/// the bank's limit and the context, tokenized on the tokenizing pool, admitted by its tokens,
/// encoded on the blocking pool. The ticket holds the request's place until it is dropped.
/// Errors name the field `param` and each text as `label` (numbered from 1 when several).
pub(super) async fn encode(
    s: &Shared,
    banks: &MemoryBanks,
    (param, label): (&str, &str),
    texts: Vec<String>,
) -> Result<(Vec<Vec<f32>>, Ticket), ApiError> {
    let (ctx, _) = context(s)?;
    let name = |i: usize| {
        if texts.len() == 1 {
            label.to_string()
        } else {
            format!("{label} {}", i + 1)
        }
    };
    for (i, t) in texts.iter().enumerate() {
        banks
            .config()
            .check_text(&name(i), t)
            .map_err(|e| ApiError::bad_request(param, e.to_string()))?;
        s.tokenizing.check_len(param, &name(i), t.len())?;
    }
    let names: Vec<String> = (0..texts.len()).map(name).collect();
    let batch = tokenize(s, texts).await?;
    for (ids, what) in batch.iter().zip(&names) {
        let n = ids.len();
        if n == 0 || n > ctx {
            return Err(ApiError::bad_request(
                param,
                format!("{what} has {n} tokens; it needs 1 to {ctx}"),
            ));
        }
    }
    let cost = batch.iter().map(Vec::len).sum();
    let ticket = admit(s, param, 1, cost)?;
    // The caller holds the ticket on through the bank's work that follows.
    let vectors = model_work(s, (), "embedding", move |model, cancel| {
        model.encode_ids_until(&batch, cancel)
    })
    .await?;
    Ok((vectors, ticket))
}

/// What the mem0 client asks when it is constructed.
#[utoipa::path(get, path = "/v1/ping/", tag = "memory", params(ScopeQuery),
    responses(
        (status = 200, description = "The bank is served", body = Ping),
        (status = 400, description = "A malformed scope in the query", body = ErrorBody),
        (status = 404, description = "The server has no memory bank (`code: memory_disabled`)", body = ErrorBody),
    ))]
pub(super) async fn ping(
    State(s): State<Shared>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    banks(&s)?;
    query(q)?.scope()?;
    Ok(Json(Ping {
        status: "ok".into(),
        org_id: "athena".into(),
        project_id: "athena".into(),
        user_email: None,
    })
    .into_response())
}

/// The facts an add stores. Without inference, the text of each user message; with it (mem0's
/// default), those the language model extracts from the whole conversation under a JSON schema
/// (`memory_extract`).
async fn facts_of(
    s: &Shared,
    banks: &MemoryBanks,
    input: &AddInput,
) -> Result<Vec<String>, ApiError> {
    if input.infer {
        return memory_extract::extract_facts(s, banks.extraction_prompt(), &input.messages).await;
    }
    input.user_facts()
}

/// Adds the user messages of a conversation as facts of the scope.
#[utoipa::path(post, path = "/v3/memories/add/", tag = "memory",
    request_body = MemoryAddRequest, params(ScopeQuery),
    responses(
        (status = 200, description = "What happened to each user message's fact", body = MemoryAddResponse),
        (status = 404, description = "The server has no memory bank (`code: memory_disabled`)", body = ErrorBody),
        (status = 409, description = "The action head's target changed under a concurrent write (`code: target_gone`); retry", body = ErrorBody),
    ))]
pub(super) async fn add(
    State(s): State<Shared>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let q = query(q)?;
    let input = memory_api::parse_add(parse(&s, body)?)?;
    let scope = resolve_scope(q.scope()?.as_ref(), input.scope.as_ref())?;
    let use_head = banks.wants_head(&s.model, input.use_head)?;
    let facts = facts_of(&s, &banks, &input).await?;
    if facts.is_empty() {
        // Extraction found nothing worth remembering: nothing happens, as in mem0.
        return Ok(Json(MemoryAddResponse { results: vec![] }).into_response());
    }
    let (vectors, ticket) = encode(&s, &banks, ("messages", "user message"), facts.clone()).await?;
    let model = s.model.clone();
    let shared = banks.clone();
    let events = banks
        .run(move |bank| {
            let _ticket = ticket;
            let decider = if use_head {
                let d = shared.decider(&model).ok_or_else(|| {
                    athena::memory::MemoryError::Internal("the action head went away".into())
                })?;
                Some(d)
            } else {
                None
            };
            let facts: Vec<&str> = facts.iter().map(String::as_str).collect();
            bank.add_embedded(
                shared.identity(),
                &facts,
                &vectors,
                &scope,
                &input.metadata,
                decider,
            )
        })
        .await?;
    Ok(Json(MemoryAddResponse {
        results: events.iter().map(MemoryEvent::from).collect(),
    })
    .into_response())
}

/// One page of the scope's memories, oldest first (mem0's `get_all`).
#[utoipa::path(post, path = "/v3/memories/", tag = "memory",
    request_body = MemoryListRequest, params(PageQuery),
    responses(
        (status = 200, description = "A page of the scope's memories", body = MemoryPage),
        (status = 404, description = "The server has no memory bank (`code: memory_disabled`)", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(s): State<Shared>,
    q: Result<Query<PageQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let q = query(q)?;
    let in_body = memory_api::parse_list(parse(&s, body)?)?;
    let scope = resolve_scope(q.scope()?.as_ref(), in_body.as_ref())?;
    let (page, size) = q.page()?;
    let ticket = admit(&s, "filters", 1, 0)?;
    let (records, count) = banks
        .run(move |bank| {
            let _ticket = ticket;
            bank.get_page(&scope, (page - 1) * size, size)
        })
        .await?;
    let link = |p: u64| format!("/v3/memories/?page={p}&page_size={size}");
    Ok(Json(MemoryPage {
        count,
        next: (page.saturating_mul(size) < count).then(|| link(page + 1)),
        previous: (page > 1).then(|| link(page - 1)),
        results: records.iter().map(MemoryRecord::from).collect(),
    })
    .into_response())
}

/// The scope's memories best matching a query: cosine similarity fused with full-text ranking.
#[utoipa::path(post, path = "/v3/memories/search/", tag = "memory",
    request_body = MemorySearchRequest, params(ScopeQuery),
    responses(
        (status = 200, description = "The best memories first", body = MemorySearchResponse),
        (status = 404, description = "The server has no memory bank (`code: memory_disabled`)", body = ErrorBody),
    ))]
pub(super) async fn search(
    State(s): State<Shared>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let q = query(q)?;
    let input = memory_api::parse_search(parse(&s, body)?)?;
    let mut options = input.options;
    options.scope = resolve_scope(q.scope()?.as_ref(), input.scope.as_ref())?;
    let (vectors, ticket) = encode(
        &s,
        &banks,
        ("query", "the query"),
        vec![input.query.clone()],
    )
    .await?;
    let shared = banks.clone();
    let hits = banks
        .run(move |bank| {
            let _ticket = ticket;
            let vector = vectors.first().map(Vec::as_slice).unwrap_or_default();
            bank.search_embedded(shared.identity(), &input.query, vector, &options)
        })
        .await?;
    Ok(Json(MemorySearchResponse {
        results: hits.iter().map(MemoryHit::from).collect(),
    })
    .into_response())
}
