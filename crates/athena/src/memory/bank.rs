//! [`MemoryBank`]: the memory of an agent over a [`Store`], with mem0's operations. Adding
//! facts through the action head lives in `add.rs`; this file opens banks and holds the
//! direct operations and retrieval.

use std::path::Path;

use uuid::Uuid;

use super::error::{MemoryError, MemoryResult};
use super::journal::JournalTx;
use super::postgres::PostgresStore;
use super::retrieval::{cosine, fuse, normalize, query_terms, RetrievalConfig};
use super::sqlite::SqliteStore;
use super::store::{IntegrityReport, Store, StoreTx};
use super::types::{
    content_hash, metadata_matches, now_micros, Decision, EmbeddingIdentity, Event, EventKind,
    HistoryRow, Metadata, Record, Scope, SearchHit,
};
use super::vector_cache::{exact_ranking, VectorCache, DEFAULT_INDEX_BYTES};

/// Default for [`BankConfig::max_text_bytes`]: 64 KiB.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 64 * 1024;

/// How a bank behaves; every field has a documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct BankConfig {
    /// Longest fact, query or memory text, in bytes. Default: 64 KiB.
    pub max_text_bytes: usize,
    /// How many candidates the action head chooses a target among. Default: 10.
    pub candidates: usize,
    /// How retrieval fuses its rankings (for search and for the head's candidates).
    pub retrieval: RetrievalConfig,
    /// Most bytes the compact vector codes of searched scopes may take in memory (about
    /// 4.4 KiB per memory at a hidden size of 2048). A scope whose codes alone would take more
    /// is searched exactly, reading its embeddings from the store on every search.
    /// Default: 1 GiB.
    pub index_bytes: usize,
}

impl Default for BankConfig {
    fn default() -> Self {
        BankConfig {
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            candidates: 10,
            retrieval: RetrievalConfig::default(),
            index_bytes: DEFAULT_INDEX_BYTES,
        }
    }
}

