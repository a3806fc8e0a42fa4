//! The contract between the bank and a database: [`Store`] opens transactions, and
//! [`StoreTx`] holds every read and write, so that each backend writes each query once and
//! the bank composes them inside one transaction.

use uuid::Uuid;

use super::error::MemoryResult;
use super::types::{EmbeddingIdentity, HistoryRow, Metadata, Record, Scope};

/// The schema version a bank of this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The `memories` columns a record is read from, in the order both stores decode them.
pub(super) const RECORD_COLUMNS: &str =
    "id, user_id, agent_id, run_id, text, hash, metadata, created_at, updated_at, embedding";

/// The table of change counters, one per scope id (`part` is `user_id`, `agent_id` or
/// `run_id`). A write that changes a memory adds one to the counter of each id of its scope in
/// the same transaction, so a reader that finds the counters of a scope unchanged knows that
/// no memory of the scope changed. The same statement serves both stores.
pub(super) const GENERATIONS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS scope_generations (
    part TEXT NOT NULL, id TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (part, id))";

/// The scopes of deleted memories, so that the history of a memory that is gone can still be
/// checked against a caller's scope. Each store's `delete` writes the row before it removes
/// the memory; banks written before this table existed gain it when opened (memories they
/// deleted earlier have no row). The same statement serves both stores.
pub(super) const DELETED_SCOPES_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS deleted_scopes (
    memory_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, agent_id TEXT NOT NULL,
    run_id TEXT NOT NULL)";

/// Visits one memory's id and embedding; an error stops the visit.
pub type VectorVisitor<'a> = dyn FnMut(Uuid, Vec<f32>) -> MemoryResult<()> + 'a;

/// What an integrity check found; empty lists mean a sound bank.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct IntegrityReport {
    /// How many memories the bank holds.
    pub memories: u64,
    /// How many history rows it holds.
    pub history_rows: u64,
    /// Memories with no ADD in their history.
    pub memories_without_history: Vec<Uuid>,
    /// History rows of memories that neither exist nor were deleted.
    pub dangling_history: Vec<Uuid>,
    /// Memories whose embedding is not of the bank's width.
    pub bad_embeddings: Vec<Uuid>,
    /// What the database engine's own check reported, when it was not "ok".
    pub engine: Vec<String>,
}

impl IntegrityReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.memories_without_history.is_empty()
            && self.dangling_history.is_empty()
            && self.bad_embeddings.is_empty()
            && self.engine.is_empty()
    }
}

