//! The shared store: PostgreSQL, for several athena processes over one memory. Full-text
//! ranking is PostgreSQL's own (`tsvector`, `ts_rank`); every write transaction takes
//! transaction-scoped advisory locks on the ids of its scope, so that writes to overlapping
//! scopes serialize while writes to disjoint ones run side by side.

use postgres::{Client, NoTls, Row, Transaction};
use uuid::Uuid;

use super::error::{MemoryError, MemoryResult};
use super::store::{
    embedding_from_bytes, embedding_to_bytes, history_from_columns, identity_json, parse_identity,
    stored_id, IntegrityReport, Store, StoreTx, VectorVisitor, CHECK_DANGLING,
    CHECK_WITHOUT_HISTORY, DELETED_SCOPES_SCHEMA, GENERATIONS_SCHEMA, RECORD_COLUMNS,
    SCHEMA_VERSION,
};
use super::types::{parse_metadata, EmbeddingIdentity, HistoryRow, Metadata, Record, Scope};

/// The advisory-lock class of the bank's locks (the first key of the two-key form).
const LOCK_CLASS: i32 = 0x4154;
/// The second key of the lock every write takes: shared by scoped writes, exclusive by
/// whole-bank ones (reset, check).
const GLOBAL_LOCK: i32 = 0;

const SCHEMA: &str = "
CREATE TABLE athena_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE memories (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    text TEXT NOT NULL,
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    embedding BYTEA NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (user_id, agent_id, run_id, hash)
);
CREATE INDEX memories_user ON memories (user_id);
CREATE INDEX memories_agent ON memories (agent_id);
CREATE INDEX memories_run ON memories (run_id);
CREATE INDEX memories_tsv ON memories USING GIN (tsv);
CREATE TABLE history (
    seq BIGSERIAL PRIMARY KEY,
    memory_id TEXT NOT NULL,
    event TEXT NOT NULL,
    old_memory TEXT,
    new_memory TEXT,
    fact TEXT,
    probabilities TEXT,
    head_hash TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX history_memory ON history (memory_id);
";

/// A memory bank in a PostgreSQL database.
pub struct PostgresStore {
    client: Client,
    location: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish()
    }
}

/// `url` with its password, if any, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database`) and creates the
    /// schema if the database has none. A database that holds another schema is refused.
    pub fn open(url: &str) -> MemoryResult<Self> {
        let location = redact_url(url);
        let mut client = Client::connect(url, NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&LOCK_CLASS, &GLOBAL_LOCK],
        )?;
        let tables: Vec<String> = tx
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name IN \
                 ('athena_meta', 'memories', 'history')",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if tables.is_empty() {
            tx.batch_execute(SCHEMA)?;
            tx.execute(
                "INSERT INTO athena_meta (key, value) VALUES ('schema_version', $1)",
                &[&SCHEMA_VERSION.to_string()],
            )?;
        } else if !tables.iter().any(|t| t == "athena_meta") {
            return Err(MemoryError::ForeignDb {
                location,
                msg: format!(
                    "the database has tables named {} but is not an athena memory bank",
                    tables.join(", ")
                ),
            });
        }
        let version: Option<String> = tx
            .query_opt(
                "SELECT value FROM athena_meta WHERE key = 'schema_version'",
                &[],
            )?
            .map(|r| r.get(0));
        if version.as_deref() != Some(SCHEMA_VERSION.to_string().as_str()) {
            return Err(MemoryError::ForeignDb {
                location,
                msg: format!(
                    "schema version {} where this build reads {SCHEMA_VERSION}",
                    version.as_deref().unwrap_or("(none)")
                ),
            });
        }
        // Banks written before the change counters existed gain their table here.
        tx.batch_execute(GENERATIONS_SCHEMA)?;
        tx.batch_execute(DELETED_SCOPES_SCHEMA)?;
        tx.commit()?;
        Ok(PostgresStore { client, location })
    }
}

/// Keeps the scope of memory `$1` in `deleted_scopes` (run before deleting it).
const KEEP_DELETED_SCOPE: &str =
    "INSERT INTO deleted_scopes (memory_id, user_id, agent_id, run_id) \
    SELECT id, user_id, agent_id, run_id FROM memories WHERE id = $1 \
    ON CONFLICT (memory_id) DO NOTHING";

