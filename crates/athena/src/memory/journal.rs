//! [`JournalTx`]: a write transaction that records what it changes. Every change of a
//! memory's embedding or existence adds one to the change counters of the memory's scope in
//! the same transaction, and is kept in a [`Journal`] that the bank applies to its cached
//! vector codes once the transaction has committed.

use std::collections::HashMap;

use uuid::Uuid;

use super::error::MemoryResult;
use super::store::{IntegrityReport, StoreTx, VectorVisitor};
use super::types::{EmbeddingIdentity, HistoryRow, Metadata, Record, Scope};

/// One change a committed transaction made to the memories.
#[derive(Debug, Clone)]
pub enum Change {
    /// A memory was added or its embedding replaced.
    Put {
        id: Uuid,
        scope: Scope,
        embedding: Vec<f32>,
    },
    /// A memory was removed.
    Remove { id: Uuid },
    /// Every memory was removed.
    Reset,
}

/// What a transaction changed, and the change counters it moved: for each `(part, id)` the
/// first and the last value it set.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pub changes: Vec<Change>,
    pub counters: HashMap<(&'static str, String), (i64, i64)>,
}

/// A transaction that keeps a [`Journal`] of its changes.
pub struct JournalTx<'a> {
    inner: &'a mut dyn StoreTx,
    journal: Journal,
}

impl<'a> JournalTx<'a> {
    /// Wraps `inner`.
    pub fn new(inner: &'a mut dyn StoreTx) -> Self {
        JournalTx {
            inner,
            journal: Journal::default(),
        }
    }

    /// Whether nothing was changed yet (the committed state is what the transaction sees).
    pub fn is_clean(&self) -> bool {
        self.journal.changes.is_empty()
    }

    /// The journal so far.
    pub fn into_journal(self) -> Journal {
        self.journal
    }

    fn bump(&mut self, scope: &Scope) -> MemoryResult<()> {
        let values = self.inner.bump_generations(scope)?;
        let ids = scope
            .parts()
            .into_iter()
            .filter_map(|(p, id)| Some((p, id?)));
        for ((part, id), n) in ids.zip(values) {
            self.journal
                .counters
                .entry((part, id.to_string()))
                .and_modify(|e| e.1 = n)
                .or_insert((n, n));
        }
        Ok(())
    }
}

impl StoreTx for JournalTx<'_> {
    fn identity(&mut self) -> MemoryResult<Option<EmbeddingIdentity>> {
        self.inner.identity()
    }

    fn set_identity(&mut self, identity: &EmbeddingIdentity) -> MemoryResult<()> {
        self.inner.set_identity(identity)
    }

    fn get(&mut self, id: Uuid) -> MemoryResult<Option<Record>> {
        self.inner.get(id)
    }

    fn find_hash(&mut self, scope: &Scope, hash: &str) -> MemoryResult<Option<Uuid>> {
        self.inner.find_hash(scope, hash)
    }

    fn list(&mut self, scope: &Scope, offset: u64, limit: u64) -> MemoryResult<Vec<Record>> {
        self.inner.list(scope, offset, limit)
    }

    fn count(&mut self, scope: &Scope) -> MemoryResult<u64> {
        self.inner.count(scope)
    }

    fn for_each_vector(
        &mut self,
        scope: &Scope,
        visit: &mut VectorVisitor<'_>,
    ) -> MemoryResult<()> {
        self.inner.for_each_vector(scope, visit)
    }

    fn generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>> {
        self.inner.generations(scope)
    }

    fn bump_generations(&mut self, scope: &Scope) -> MemoryResult<Vec<i64>> {
        self.inner.bump_generations(scope)
    }

    fn bump_all_generations(&mut self) -> MemoryResult<()> {
        self.inner.bump_all_generations()
    }

    fn text_ranking(
        &mut self,
        scope: &Scope,
        terms: &[String],
        limit: usize,
    ) -> MemoryResult<Vec<Uuid>> {
        self.inner.text_ranking(scope, terms, limit)
    }

    fn insert(&mut self, record: &Record) -> MemoryResult<()> {
        self.inner.insert(record)?;
        self.bump(&record.scope)?;
        self.journal.changes.push(Change::Put {
            id: record.id,
            scope: record.scope.clone(),
            embedding: record.embedding.clone(),
        });
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
        let Some(scope) = self.inner.get(id)?.map(|r| r.scope) else {
            return Ok(false);
        };
        if !self.inner.update(id, text, hash, embedding, at)? {
            return Ok(false);
        }
        self.bump(&scope)?;
        self.journal.changes.push(Change::Put {
            id,
            scope,
            embedding: embedding.to_vec(),
        });
        Ok(true)
    }

    fn set_metadata(&mut self, id: Uuid, metadata: &Metadata, at: i64) -> MemoryResult<bool> {
        self.inner.set_metadata(id, metadata, at)
    }

    fn delete(&mut self, id: Uuid) -> MemoryResult<bool> {
        let Some(scope) = self.inner.get(id)?.map(|r| r.scope) else {
            return Ok(false);
        };
        if !self.inner.delete(id)? {
            return Ok(false);
        }
        self.bump(&scope)?;
        self.journal.changes.push(Change::Remove { id });
        Ok(true)
    }

    fn deleted_scope(&mut self, id: Uuid) -> MemoryResult<Option<Scope>> {
        self.inner.deleted_scope(id)
    }

    fn add_history(&mut self, row: &HistoryRow) -> MemoryResult<()> {
        self.inner.add_history(row)
    }

    fn history(&mut self, id: Uuid) -> MemoryResult<Vec<HistoryRow>> {
        self.inner.history(id)
    }

    fn reset(&mut self) -> MemoryResult<()> {
        self.inner.reset()?;
        self.inner.bump_all_generations()?;
        self.journal.changes.push(Change::Reset);
        Ok(())
    }

    fn check(&mut self) -> MemoryResult<IntegrityReport> {
        self.inner.check()
    }
}
