//! The memory routes' answers, in the shapes the official mem0 client (`mem0ai` 2.2.1) reads,
//! filled from the bank's records, events, hits and history rows. Where athena has no
//! counterpart of a mem0 field, the field is there with a fixed value that says so
//! (docs/MEMORY_API.md lists each).

use std::collections::BTreeMap;

use athena::memory::{rfc3339, Event, EventKind, HistoryRow, Metadata, Record, Scope, SearchHit};
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /v1/ping/`: what the mem0 client reads when it is constructed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ping {
    /// `ok`.
    pub status: String,
    /// Always `athena` (the client needs one to construct itself).
    pub org_id: String,
    /// Always `athena`.
    pub project_id: String,
    /// Always `null`: athena knows no accounts.
    pub user_email: Option<String>,
}

/// A stored memory, as mem0 answers one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryRecord {
    /// Its id (a UUID v7).
    pub id: String,
    /// Its text.
    pub memory: String,
    /// Hex SHA-256 of the text.
    pub hash: String,
    /// The metadata stored with it.
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Always empty: athena does not categorize memories.
    pub categories: Vec<String>,
    /// Its user.
    pub user_id: Option<String>,
    /// Its agent.
    pub agent_id: Option<String>,
    /// Its run.
    pub run_id: Option<String>,
    /// Always `null`: athena has no apps.
    pub app_id: Option<String>,
    /// When it was added (RFC 3339, UTC, microseconds).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Always `null`: athena's memories never expire.
    pub expiration_date: Option<String>,
}

impl From<&Record> for MemoryRecord {
    fn from(r: &Record) -> Self {
        MemoryRecord {
            id: r.id.to_string(),
            memory: r.text.clone(),
            hash: r.hash.clone(),
            metadata: r.metadata.clone(),
            categories: Vec::new(),
            user_id: r.scope.user_id.clone(),
            agent_id: r.scope.agent_id.clone(),
            run_id: r.scope.run_id.clone(),
            app_id: None,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            expiration_date: None,
        }
    }
}

/// What an add did with one fact.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryEvent {
    /// The memory added, updated or deleted; for NONE, the memory that already holds the
    /// fact (`null` when the head chose NONE).
    pub id: Option<String>,
    /// `ADD`, `UPDATE`, `DELETE` or `NONE`.
    #[schema(pattern = "^(ADD|UPDATE|DELETE|NONE)$")]
    pub event: String,
    /// The memory's text now (for DELETE, the text removed).
    pub memory: String,
    /// The text before an UPDATE; `null` otherwise.
    pub previous_memory: Option<String>,
}

impl From<&Event> for MemoryEvent {
    fn from(e: &Event) -> Self {
        MemoryEvent {
            id: e.id.map(|id| id.to_string()),
            event: e.event.as_str().to_string(),
            memory: e.memory.clone(),
            previous_memory: e.previous_memory.clone(),
        }
    }
}

/// `POST /v3/memories/add/`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryAddResponse {
    /// One event per user message, in order.
    pub results: Vec<MemoryEvent>,
}

/// `POST /v3/memories/`: one page of a scope's memories, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryPage {
    /// How many memories the scope holds in all.
    pub count: u64,
    /// The next page's path and query, if there is one (POST it the same body).
    pub next: Option<String>,
    /// The previous page's, if there is one.
    pub previous: Option<String>,
    /// This page.
    pub results: Vec<MemoryRecord>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryHit {
    /// The memory.
    #[serde(flatten)]
    pub record: MemoryRecord,
    /// The fused retrieval score the results are ordered by (higher is better).
    pub score: f32,
    /// The cosine similarity of the memory with the query (what `threshold` compares).
    pub similarity: f32,
}

impl From<&SearchHit> for MemoryHit {
    fn from(h: &SearchHit) -> Self {
        MemoryHit {
            record: (&h.record).into(),
            score: h.score,
            similarity: h.similarity,
        }
    }
}

/// `POST /v3/memories/search/`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemorySearchResponse {
    /// The best memories first.
    pub results: Vec<MemoryHit>,
}

/// `PUT /v1/memories/{memory_id}/`: the memory as it is now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryUpdated {
    /// `Memory updated successfully!`
    pub message: String,
    /// `UPDATE`, or `NONE` when nothing changed.
    #[schema(pattern = "^(UPDATE|NONE)$")]
    pub event: String,
    /// The memory.
    #[serde(flatten)]
    pub record: MemoryRecord,
}

/// `DELETE /v1/memories/{memory_id}/`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryDeleted {
    /// `Memory deleted successfully!`
    pub message: String,
    /// The memory's id.
    pub id: String,
}

/// `DELETE /v1/memories/`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoriesDeleted {
    /// `Memories deleted successfully!`
    pub message: String,
    /// How many memories went.
    pub deleted: usize,
}

/// One change of a memory, as mem0's history lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryHistoryEntry {
    /// The change's id (a UUID derived from the memory's id and the change's place).
    pub id: String,
    /// The memory's id.
    pub memory_id: String,
    /// `ADD`, `UPDATE` or `DELETE`.
    #[schema(pattern = "^(ADD|UPDATE|DELETE)$")]
    pub event: String,
    /// The text before (UPDATE, DELETE).
    pub old_memory: Option<String>,
    /// The text after (ADD, UPDATE).
    pub new_memory: Option<String>,
    /// When (RFC 3339).
    pub created_at: String,
    /// The same as `created_at`: a change is never changed.
    pub updated_at: String,
    /// Whether this change deleted the memory.
    pub is_deleted: bool,
    /// The memory's user.
    pub user_id: Option<String>,
    /// The memory's agent.
    pub agent_id: Option<String>,
    /// The memory's run.
    pub run_id: Option<String>,
    /// Always `null`: athena does not store speakers.
    pub actor_id: Option<String>,
    /// Always `null`: athena does not store roles.
    pub role: Option<String>,
    /// athena's own: the fact an add was given, when an add made the change.
    pub fact: Option<String>,
    /// athena's own: the action head's probability of each operation, when it decided.
    pub probabilities: Option<BTreeMap<String, f32>>,
    /// athena's own: hex SHA-256 of the head's weights, when it decided.
    pub head_hash: Option<String>,
}

impl MemoryHistoryEntry {
    /// The `index`th change (from 0) of a memory in `scope`.
    pub fn new(row: &HistoryRow, index: usize, scope: &Scope) -> Self {
        let at = rfc3339(row.created_at);
        MemoryHistoryEntry {
            id: change_id(row.memory_id, index),
            memory_id: row.memory_id.to_string(),
            event: row.event.as_str().to_string(),
            old_memory: row.old_memory.clone(),
            new_memory: row.new_memory.clone(),
            created_at: at.clone(),
            updated_at: at,
            is_deleted: row.event == EventKind::Delete,
            user_id: scope.user_id.clone(),
            agent_id: scope.agent_id.clone(),
            run_id: scope.run_id.clone(),
            actor_id: None,
            role: None,
            fact: row.fact.clone(),
            probabilities: row.probabilities.clone(),
            head_hash: row.head_hash.clone(),
        }
    }
}

/// A stable UUID (version 8) for the `index`th change of `memory`.
fn change_id(memory: uuid::Uuid, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(memory.as_bytes());
    h.update((index as u64).to_le_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_are_stable_uuids() {
        let m = uuid::Uuid::now_v7();
        assert_eq!(change_id(m, 1), change_id(m, 1));
        assert_ne!(change_id(m, 0), change_id(m, 1));
        let id = uuid::Uuid::parse_str(&change_id(m, 0)).unwrap();
        assert_eq!(id.get_version_num(), 8);
    }
}