/// The second key of the lock on one id of a scope.
fn scope_lock_sql(name: &str) -> String {
    format!("SELECT pg_advisory_xact_lock($1, hashtext('{name}:' || $2))")
}

impl Store for PostgresStore {
    fn write(
        &mut self,
        scope: Option<&Scope>,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> MemoryResult<()>,
    ) -> MemoryResult<()> {
        let mut tx = self.client.transaction()?;
        match scope {
            // Every id the scope gives, in a fixed order: two writes whose scopes overlap
            // as filters share at least one id, so they serialize; the fixed order keeps
            // them from deadlocking.
            Some(scope) => {
                tx.execute(
                    "SELECT pg_advisory_xact_lock_shared($1, $2)",
                    &[&LOCK_CLASS, &GLOBAL_LOCK],
                )?;
                for (name, id) in scope.parts() {
                    if let Some(id) = id {
                        tx.execute(&scope_lock_sql(name), &[&LOCK_CLASS, &id])?;
                    }
                }
            }
            None => {
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    &[&LOCK_CLASS, &GLOBAL_LOCK],
                )?;
            }
        }
        f(&mut PgTx { tx: &mut tx })?;
        tx.commit()?;
        Ok(())
    }

    fn read(
        &mut self,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> MemoryResult<()>,
    ) -> MemoryResult<()> {
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        f(&mut PgTx { tx: &mut tx })?;
        tx.commit()?;
        Ok(())
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

struct PgTx<'t, 'c> {
    tx: &'t mut Transaction<'c>,
}

/// `m.user_id = $n AND ...` for the ids a scope gives, numbered from `first`, and their
/// values.
fn scope_filter(scope: &Scope, first: usize) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    for (name, id) in scope.parts() {
        if let Some(id) = id {
            clauses.push(format!("m.{name} = ${}", first + values.len()));
            values.push(id.to_string());
        }
    }
    (clauses.join(" AND "), values)
}

