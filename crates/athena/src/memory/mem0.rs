//! The memory bank's answers in mem0's shapes (the `mem0ai` library's dicts): what
//! `athena memory ... --json` prints and what the Python binding's `MemoryBank` returns.
//! Each function builds one JSON value from the bank's records, events, hits or history rows.

use serde_json::{json, Value};
use uuid::Uuid;

use super::types::{rfc3339, Event, EventKind, HistoryRow, Record, SearchHit};

/// A stored memory: `{"id", "memory", "hash", "metadata", "created_at", "updated_at",
/// "user_id", "agent_id", "run_id"}`.
pub fn record(r: &Record) -> Value {
    json!({
        "id": r.id.to_string(),
        "memory": r.text,
        "hash": r.hash,
        "metadata": r.metadata,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "user_id": r.scope.user_id,
        "agent_id": r.scope.agent_id,
        "run_id": r.scope.run_id,
    })
}

/// What an add did with one fact: `{"id", "event", "memory", "previous_memory"}`.
pub fn event(e: &Event) -> Value {
    json!({
        "id": e.id.map(|id| id.to_string()),
        "event": e.event.as_str(),
        "memory": e.memory,
        "previous_memory": e.previous_memory,
    })
}

/// The events of an add: `{"results": [event, ...]}`.
pub fn add_results(events: &[Event]) -> Value {
    json!({ "results": events.iter().map(event).collect::<Vec<_>>() })
}

/// The hits of a search, best first: `{"results": [{"id", "memory", "score", "metadata"}]}`.
pub fn search_results(hits: &[SearchHit]) -> Value {
    let results: Vec<_> = hits
        .iter()
        .map(|h| {
            json!({
                "id": h.record.id.to_string(),
                "memory": h.record.text,
                "score": h.score,
                "metadata": h.record.metadata,
            })
        })
        .collect();
    json!({ "results": results })
}

/// A scope's memories: `{"results": [record, ...]}`.
pub fn list_results(records: &[Record]) -> Value {
    json!({ "results": records.iter().map(record).collect::<Vec<_>>() })
}

/// A memory's history, oldest first: `{"results": [{"memory_id", "event", "old_memory",
/// "new_memory", "created_at"}]}`.
pub fn history_results(rows: &[HistoryRow]) -> Value {
    let results: Vec<_> = rows
        .iter()
        .map(|h| {
            json!({
                "memory_id": h.memory_id.to_string(),
                "event": h.event.as_str(),
                "old_memory": h.old_memory,
                "new_memory": h.new_memory,
                "created_at": rfc3339(h.created_at),
            })
        })
        .collect();
    json!({ "results": results })
}

/// The answer to an update of memory `id`.
pub fn updated(id: Uuid, event: EventKind) -> Value {
    json!({ "message": "Memory updated successfully!", "id": id.to_string(),
        "event": event.as_str() })
}

/// The answer to a delete of memory `id`.
pub fn deleted(id: Uuid) -> Value {
    json!({ "message": "Memory deleted successfully!", "id": id.to_string() })
}

/// The answer to a delete of a scope's `count` memories.
pub fn deleted_all(count: usize) -> Value {
    json!({ "message": "Memories deleted successfully!", "deleted": count })
}

/// The answer to a reset.
pub fn reset() -> Value {
    json!({ "message": "Memories reset successfully!" })
}
