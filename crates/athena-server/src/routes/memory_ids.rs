//! The memory bank's routes on one memory (get, update, delete, history) and `delete_all`.
//! Each takes the caller's scope from the query string and answers 404 for a memory outside
//! it, exactly as for a memory that does not exist.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use athena::memory::{parse_id, Edit};

use super::common::{admit, parse};
use super::memories::{banks, encode, query};
use crate::error::{ApiError, ErrorBody};
use crate::memory_api::{self, DeleteQuery, MemoryUpdateRequest, ScopeQuery};
use crate::memory_filters::resolve_scope;
use crate::memory_responses::{
    MemoriesDeleted, MemoryDeleted, MemoryHistoryEntry, MemoryRecord, MemoryUpdated,
};
use crate::state::Shared;

/// The memory id in the path.
fn memory_id(path: Result<Path<String>, PathRejection>) -> Result<uuid::Uuid, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request("memory_id", e.body_text()))?;
    parse_id(&id).map_err(|e| ApiError::bad_request("memory_id", e.to_string()))
}

/// One memory of the caller's scope.
#[utoipa::path(get, path = "/v1/memories/{memory_id}/", tag = "memory",
    params(("memory_id" = String, Path, description = "The memory's id (a UUID)"), ScopeQuery),
    responses(
        (status = 200, description = "The memory", body = MemoryRecord),
        (status = 400, description = "No scope in the query, or an id that is not a UUID", body = ErrorBody),
        (status = 404, description = "No such memory in the caller's scope (`code: memory_not_found`), or no memory bank (`code: memory_disabled`)", body = ErrorBody),
        (status = 429, description = "The server holds as many requests as it may", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let id = memory_id(path)?;
    let scope = resolve_scope(query(q)?.scope()?.as_ref(), None)?;
    let ticket = admit(&s, "memory_id", 1, 0)?;
    let record = banks
        .run(move |bank| {
            let _ticket = ticket;
            bank.get(id, Some(&scope))
        })
        .await?;
    Ok(Json(MemoryRecord::from(&record)).into_response())
}

/// Replaces a memory's text (re-encoded), sets keys of its metadata, or both.
#[utoipa::path(put, path = "/v1/memories/{memory_id}/", tag = "memory",
    request_body = MemoryUpdateRequest,
    params(("memory_id" = String, Path, description = "The memory's id (a UUID)"), ScopeQuery),
    responses(
        (status = 200, description = "The memory as it is now", body = MemoryUpdated),
        (status = 400, description = "No scope in the query, an id that is not a UUID, or an invalid body", body = ErrorBody),
        (status = 404, description = "No such memory in the caller's scope (`code: memory_not_found`), or no memory bank (`code: memory_disabled`)", body = ErrorBody),
        (status = 429, description = "The server holds as many requests or tokens as it may", body = ErrorBody),
    ))]
pub(super) async fn update(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let id = memory_id(path)?;
    let q = query(q)?;
    let input = memory_api::parse_update(parse(&s, body)?)?;
    let scope = resolve_scope(q.scope()?.as_ref(), None)?;
    let (vectors, ticket) = match &input.text {
        Some(text) => encode(&s, &banks, ("text", "the text"), vec![text.clone()]).await?,
        None => (Vec::new(), admit(&s, "metadata", 1, 0)?),
    };
    let shared = banks.clone();
    let (event, record) = banks
        .run(move |bank| {
            let _ticket = ticket;
            let text = match (&input.text, vectors.first()) {
                (Some(t), Some(v)) => Some((shared.identity(), t.as_str(), v.as_slice())),
                _ => None,
            };
            let edit = Edit {
                text,
                metadata: input.metadata.as_ref(),
            };
            bank.edit(id, Some(&scope), &edit)
        })
        .await?;
    Ok(Json(MemoryUpdated {
        message: "Memory updated successfully!".into(),
        event: event.event.as_str().to_string(),
        record: MemoryRecord::from(&record),
    })
    .into_response())
}

/// Deletes one memory of the caller's scope (its history stays, ending in DELETE).
#[utoipa::path(delete, path = "/v1/memories/{memory_id}/", tag = "memory",
    params(("memory_id" = String, Path, description = "The memory's id (a UUID)"), DeleteQuery),
    responses(
        (status = 200, description = "Deleted", body = MemoryDeleted),
        (status = 400, description = "No scope in the query, or an id that is not a UUID", body = ErrorBody),
        (status = 404, description = "No such memory in the caller's scope (`code: memory_not_found`), or no memory bank (`code: memory_disabled`)", body = ErrorBody),
        (status = 429, description = "The server holds as many requests as it may", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let id = memory_id(path)?;
    let scope = resolve_scope(query(q)?.scope()?.as_ref(), None)?;
    let ticket = admit(&s, "memory_id", 1, 0)?;
    banks
        .run(move |bank| {
            let _ticket = ticket;
            bank.delete(id, Some(&scope))
        })
        .await?;
    Ok(Json(MemoryDeleted {
        message: "Memory deleted successfully!".into(),
        id: id.to_string(),
    })
    .into_response())
}

/// Deletes every memory of the caller's scope.
#[utoipa::path(delete, path = "/v1/memories/", tag = "memory", params(ScopeQuery),
    responses(
        (status = 200, description = "Deleted", body = MemoriesDeleted),
        (status = 400, description = "No scope in the query", body = ErrorBody),
        (status = 404, description = "No memory bank (`code: memory_disabled`)", body = ErrorBody),
        (status = 429, description = "The server holds as many requests as it may", body = ErrorBody),
    ))]
pub(super) async fn delete_all(
    State(s): State<Shared>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let scope = resolve_scope(query(q)?.scope()?.as_ref(), None)?;
    let ticket = admit(&s, "filters", 1, 0)?;
    let deleted = banks
        .run(move |bank| {
            let _ticket = ticket;
            bank.delete_all(&scope)
        })
        .await?;
    Ok(Json(MemoriesDeleted {
        message: "Memories deleted successfully!".into(),
        deleted,
    })
    .into_response())
}

/// A memory's changes, oldest first; a deleted memory's too, within the scope it had.
#[utoipa::path(get, path = "/v1/memories/{memory_id}/history/", tag = "memory",
    params(("memory_id" = String, Path, description = "The memory's id (a UUID)"), ScopeQuery),
    responses(
        (status = 200, description = "The memory's changes, oldest first", body = Vec<MemoryHistoryEntry>),
        (status = 400, description = "No scope in the query, or an id that is not a UUID", body = ErrorBody),
        (status = 404, description = "No such memory in the caller's scope (`code: memory_not_found`), or no memory bank (`code: memory_disabled`)", body = ErrorBody),
        (status = 429, description = "The server holds as many requests as it may", body = ErrorBody),
    ))]
pub(super) async fn history(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let banks = banks(&s)?;
    let id = memory_id(path)?;
    let scope = resolve_scope(query(q)?.scope()?.as_ref(), None)?;
    let ticket = admit(&s, "memory_id", 1, 0)?;
    let (rows, owner) = banks
        .run(move |bank| {
            let _ticket = ticket;
            let rows = bank.history(id, Some(&scope))?;
            let owner = bank.owner(id)?.unwrap_or(scope);
            Ok((rows, owner))
        })
        .await?;
    let entries: Vec<MemoryHistoryEntry> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| MemoryHistoryEntry::new(row, i, &owner))
        .collect();
    Ok(Json(entries).into_response())
}
