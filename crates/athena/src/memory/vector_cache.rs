//! [`VectorCache`]: the compact codes of the scopes a bank searches, kept between searches.
//!
//! Each entry is stamped with the change counters of its scope's ids as it read them. A search
//! reads the counters in its own transaction: equal counters mean no memory of the scope
//! changed, so the codes are current; otherwise (another process wrote) the codes are built
//! again from the store. The bank's own writes are applied to the entries from their journal
//! after they commit, so a bank that writes and searches one scope never reads the scope
//! whole again. The entries together stay under a byte budget (least recently used first
//! out); a scope whose codes alone would pass it is searched exactly, streaming its
//! embeddings, without being cached.

use std::collections::HashMap;

use uuid::Uuid;

use super::codes::{CodesBuilder, ScopeCodes};
use super::error::{MemoryError, MemoryResult};
use super::journal::{Change, Journal};
use super::retrieval::{cosine, keep_best, normalize};
use super::store::StoreTx;
use super::types::Scope;

/// Default for [`VectorCache`]'s byte budget: 1 GiB.
pub const DEFAULT_INDEX_BYTES: usize = 1 << 30;

#[derive(Debug)]
struct Entry {
    stamp: Vec<i64>,
    codes: ScopeCodes,
    last_used: u64,
}

/// Cached codes of searched scopes, under a byte budget.
#[derive(Debug)]
pub struct VectorCache {
    budget: usize,
    entries: HashMap<Scope, Entry>,
    clock: u64,
}

impl VectorCache {
    /// An empty cache that keeps at most `budget` bytes of codes.
    pub fn new(budget: usize) -> Self {
        VectorCache {
            budget,
            entries: HashMap::new(),
            clock: 0,
        }
    }

    /// The bytes the cached codes take.
    pub fn bytes(&self) -> usize {
        self.entries.values().map(|e| e.codes.bytes()).sum()
    }

    /// The `depth` memories of `scope` most similar to `query`, best first, with their
    /// (approximate) cosine similarity; read in `tx`, which must see the committed state.
    pub fn ranking(
        &mut self,
        tx: &mut dyn StoreTx,
        scope: &Scope,
        query: &[f32],
        depth: usize,
    ) -> MemoryResult<Vec<(Uuid, f32)>> {
        self.clock += 1;
        let stamp = tx.generations(scope)?;
        let current = self
            .entries
            .get(scope)
            .is_some_and(|e| e.stamp == stamp && !e.codes.wants_rebuild(depth));
        if !current {
            self.entries.remove(scope);
            let n = usize::try_from(tx.count(scope)?).unwrap_or(usize::MAX);
            let need = n.saturating_mul(ScopeCodes::bytes_per_memory(query.len()));
            if need > self.budget {
                return exact_ranking(tx, scope, query, depth);
            }
            self.evict_until_free(need);
            let mut builder = CodesBuilder::new(query.len());
            tx.for_each_vector(scope, &mut |id, v| {
                if builder.add(id, v) {
                    Ok(())
                } else {
                    Err(width_error(id, query.len()))
                }
            })?;
            let codes = builder.finish();
            self.entries.insert(
                scope.clone(),
                Entry {
                    stamp,
                    codes,
                    last_used: 0,
                },
            );
        }
        let entry = self
            .entries
            .get_mut(scope)
            .ok_or_else(|| MemoryError::Internal("a cached scope vanished".into()))?;
        entry.last_used = self.clock;
        Ok(entry.codes.search(query, depth))
    }

    /// Applies a committed transaction's changes to the entries whose counters it moved
    /// from their stamps; an entry whose counters someone else moved too is dropped.
    pub fn apply(&mut self, journal: &Journal) {
        if journal.changes.iter().any(|c| matches!(c, Change::Reset)) {
            self.entries.clear();
            return;
        }
        self.entries.retain(|scope, entry| {
            let ids = scope
                .parts()
                .into_iter()
                .filter_map(|(p, id)| Some((p, id?)));
            let mut touched = false;
            for (k, (part, id)) in ids.enumerate() {
                let Some(&(first, last)) = journal.counters.get(&(part, id.to_string())) else {
                    continue;
                };
                if entry.stamp.get(k) != Some(&(first - 1)) {
                    return false;
                }
                entry.stamp[k] = last;
                touched = true;
            }
            if !touched {
                return true;
            }
            for change in &journal.changes {
                match change {
                    Change::Put {
                        id,
                        scope: of,
                        embedding,
                    } => {
                        if !scope.matches(of) {
                            entry.codes.remove(*id);
                        } else if !entry.codes.upsert(*id, embedding) {
                            return false;
                        }
                    }
                    Change::Remove { id } => entry.codes.remove(*id),
                    Change::Reset => return false,
                }
            }
            true
        });
        self.evict_until_free(0);
    }

    /// Forgets every entry (after a write whose commit may or may not have happened).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Drops the least recently used entries until `need` more bytes fit the budget.
    fn evict_until_free(&mut self, need: usize) {
        while self.bytes().saturating_add(need) > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(s, _)| s.clone())
            else {
                return;
            };
            self.entries.remove(&oldest);
        }
    }
}

fn width_error(id: Uuid, width: usize) -> MemoryError {
    MemoryError::Internal(format!(
        "memory `{id}` has an embedding whose width is not the bank's {width} \
         (`athena memory check` lists such memories)"
    ))
}

/// Exact search, streaming the scope's embeddings: for scopes too large to cache.
pub(super) fn exact_ranking(
    tx: &mut dyn StoreTx,
    scope: &Scope,
    query: &[f32],
    depth: usize,
) -> MemoryResult<Vec<(Uuid, f32)>> {
    let mut unit = query.to_vec();
    normalize(&mut unit);
    let mut scored = Vec::new();
    tx.for_each_vector(scope, &mut |id, v| {
        if v.len() != unit.len() {
            return Err(width_error(id, unit.len()));
        }
        scored.push((id, cosine(&unit, &v)));
        Ok(())
    })?;
    keep_best(&mut scored, depth);
    Ok(scored)
}