fn params(values: &[String]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn record(row: &Row) -> MemoryResult<Record> {
    let id: String = row.try_get(0)?;
    let id = stored_id(&id)?;
    let meta: String = row.try_get(6)?;
    let bytes: Vec<u8> = row.try_get(9)?;
    Ok(Record {
        id,
        scope: Scope::from_columns(row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
        text: row.try_get(4)?,
        hash: row.try_get(5)?,
        metadata: parse_metadata(&meta)
            .map_err(|e| MemoryError::Internal(format!("memory {id}: stored {e}")))?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
        embedding: embedding_from_bytes(&bytes)?,
    })
}

fn ids(rows: Vec<Row>) -> MemoryResult<Vec<Uuid>> {
    rows.iter()
        .map(|r| stored_id(&r.try_get::<_, String>(0)?))
        .collect()
}

impl StoreTx for PgTx<'_, '_> {
    fn identity(&mut self) -> MemoryResult<Option<EmbeddingIdentity>> {
        let row = self
            .tx
            .query_opt("SELECT value FROM athena_meta WHERE key = 'identity'", &[])?;
        row.map(|r| parse_identity(&r.get::<_, String>(0)))
            .transpose()
    }

    fn set_identity(&mut self, identity: &EmbeddingIdentity) -> MemoryResult<()> {
        self.tx.execute(
            "INSERT INTO athena_meta (key, value) VALUES ('identity', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&identity_json(identity)],
        )?;
        Ok(())
    }

    fn get(&mut self, id: Uuid) -> MemoryResult<Option<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM memories WHERE id = $1");
        self.tx
            .query_opt(&sql, &[&id.to_string()])?
            .map(|r| record(&r))
            .transpose()
    }

    fn find_hash(&mut self, scope: &Scope, hash: &str) -> MemoryResult<Option<Uuid>> {
        let [u, a, r] = scope.columns();
        let row = self.tx.query_opt(
            "SELECT id FROM memories WHERE user_id = $1 AND agent_id = $2 AND run_id = $3 \
             AND hash = $4",
            &[&u, &a, &r, &hash],
        )?;
        row.map(|r| stored_id(&r.get::<_, String>(0))).transpose()
    }

    fn list(&mut self, scope: &Scope, offset: u64, limit: u64) -> MemoryResult<Vec<Record>> {
        let (filter, values) = scope_filter(scope, 1);
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM memories m WHERE {filter} ORDER BY m.seq \
             LIMIT {} OFFSET {}",
            limit.min(i64::MAX as u64),
            offset.min(i64::MAX as u64)
        );
        let rows = self.tx.query(&sql, &params(&values))?;
        rows.iter().map(record).collect()
    }

    fn count(&mut self, scope: &Scope) -> MemoryResult<u64> {
        let (filter, values) = scope_filter(scope, 1);
        let sql = format!("SELECT count(*) FROM memories m WHERE {filter}");
        let n: i64 = self.tx.query_one(&sql, &params(&values))?.try_get(0)?;
        Ok(n.max(0) as u64)
    }

    fn for_each_vector(
        &mut self,
        scope: &Scope,
        visit: &mut VectorVisitor<'_>,
    ) -> MemoryResult<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let (filter, values) = scope_filter(scope, 1);
        let sql = format!("SELECT m.id, m.embedding FROM memories m WHERE {filter} ORDER BY m.seq");
        let mut rows = self.tx.query_raw(&sql, params(&values))?;
        while let Some(r) = rows.next()? {
            visit(
                stored_id(&r.try_get::<_, String>(0)?)?,
                embedding_from_bytes(r.try_get::<_, &[u8]>(1)?)?,
            )?;
        }
        Ok(())
    }

    fn generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>> {
        let mut out = Vec::new();
        for (part, id) in scope.parts() {
            if let Some(id) = id {
                let n = self
                    .tx
                    .query_opt(
                        "SELECT n FROM scope_generations WHERE part = $1 AND id = $2",
                        &[&part, &id],
                    )?
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()?;
                out.push(n.unwrap_or(0));
            }
        }
        Ok(out)
    }

    fn bump_generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>> {
        let mut out = Vec::new();
        for (part, id) in scope.parts() {
            if let Some(id) = id {
                let row = self.tx.query_one(
                    "INSERT INTO scope_generations (part, id, n) VALUES ($1, $2, 1) \
                     ON CONFLICT (part, id) DO UPDATE SET n = scope_generations.n + 1 \
                     RETURNING n",
                    &[&part, &id],
                )?;
                out.push(row.try_get(0)?);
            }
        }
        Ok(out)
    }

    fn bump_all_generations(&mut self) -> MemoryResult<()> {
        self.tx
            .execute("UPDATE scope_generations SET n = n + 1", &[])?;
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
        let (filter, mut values) = scope_filter(scope, 2);
        values.insert(0, terms.join(" | "));
        let sql = format!(
            "SELECT m.id FROM memories m, to_tsquery('english', $1) q \
             WHERE m.tsv @@ q AND {filter} ORDER BY ts_rank(m.tsv, q) DESC, m.seq LIMIT {limit}"
        );
        ids(self.tx.query(&sql, &params(&values))?)
    }

    fn insert(&mut self, r: &Record) -> MemoryResult<()> {
        let [u, a, run] = r.scope.columns();
        self.tx.execute(
            "INSERT INTO memories (id, user_id, agent_id, run_id, text, hash, metadata, \
             created_at, updated_at, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &r.id.to_string(),
                &u,
                &a,
                &run,
                &r.text,
                &r.hash,
                &serde_json::Value::Object(r.metadata.clone()).to_string(),
                &r.created_at,
                &r.updated_at,
                &embedding_to_bytes(&r.embedding),
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
        let n = self.tx.execute(
            "UPDATE memories SET text = $2, hash = $3, embedding = $4, updated_at = $5 \
             WHERE id = $1",
            &[
                &id.to_string(),
                &text,
                &hash,
                &embedding_to_bytes(embedding),
                &at,
            ],
        )?;
        Ok(n == 1)
    }

    fn set_metadata(&mut self, id: Uuid, metadata: &Metadata, at: i64) -> MemoryResult<bool> {
        let n = self.tx.execute(
            "UPDATE memories SET metadata = $2, updated_at = $3 WHERE id = $1",
            &[
                &id.to_string(),
                &serde_json::Value::Object(metadata.clone()).to_string(),
                &at,
            ],
        )?;
        Ok(n == 1)
    }

    fn delete(&mut self, id: Uuid) -> MemoryResult<bool> {
        self.tx.execute(KEEP_DELETED_SCOPE, &[&id.to_string()])?;
        let n = self
            .tx
            .execute("DELETE FROM memories WHERE id = $1", &[&id.to_string()])?;
        Ok(n == 1)
    }

    fn deleted_scope(&mut self, id: Uuid) -> MemoryResult<Option<Scope>> {
        let row = self.tx.query_opt(
            "SELECT user_id, agent_id, run_id FROM deleted_scopes WHERE memory_id = $1",
            &[&id.to_string()],
        )?;
        row.map(|r| -> MemoryResult<Scope> {
            Ok(Scope::from_columns(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
            ))
        })
        .transpose()
    }

    fn add_history(&mut self, h: &HistoryRow) -> MemoryResult<()> {
        let probabilities = h
            .probabilities
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| MemoryError::Internal(e.to_string()))?;
        self.tx.execute(
            "INSERT INTO history (memory_id, event, old_memory, new_memory, fact, probabilities, \
             head_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &h.memory_id.to_string(),
                &h.event.as_str(),
                &h.old_memory,
                &h.new_memory,
                &h.fact,
                &probabilities,
                &h.head_hash,
                &h.created_at,
            ],
        )?;
        Ok(())
    }

    fn history(&mut self, id: Uuid) -> MemoryResult<Vec<HistoryRow>> {
        let rows = self.tx.query(
            "SELECT memory_id, event, old_memory, new_memory, fact, probabilities, head_hash, \
             created_at FROM history WHERE memory_id = $1 ORDER BY seq",
            &[&id.to_string()],
        )?;
        rows.iter()
            .map(|r| {
                let cols = [0, 1, 2, 3, 4, 5, 6].map(|i| r.try_get::<_, Option<String>>(i));
                let cols = cols.into_iter().collect::<Result<Vec<_>, _>>()?;
                let cols: [Option<String>; 7] = cols
                    .try_into()
                    .map_err(|_| MemoryError::Internal("history row width".into()))?;
                history_from_columns(cols, r.try_get(7)?)
            })
            .collect()
    }

    fn reset(&mut self) -> MemoryResult<()> {
        self.tx.batch_execute(
            "DELETE FROM memories; DELETE FROM history; DELETE FROM deleted_scopes; \
             DELETE FROM athena_meta WHERE key = 'identity';",
        )?;
        Ok(())
    }

    fn check(&mut self) -> MemoryResult<IntegrityReport> {
        let count = |tx: &mut Transaction<'_>, sql: &str| -> MemoryResult<u64> {
            Ok(tx.query_one(sql, &[])?.try_get::<_, i64>(0)? as u64)
        };
        let mut report = IntegrityReport {
            memories: count(self.tx, "SELECT count(*) FROM memories")?,
            history_rows: count(self.tx, "SELECT count(*) FROM history")?,
            memories_without_history: ids(self.tx.query(CHECK_WITHOUT_HISTORY, &[])?)?,
            dangling_history: ids(self.tx.query(CHECK_DANGLING, &[])?)?,
            ..IntegrityReport::default()
        };
        if let Some(identity) = self.identity()? {
            let width = (identity.hidden_size * 4) as i32;
            report.bad_embeddings = ids(self.tx.query(
                "SELECT id FROM memories WHERE octet_length(embedding) != $1",
                &[&width],
            )?)?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://me:secret@db:5432/mem"),
            "postgres://me:***@db:5432/mem"
        );
        assert_eq!(redact_url("postgres://me@db/mem"), "postgres://me@db/mem");
        assert_eq!(redact_url("postgres://db/mem"), "postgres://db/mem");
    }
}