impl BankConfig {
    /// Checks a fact, query or memory text: not blank, not longer than
    /// [`BankConfig::max_text_bytes`].
    pub fn check_text(&self, what: &str, text: &str) -> MemoryResult<()> {
        if text.trim().is_empty() {
            return Err(MemoryError::bad_text(what, "is empty"));
        }
        if text.len() > self.max_text_bytes {
            return Err(MemoryError::bad_text(
                what,
                format!(
                    "is {} bytes, more than the limit of {}",
                    text.len(),
                    self.max_text_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// What a search asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Whose memories to search (a filter: ids left out match anything).
    pub scope: Scope,
    /// How many hits at most. Default: 10.
    pub top_k: usize,
    /// Drop hits whose cosine similarity to the query is below this. Default: none.
    pub threshold: Option<f32>,
    /// Keep only memories whose metadata holds each of these keys with an equal value.
    pub filters: Metadata,
}

impl SearchOptions {
    /// The ten best memories of `scope`.
    pub fn new(scope: Scope) -> Self {
        SearchOptions {
            scope,
            top_k: 10,
            threshold: None,
            filters: Metadata::new(),
        }
    }
}

/// What [`MemoryBank::edit`] changes; a field left `None` stays as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Edit<'a> {
    /// The new text, with the identity of its embedding and the embedding.
    pub text: Option<(&'a EmbeddingIdentity, &'a str, &'a [f32])>,
    /// Keys to set in the metadata (the others stay).
    pub metadata: Option<&'a Metadata>,
}

/// Most hits a search returns.
pub const MAX_TOP_K: usize = 1000;

/// An agent's memory: records, their history, and retrieval over them.
pub struct MemoryBank {
    pub(super) store: Box<dyn Store>,
    pub(super) config: BankConfig,
    /// The compact codes of the scopes searched so far.
    pub(super) index: VectorCache,
}

impl std::fmt::Debug for MemoryBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBank")
            .field("location", &self.store.location())
            .field("config", &self.config)
            .finish()
    }
}

/// Whether `location` names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

impl MemoryBank {
    /// Opens the bank at `location`: a `postgres://` URL, or the path of a SQLite file
    /// (created if missing).
    pub fn open(location: &str, config: BankConfig) -> MemoryResult<Self> {
        let store: Box<dyn Store> = if is_postgres_url(location) {
            Box::new(PostgresStore::open(location)?)
        } else {
            Box::new(SqliteStore::open(Path::new(location))?)
        };
        Ok(Self::with_store(store, config))
    }

    /// A bank over an opened store.
    pub fn with_store(store: Box<dyn Store>, config: BankConfig) -> Self {
        let index = VectorCache::new(config.index_bytes);
        MemoryBank {
            store,
            config,
            index,
        }
    }

    /// Where the bank lives (a path, or a URL without its password).
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The bank's configuration.
    pub fn config(&self) -> &BankConfig {
        &self.config
    }

    /// The bank's configuration, to change how it retrieves (the cache budget is fixed when
    /// the bank is opened).
    pub fn config_mut(&mut self) -> &mut BankConfig {
        &mut self.config
    }

    /// The bytes the cached vector codes take now.
    pub fn cache_bytes(&self) -> usize {
        self.index.bytes()
    }

    /// The identity of the bank's embeddings; `None` while it holds none.
    pub fn identity(&mut self) -> MemoryResult<Option<EmbeddingIdentity>> {
        let mut out = None;
        self.store.read(&mut |tx| {
            out = tx.identity()?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Checks a fact, query or memory text: not blank, not longer than the limit.
    pub fn check_text(&self, what: &str, text: &str) -> MemoryResult<()> {
        self.config.check_text(what, text)
    }

    /// Searches with an already computed query embedding (see [`MemoryBank::search`] in
    /// `add.rs` for the one that encodes).
    pub fn search_embedded(
        &mut self,
        identity: &EmbeddingIdentity,
        query: &str,
        query_vector: &[f32],
        options: &SearchOptions,
    ) -> MemoryResult<Vec<SearchHit>> {
        self.check_text("query", query)?;
        options.scope.validate()?;
        if !(1..=MAX_TOP_K).contains(&options.top_k) {
            return Err(MemoryError::invalid(
                "top_k",
                format!("{} is outside 1..={MAX_TOP_K}", options.top_k),
            ));
        }
        if let Some(t) = options.threshold {
            if !t.is_finite() {
                return Err(MemoryError::invalid("threshold", "must be a finite number"));
            }
        }
        check_vector(identity, query_vector)?;
        let retrieval = self.config.retrieval.clone();
        let mut unit = query_vector.to_vec();
        normalize(&mut unit);
        let mut hits = Vec::new();
        let index = &mut self.index;
        self.store.read(&mut |tx| {
            match tx.identity()? {
                None => return Ok(()),
                Some(bank) => check_identity(&bank, identity)?,
            }
            let depth = if options.filters.is_empty() {
                retrieval.depth.max(options.top_k)
            } else {
                usize::MAX
            };
            let ranked = retrieve(
                tx,
                Some(&mut *index),
                &options.scope,
                query,
                query_vector,
                depth,
                &retrieval,
            )?;
            for (id, score) in ranked {
                if hits.len() == options.top_k {
                    break;
                }
                let Some(record) = tx.get(id)? else { continue };
                let similarity = cosine(&unit, &record.embedding);
                if options.threshold.is_some_and(|t| similarity < t) {
                    continue;
                }
                if metadata_matches(&record.metadata, &options.filters) {
                    hits.push(SearchHit {
                        record,
                        score,
                        similarity,
                    });
                }
            }
            Ok(())
        })?;
        Ok(hits)
    }

    /// One memory; with a scope, a memory outside it is unknown too.
    pub fn get(&mut self, id: Uuid, scope: Option<&Scope>) -> MemoryResult<Record> {
        if let Some(s) = scope {
            s.validate()?;
        }
        let mut out = None;
        self.store.read(&mut |tx| {
            out = tx.get(id)?;
            Ok(())
        })?;
        out.filter(|r| scope.is_none_or(|s| s.matches(&r.scope)))
            .ok_or_else(|| MemoryError::UnknownId { id: id.to_string() })
    }

    /// The memories of a scope, oldest first, `limit` from `offset`.
    pub fn get_all(&mut self, scope: &Scope, offset: u64, limit: u64) -> MemoryResult<Vec<Record>> {
        scope.validate()?;
        let mut out = Vec::new();
        self.store.read(&mut |tx| {
            out = tx.list(scope, offset, limit)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// The memories of a scope, oldest first, `limit` from `offset`, and how many the scope
    /// holds in all, read in one snapshot.
    pub fn get_page(
        &mut self,
        scope: &Scope,
        offset: u64,
        limit: u64,
    ) -> MemoryResult<(Vec<Record>, u64)> {
        scope.validate()?;
        let mut out = (Vec::new(), 0);
        self.store.read(&mut |tx| {
            out = (tx.list(scope, offset, limit)?, tx.count(scope)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Replaces a memory's text with an already computed embedding of it.
    pub fn update_embedded(
        &mut self,
        identity: &EmbeddingIdentity,
        id: Uuid,
        scope: Option<&Scope>,
        text: &str,
        vector: &[f32],
    ) -> MemoryResult<Event> {
        let edit = Edit {
            text: Some((identity, text, vector)),
            metadata: None,
        };
        Ok(self.edit(id, scope, &edit)?.0)
    }

    /// Replaces a memory's text (with an already computed embedding of it) and merges keys
    /// into its metadata, in one transaction. A text change is an UPDATE in the history; a
    /// metadata change only moves `updated_at`. Returns the event (NONE when nothing
    /// changed) and the memory as it is afterwards.
    pub fn edit(
        &mut self,
        id: Uuid,
        scope: Option<&Scope>,
        edit: &Edit<'_>,
    ) -> MemoryResult<(Event, Record)> {
        if let Some((identity, text, vector)) = edit.text {
            self.check_text("text", text)?;
            check_vector(identity, vector)?;
        }
        if let Some(s) = scope {
            s.validate()?;
        }
        let mut out = None;
        self.write_journaled(None, &mut |tx, _| {
            let record = tx
                .get(id)?
                .filter(|r| scope.is_none_or(|s| s.matches(&r.scope)))
                .ok_or_else(|| MemoryError::UnknownId { id: id.to_string() })?;
            let at = now_micros();
            let mut event = Event {
                id: Some(id),
                event: EventKind::Noop,
                memory: record.text.clone(),
                previous_memory: None,
            };
            if let Some((identity, text, vector)) = edit.text {
                ensure_identity(tx, identity)?;
                let hash = content_hash(text);
                if record.hash != hash {
                    if let Some(other) = tx.find_hash(&record.scope, &hash)? {
                        return Err(MemoryError::bad_text(
                            "text",
                            format!("memory `{other}` of the same scope already holds this text"),
                        ));
                    }
                    if !tx.update(id, text, &hash, vector, at)? {
                        return Err(MemoryError::UnknownId { id: id.to_string() });
                    }
                    tx.add_history(&HistoryRow {
                        memory_id: id,
                        event: EventKind::Update,
                        old_memory: Some(record.text.clone()),
                        new_memory: Some(text.to_string()),
                        fact: None,
                        probabilities: None,
                        head_hash: None,
                        created_at: at,
                    })?;
                    event = Event {
                        id: Some(id),
                        event: EventKind::Update,
                        memory: text.to_string(),
                        previous_memory: Some(record.text.clone()),
                    };
                }
            }
            if let Some(keys) = edit.metadata {
                let mut merged = record.metadata.clone();
                merged.extend(keys.iter().map(|(k, v)| (k.clone(), v.clone())));
                if merged != record.metadata {
                    if !tx.set_metadata(id, &merged, at)? {
                        return Err(MemoryError::UnknownId { id: id.to_string() });
                    }
                    event.event = EventKind::Update;
                }
            }
            let after = tx.get(id)?.ok_or_else(|| {
                MemoryError::Internal(format!("memory `{id}` vanished inside its edit"))
            })?;
            out = Some((event, after));
            Ok(())
        })?;
        out.ok_or_else(|| MemoryError::Internal("an edit produced no event".into()))
    }

    /// Removes a memory (its history stays, ending in DELETE).
    pub fn delete(&mut self, id: Uuid, scope: Option<&Scope>) -> MemoryResult<Event> {
        if let Some(s) = scope {
            s.validate()?;
        }
        let mut event = None;
        self.write_journaled(None, &mut |tx, _| {
            let record = tx
                .get(id)?
                .filter(|r| scope.is_none_or(|s| s.matches(&r.scope)))
                .ok_or_else(|| MemoryError::UnknownId { id: id.to_string() })?;
            event = Some(delete_in(tx, &record, None)?);
            Ok(())
        })?;
        event.ok_or_else(|| MemoryError::Internal("delete produced no event".into()))
    }

    /// Removes every memory of a scope; returns how many.
    pub fn delete_all(&mut self, scope: &Scope) -> MemoryResult<usize> {
        scope.validate()?;
        let mut n = 0;
        self.write_journaled(Some(scope), &mut |tx, _| {
            n = 0;
            loop {
                let page = tx.list(scope, 0, 500)?;
                if page.is_empty() {
                    return Ok(());
                }
                for record in &page {
                    delete_in(tx, record, None)?;
                    n += 1;
                }
            }
        })?;
        Ok(n)
    }

    /// A memory's history, oldest first; a memory never seen is an unknown id. With a
    /// scope, so is a memory outside it: a deleted memory's scope is the one it had (and a
    /// memory deleted before the bank kept deleted scopes is unknown to every scope).
    pub fn history(&mut self, id: Uuid, scope: Option<&Scope>) -> MemoryResult<Vec<HistoryRow>> {
        if let Some(s) = scope {
            s.validate()?;
        }
        let mut rows = Vec::new();
        self.store.read(&mut |tx| {
            rows = tx.history(id)?;
            if let Some(s) = scope {
                if !owner_in(tx, id)?.is_some_and(|o| s.matches(&o)) {
                    rows.clear();
                }
            }
            Ok(())
        })?;
        if rows.is_empty() {
            return Err(MemoryError::UnknownId { id: id.to_string() });
        }
        Ok(rows)
    }

    /// The scope a memory has, or had before it was deleted; `None` for a memory never seen
    /// (or deleted before the bank kept deleted scopes).
    pub fn owner(&mut self, id: Uuid) -> MemoryResult<Option<Scope>> {
        let mut out = None;
        self.store.read(&mut |tx| {
            out = owner_in(tx, id)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Removes every memory and all history; the bank then takes embeddings of any model.
    pub fn reset(&mut self) -> MemoryResult<()> {
        self.write_journaled(None, &mut |tx, _| tx.reset())
    }

    /// Runs `f` in a write transaction that keeps a journal of its changes, and applies the
    /// journal to the cached vector codes once the transaction has committed.
    pub(super) fn write_journaled(
        &mut self,
        scope: Option<&Scope>,
        f: &mut dyn FnMut(&mut JournalTx<'_>, &mut VectorCache) -> MemoryResult<()>,
    ) -> MemoryResult<()> {
        let index = &mut self.index;
        let mut journal = None;
        let result = self.store.write(scope, &mut |tx| {
            journal = None;
            let mut tx = JournalTx::new(tx);
            f(&mut tx, index)?;
            journal = Some(tx.into_journal());
            Ok(())
        });
        match (result, journal) {
            (Ok(()), Some(journal)) => {
                self.index.apply(&journal);
                Ok(())
            }
            (Ok(()), None) => Err(MemoryError::Internal(
                "a write committed without running".into(),
            )),
            (Err(e), journal) => {
                // The changes may or may not have committed: cached codes cannot tell.
                if journal.is_some_and(|j| !j.changes.is_empty()) {
                    self.index.clear();
                }
                Err(e)
            }
        }
    }

    /// Checks the bank's invariants: every memory has its history, no history row points at
    /// nothing, every embedding has the bank's width, and the engine's own check passes.
    pub fn check(&mut self) -> MemoryResult<IntegrityReport> {
        let mut report = IntegrityReport::default();
        self.store.write(None, &mut |tx| {
            report = tx.check()?;
            Ok(())
        })?;
        Ok(report)
    }
}

/// Refuses a vector of another width than the identity says, or with a non-finite value.
pub(super) fn check_vector(identity: &EmbeddingIdentity, v: &[f32]) -> MemoryResult<()> {
    if v.len() != identity.hidden_size {
        return Err(MemoryError::Internal(format!(
            "an embedding of width {} where {identity} was given",
            v.len()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(MemoryError::Internal("an embedding is not finite".into()));
    }
    Ok(())
}

/// Refuses a given identity that is not the bank's.
pub(super) fn check_identity(
    bank: &EmbeddingIdentity,
    given: &EmbeddingIdentity,
) -> MemoryResult<()> {
    if bank != given {
        return Err(MemoryError::OtherModel {
            bank: bank.to_string(),
            given: given.to_string(),
        });
    }
    Ok(())
}

/// Checks the bank's identity against `given`, recording it in a bank that has none.
pub(super) fn ensure_identity(tx: &mut dyn StoreTx, given: &EmbeddingIdentity) -> MemoryResult<()> {
    match tx.identity()? {
        Some(bank) => check_identity(&bank, given),
        None => tx.set_identity(given),
    }
}

/// The scope memory `id` has, or had before it was deleted.
fn owner_in(tx: &mut dyn StoreTx, id: Uuid) -> MemoryResult<Option<Scope>> {
    match tx.get(id)? {
        Some(record) => Ok(Some(record.scope)),
        None => tx.deleted_scope(id),
    }
}

/// Deletes `record` and writes its DELETE history row.
pub(super) fn delete_in(
    tx: &mut dyn StoreTx,
    record: &Record,
    cause: Option<(&str, &Decision)>,
) -> MemoryResult<Event> {
    if !tx.delete(record.id)? {
        return Err(MemoryError::UnknownId {
            id: record.id.to_string(),
        });
    }
    tx.add_history(&HistoryRow {
        memory_id: record.id,
        event: EventKind::Delete,
        old_memory: Some(record.text.clone()),
        new_memory: None,
        fact: cause.map(|(f, _)| f.to_string()),
        probabilities: cause.map(|(_, d)| d.probabilities.clone()),
        head_hash: cause.and_then(|(_, d)| d.head_hash.clone()),
        created_at: now_micros(),
    })?;
    Ok(Event {
        id: Some(record.id),
        event: EventKind::Delete,
        memory: record.text.clone(),
        previous_memory: None,
    })
}

/// The memories of `scope` best matching `text`/`vector`: `(id, fused score)`, best first.
/// Each ranking contributes at most `depth` memories. The vector ranking reads the cached
/// codes when `cache` is given (the transaction sees the committed state), and every
/// embedding of the scope otherwise.
pub(super) fn retrieve(
    tx: &mut dyn StoreTx,
    cache: Option<&mut VectorCache>,
    scope: &Scope,
    text: &str,
    vector: &[f32],
    depth: usize,
    config: &RetrievalConfig,
) -> MemoryResult<Vec<(Uuid, f32)>> {
    let by_vector = match cache {
        Some(cache) => cache.ranking(tx, scope, vector, depth)?,
        None => exact_ranking(tx, scope, vector, depth)?,
    };
    let by_text = if config.text_weight > 0.0 {
        tx.text_ranking(scope, &query_terms(text), depth.min(10_000))?
    } else {
        vec![]
    };
    Ok(fuse(&by_vector, &by_text, config))
}
