//! The embedded store: one SQLite file in WAL mode (readers never wait for the writer), FTS5
//! for full-text ranking, and `BEGIN IMMEDIATE` write transactions, which take the file's
//! one write lock up front, so that concurrent adds from threads and processes serialize.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row};
use uuid::Uuid;

use super::error::{MemoryError, MemoryResult};
use super::store::{
    embedding_from_bytes, embedding_to_bytes, IntegrityReport, Store, StoreTx, VectorVisitor,
    DELETED_SCOPES_SCHEMA, GENERATIONS_SCHEMA, RECORD_COLUMNS, SCHEMA_VERSION,
};
use super::types::{parse_metadata, EmbeddingIdentity, HistoryRow, Metadata, Record, Scope};

/// `PRAGMA application_id` of an athena memory bank ("ATHM").
pub const APPLICATION_ID: i64 = 0x4154_484d;

/// How long a writer waits for another one's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

const SCHEMA: &str = "
CREATE TABLE athena_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE memories (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    text TEXT NOT NULL,
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    UNIQUE (user_id, agent_id, run_id, hash)
);
CREATE INDEX memories_agent ON memories (agent_id);
CREATE INDEX memories_run ON memories (run_id);
CREATE VIRTUAL TABLE memories_fts USING fts5 (
    text, content = 'memories', content_rowid = 'seq', tokenize = 'porter unicode61'
);
CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER memories_au AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
    INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TABLE history (
    seq INTEGER PRIMARY KEY,
    memory_id TEXT NOT NULL,
    event TEXT NOT NULL,
    old_memory TEXT,
    new_memory TEXT,
    fact TEXT,
    probabilities TEXT,
    head_hash TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX history_memory ON history (memory_id);
";

/// Keeps the scope of memory `?1` in `deleted_scopes` (run before deleting it).
const KEEP_DELETED_SCOPE: &str =
    "INSERT INTO deleted_scopes (memory_id, user_id, agent_id, run_id) \
    SELECT id, user_id, agent_id, run_id FROM memories WHERE id = ?1 \
    ON CONFLICT (memory_id) DO NOTHING";

/// A memory bank in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the bank at `path`, creating the file and the schema if there is none. A file
    /// that is not SQLite, or a SQLite database of something else, is refused untouched.
    pub fn open(path: &Path) -> MemoryResult<Self> {
        let corrupt = |e: rusqlite::Error| MemoryError::CorruptDb {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(corrupt)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        // Reading the schema is the first access to the file: a file that is not SQLite
        // fails here, before anything is written.
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => corrupt(e),
                _ => MemoryError::Sqlite(e),
            })?;
        let store_location = path.display().to_string();
        let foreign = |msg: String| MemoryError::ForeignDb {
            location: store_location.clone(),
            msg,
        };
        if tables.is_empty() {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let again: i64 =
                tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            if again == 0 {
                tx.execute_batch(SCHEMA)?;
                tx.execute(
                    "INSERT INTO athena_meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
                tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            }
            tx.commit()?;
        } else if !tables.iter().any(|t| t == "athena_meta") {
            return Err(foreign(format!(
                "a SQLite database of something else (tables: {}), not an athena memory bank",
                tables.join(", ")
            )));
        } else {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM athena_meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if version.as_deref() != Some(SCHEMA_VERSION.to_string().as_str()) {
            return Err(foreign(format!(
                "schema version {} where this build reads {SCHEMA_VERSION}",
                version.as_deref().unwrap_or("(none)")
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Banks written before the change counters existed gain their table here.
        conn.execute_batch(GENERATIONS_SCHEMA)?;
        conn.execute_batch(DELETED_SCOPES_SCHEMA)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }
}

impl Store for SqliteStore {
    fn write(
        &mut self,
        _scope: Option<&Scope>,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> MemoryResult<()>,
    ) -> MemoryResult<()> {
        // SQLite has one writer per file: every write transaction is serialized, which
        // covers every scope.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        f(&mut SqliteTx { conn: &tx })?;
        tx.commit()?;
        Ok(())
    }

    fn read(
        &mut self,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> MemoryResult<()>,
    ) -> MemoryResult<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        f(&mut SqliteTx { conn: &tx })?;
        tx.commit()?;
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

struct SqliteTx<'a> {
    conn: &'a Connection,
}

/// `user_id = ?n AND ...` for the ids a scope gives, numbered from `first`, and their values.
fn scope_filter(scope: &Scope, first: usize) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    for (name, id) in scope.parts() {
        if let Some(id) = id {
            clauses.push(format!("m.{name} = ?{}", first + values.len()));
            values.push(id.to_string());
        }
    }
    (clauses.join(" AND "), values)
}

fn record(row: &Row<'_>) -> rusqlite::Result<(String, Record)> {
    let id: String = row.get(0)?;
    let meta: String = row.get(6)?;
    let bytes: Vec<u8> = row.get(9)?;
    Ok((
        meta,
        Record {
            id: Uuid::parse_str(&id).unwrap_or(Uuid::nil()),
            scope: Scope::from_columns(row.get(1)?, row.get(2)?, row.get(3)?),
            text: row.get(4)?,
            hash: row.get(5)?,
            metadata: Metadata::new(),
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
            embedding: bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        },
    ))
}

fn finish(raw: (String, Record)) -> MemoryResult<Record> {
    let (meta, mut rec) = raw;
    if rec.id.is_nil() {
        return Err(MemoryError::Internal(
            "a stored memory id is not a UUID".into(),
        ));
    }
    rec.metadata = parse_metadata(&meta)
        .map_err(|e| MemoryError::Internal(format!("memory {}: stored {e}", rec.id)))?;
    Ok(rec)
}

fn history_row(row: &Row<'_>) -> rusqlite::Result<[Option<String>; 7]> {
    Ok([
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ])
}

impl StoreTx for SqliteTx<'_> {
    fn identity(&mut self) -> MemoryResult<Option<EmbeddingIdentity>> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM athena_meta WHERE key = 'identity'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        value.map(|v| super::store::parse_identity(&v)).transpose()
    }

    fn set_identity(&mut self, identity: &EmbeddingIdentity) -> MemoryResult<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO athena_meta (key, value) VALUES ('identity', ?1)",
            [super::store::identity_json(identity)],
        )?;
        Ok(())
    }

    fn get(&mut self, id: Uuid) -> MemoryResult<Option<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM memories WHERE id = ?1");
        self.conn
            .query_row(&sql, [id.to_string()], record)
            .optional()?
            .map(finish)
            .transpose()
    }

    fn find_hash(&mut self, scope: &Scope, hash: &str) -> MemoryResult<Option<Uuid>> {
        let [u, a, r] = scope.columns();
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM memories WHERE user_id = ?1 AND agent_id = ?2 AND run_id = ?3 \
                 AND hash = ?4",
                params![u, a, r, hash],
                |row| row.get(0),
            )
            .optional()?;
        id.map(|s| super::store::stored_id(&s)).transpose()
    }

    fn list(&mut self, scope: &Scope, offset: u64, limit: u64) -> MemoryResult<Vec<Record>> {
        let (filter, values) = scope_filter(scope, 1);
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM memories m WHERE {filter} ORDER BY m.seq \
             LIMIT {} OFFSET {}",
            limit.min(i64::MAX as u64),
            offset.min(i64::MAX as u64)
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), record)?;
        rows.map(|r| finish(r?)).collect()
    }

    fn count(&mut self, scope: &Scope) -> MemoryResult<u64> {
        let (filter, values) = scope_filter(scope, 1);
        let sql = format!("SELECT count(*) FROM memories m WHERE {filter}");
        let n: i64 = self
            .conn
            .query_row(&sql, params_from_iter(values), |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn for_each_vector(
        &mut self,
        scope: &Scope,
        visit: &mut VectorVisitor<'_>,
    ) -> MemoryResult<()> {
        let (filter, values) = scope_filter(scope, 1);
        let sql = format!("SELECT m.id, m.embedding FROM memories m WHERE {filter} ORDER BY m.seq");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            visit(super::store::stored_id(&id)?, embedding_from_bytes(bytes)?)?;
        }
        Ok(())
    }

    fn generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT n FROM scope_generations WHERE part = ?1 AND id = ?2")?;
        let mut out = Vec::new();
        for (part, id) in scope.parts() {
            if let Some(id) = id {
                let n: Option<i64> = stmt.query_row(params![part, id], |r| r.get(0)).optional()?;
                out.push(n.unwrap_or(0));
            }
        }
        Ok(out)
    }

    fn bump_generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO scope_generations (part, id, n) VALUES (?1, ?2, 1) \
             ON CONFLICT (part, id) DO UPDATE SET n = scope_generations.n + 1 RETURNING n",
        )?;
        let mut out = Vec::new();
        for (part, id) in scope.parts() {
            if let Some(id) = id {
                out.push(stmt.query_row(params![part, id], |r| r.get(0))?);
            }
        }
        Ok(out)
    }

    fn bump_all_generations(&mut self) -> MemoryResult<()> {
        self.conn
            .execute("UPDATE scope_generations SET n = n + 1", [])?;
        Ok(())
    }

    fn text_ranking(
        &mut self,
        scope: &Scope,
        terms: &[String],
        limit: usize,
    ) -> MemoryResult<Vec<Uuid>> {
        if terms.is_empty() || limit == 0 {
            return Ok(vec![]);
        }
        let query = terms
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        let (filter, mut values) = scope_filter(scope, 2);
        values.insert(0, query);
        let sql = format!(
            "SELECT m.id FROM memories_fts f JOIN memories m ON m.seq = f.rowid \
             WHERE memories_fts MATCH ?1 AND {filter} ORDER BY bm25(memories_fts), m.seq \
             LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let ids = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
        ids.map(|s| super::store::stored_id(&s?)).collect()
    }

    fn insert(&mut self, r: &Record) -> MemoryResult<()> {
        let [u, a, run] = r.scope.columns();
        self.conn.execute(
            "INSERT INTO memories (id, user_id, agent_id, run_id, text, hash, metadata, \
             created_at, updated_at, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                r.id.to_string(),
                u,
                a,
                run,
                r.text,
                r.hash,
                serde_json::Value::Object(r.metadata.clone()).to_string(),
                r.created_at,
                r.updated_at,
                embedding_to_bytes(&r.embedding)
            ],
        )?;
        Ok(())
    }

    fn update(
        &mut self,
        id: Uuid,
        text: &str,
        hash: &str,
        embedding: &[f32],
        at: i64,
    ) -> MemoryResult<bool> {
        let n = self.conn.execute(
            "UPDATE memories SET text = ?2, hash = ?3, embedding = ?4, updated_at = ?5 \
             WHERE id = ?1",
            params![
                id.to_string(),
                text,
                hash,
                embedding_to_bytes(embedding),
                at
            ],
        )?;
        Ok(n == 1)
    }

    fn set_metadata(&mut self, id: Uuid, metadata: &Metadata, at: i64) -> MemoryResult<bool> {
        let n = self.conn.execute(
            "UPDATE memories SET metadata = ?2, updated_at = ?3 WHERE id = ?1",
            params![
                id.to_string(),
                serde_json::Value::Object(metadata.clone()).to_string(),
                at
            ],
        )?;
        Ok(n == 1)
    }

    fn delete(&mut self, id: Uuid) -> MemoryResult<bool> {
        self.conn.execute(KEEP_DELETED_SCOPE, [id.to_string()])?;
        let n = self
            .conn
            .execute("DELETE FROM memories WHERE id = ?1", [id.to_string()])?;
        Ok(n == 1)
    }

    fn deleted_scope(&mut self, id: Uuid) -> MemoryResult<Option<Scope>> {
        Ok(self
            .conn
            .query_row(
                "SELECT user_id, agent_id, run_id FROM deleted_scopes WHERE memory_id = ?1",
                [id.to_string()],
                |r| Ok(Scope::from_columns(r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    fn add_history(&mut self, h: &HistoryRow) -> MemoryResult<()> {
        let probabilities = h
            .probabilities
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| MemoryError::Internal(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO history (memory_id, event, old_memory, new_memory, fact, probabilities, \
             head_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                h.memory_id.to_string(),
                h.event.as_str(),
                h.old_memory,
                h.new_memory,
                h.fact,
                probabilities,
                h.head_hash,
                h.created_at
            ],
        )?;
        Ok(())
    }

    fn history(&mut self, id: Uuid) -> MemoryResult<Vec<HistoryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT memory_id, event, old_memory, new_memory, fact, probabilities, head_hash, \
             created_at FROM history WHERE memory_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([id.to_string()], |r| Ok((history_row(r)?, r.get(7)?)))?;
        rows.map(|r| {
            let (cols, at) = r?;
            super::store::history_from_columns(cols, at)
        })
        .collect()
    }

    fn reset(&mut self) -> MemoryResult<()> {
        self.conn.execute_batch(
            "DELETE FROM memories; DELETE FROM history; DELETE FROM deleted_scopes; \
             DELETE FROM athena_meta WHERE key = 'identity'; \
             INSERT INTO memories_fts (memories_fts) VALUES ('rebuild');",
        )?;
        Ok(())
    }

    fn check(&mut self) -> MemoryResult<IntegrityReport> {
        let ids = |sql: &str| -> MemoryResult<Vec<Uuid>> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|s| super::store::stored_id(&s?)).collect()
        };
        let mut report = IntegrityReport {
            memories_without_history: ids(super::store::CHECK_WITHOUT_HISTORY)?,
            dangling_history: ids(super::store::CHECK_DANGLING)?,
            ..IntegrityReport::default()
        };
        report.memories = self
            .conn
            .query_row("SELECT count(*) FROM memories", [], |r| r.get::<_, i64>(0))?
            as u64;
        report.history_rows = self
            .conn
            .query_row("SELECT count(*) FROM history", [], |r| r.get::<_, i64>(0))?
            as u64;
        if let Some(identity) = self.identity()? {
            let width = (identity.hidden_size * 4) as i64;
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM memories WHERE length(embedding) != ?1")?;
            let rows = stmt.query_map([width], |r| r.get::<_, String>(0))?;
            report.bad_embeddings = rows
                .map(|s| super::store::stored_id(&s?))
                .collect::<MemoryResult<_>>()?;
        }
        let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
        let lines = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for line in lines {
            let line = line?;
            if line != "ok" {
                report.engine.push(line);
            }
        }
        let fts: rusqlite::Result<usize> = self.conn.execute(
            "INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)",
            [],
        );
        if let Err(e) = fts {
            report.engine.push(format!("full-text index: {e}"));
        }
        Ok(report)
    }
}