/// Reads and writes inside one transaction.
pub trait StoreTx {
    /// The identity of the bank's embeddings, `None` while it holds none.
    fn identity(&mut self) -> MemoryResult<Option<EmbeddingIdentity>>;
    /// Records the identity of the bank's embeddings.
    fn set_identity(&mut self, identity: &EmbeddingIdentity) -> MemoryResult<()>;
    /// One memory by id.
    fn get(&mut self, id: Uuid) -> MemoryResult<Option<Record>>;
    /// The memory with this exact scope and content hash.
    fn find_hash(&mut self, scope: &Scope, hash: &str) -> MemoryResult<Option<Uuid>>;
    /// Memories matching the scope filter, oldest first, `limit` from `offset`.
    fn list(&mut self, scope: &Scope, offset: u64, limit: u64) -> MemoryResult<Vec<Record>>;
    /// How many memories match the scope filter.
    fn count(&mut self, scope: &Scope) -> MemoryResult<u64>;
    /// Calls `visit` with the id and embedding of every memory matching the scope filter.
    fn for_each_vector(&mut self, scope: &Scope, visit: &mut VectorVisitor<'_>)
        -> MemoryResult<()>;
    /// The change counters of the ids the scope gives, in `Scope::parts` order (0 for an id
    /// never written).
    fn generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>>;
    /// Adds one to the change counter of each id the scope gives; returns the new values in
    /// `Scope::parts` order.
    fn bump_generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>>;
    /// Adds one to every change counter.
    fn bump_all_generations(&mut self) -> MemoryResult<()>;
    /// Memories matching the scope filter that contain any of `terms`, best full-text match
    /// first, at most `limit`.
    fn text_ranking(
        &mut self,
        scope: &Scope,
        terms: &[String],
        limit: usize,
    ) -> MemoryResult<Vec<Uuid>>;
    /// Adds a memory.
    fn insert(&mut self, record: &Record) -> MemoryResult<()>;
    /// Replaces a memory's text, hash and embedding; false if there is no such memory.
    fn update(
        &mut self,
        id: Uuid,
        text: &str,
        hash: &str,
        embedding: &[f32],
        at: i64,
    ) -> MemoryResult<bool>;
    /// Replaces a memory's metadata; false if there is no such memory.
    fn set_metadata(&mut self, id: Uuid, metadata: &Metadata, at: i64) -> MemoryResult<bool>;
    /// Removes a memory, keeping its scope in the deleted scopes; false if there is no such
    /// memory.
    fn delete(&mut self, id: Uuid) -> MemoryResult<bool>;
    /// The scope a deleted memory had; `None` for a memory that exists, was never seen, or
    /// was deleted before the bank kept deleted scopes.
    fn deleted_scope(&mut self, id: Uuid) -> MemoryResult<Option<Scope>>;
    /// Appends a history row.
    fn add_history(&mut self, row: &HistoryRow) -> MemoryResult<()>;
    /// A memory's history, oldest first.
    fn history(&mut self, id: Uuid) -> MemoryResult<Vec<HistoryRow>>;
    /// Removes every memory, history row and deleted scope (the identity too).
    fn reset(&mut self) -> MemoryResult<()>;
    /// Checks the bank's invariants.
    fn check(&mut self) -> MemoryResult<IntegrityReport>;
}

/// A database that holds a memory bank.
pub trait Store: Send {
    /// Runs `f` in a write transaction that no other write to an overlapping scope can
    /// interleave with (`None`: the whole bank), and commits if it returns `Ok`; an error
    /// rolls everything back.
    fn write(
        &mut self,
        scope: Option<&Scope>,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> MemoryResult<()>,
    ) -> MemoryResult<()>;
    /// Runs `f` in a read-only transaction (one consistent snapshot).
    fn read(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> MemoryResult<()>)
        -> MemoryResult<()>;
    /// Where the bank lives, for messages (a path, or a URL without its password).
    fn location(&self) -> String;
}

/// Reads an embedding stored as little-endian f32 bytes.
pub(crate) fn embedding_from_bytes(bytes: &[u8]) -> MemoryResult<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(super::error::MemoryError::Internal(format!(
            "an embedding of {} bytes is not a whole number of f32",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// An embedding as little-endian f32 bytes.
pub(crate) fn embedding_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Memories with no ADD in their history, or with a DELETE although they still exist.
pub(crate) const CHECK_WITHOUT_HISTORY: &str = "SELECT m.id FROM memories m \
    WHERE NOT EXISTS (SELECT 1 FROM history h WHERE h.memory_id = m.id AND h.event = 'ADD') \
    OR EXISTS (SELECT 1 FROM history h WHERE h.memory_id = m.id AND h.event = 'DELETE')";

/// Memories named by history rows that neither exist nor were deleted.
pub(crate) const CHECK_DANGLING: &str = "SELECT DISTINCT h.memory_id FROM history h \
    WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = h.memory_id) \
    AND NOT EXISTS (SELECT 1 FROM history d WHERE d.memory_id = h.memory_id \
    AND d.event = 'DELETE')";

/// A stored id, which must be a UUID.
pub(crate) fn stored_id(s: &str) -> MemoryResult<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| super::error::MemoryError::Internal(format!("stored id `{s}` is not a UUID")))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IdentityJson {
    model: String,
    hidden_size: usize,
    pooling: String,
}

/// The stored form of an identity.
pub(crate) fn identity_json(identity: &EmbeddingIdentity) -> String {
    serde_json::json!({
        "model": identity.model,
        "hidden_size": identity.hidden_size,
        "pooling": identity.pooling,
    })
    .to_string()
}

/// Reads the stored form of an identity.
pub(crate) fn parse_identity(text: &str) -> MemoryResult<EmbeddingIdentity> {
    let j: IdentityJson = serde_json::from_str(text).map_err(|e| {
        super::error::MemoryError::Internal(format!("stored embedding identity: {e}"))
    })?;
    Ok(EmbeddingIdentity {
        model: j.model,
        hidden_size: j.hidden_size,
        pooling: j.pooling,
    })
}

/// A history row from its stored columns: memory id, event, old text, new text, fact,
/// probabilities (JSON), head hash; and the timestamp.
pub(crate) fn history_from_columns(
    cols: [Option<String>; 7],
    created_at: i64,
) -> MemoryResult<HistoryRow> {
    let [memory_id, event, old_memory, new_memory, fact, probabilities, head_hash] = cols;
    let internal = |m: String| super::error::MemoryError::Internal(m);
    Ok(HistoryRow {
        memory_id: stored_id(&memory_id.ok_or_else(|| internal("history row without id".into()))?)?,
        event: super::types::EventKind::parse(
            &event.ok_or_else(|| internal("history row without event".into()))?,
        )?,
        old_memory,
        new_memory,
        fact,
        probabilities: probabilities
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| internal(format!("stored probabilities: {e}")))?,
        head_hash,
        created_at,
    })
}
