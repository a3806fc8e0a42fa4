//! Adding facts: encode them in one batch, retrieve each fact's candidates in its scope, let
//! the action head decide, and apply the decision with its history in one transaction. Also
//! the operations that need the model to encode (search, update).

use std::path::Path;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::bank::{check_vector, delete_in, ensure_identity, retrieve, MemoryBank, SearchOptions};
use super::error::{MemoryError, MemoryResult};
use super::store::StoreTx;
use super::types::{
    content_hash, hex, now_micros, Decision, EmbeddingIdentity, Event, EventKind, HistoryRow,
    Metadata, Record, Scope, SearchHit,
};
use crate::models::action_head::{MemoryActionHead, WEIGHTS_FILE};
use crate::models::olmoe::OlmoeModel;

/// The head that decides, and the hash of the weights it was loaded from.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    /// The head.
    pub head: &'a MemoryActionHead,
    /// Hex SHA-256 of its weights file, recorded in history rows.
    pub head_hash: Option<&'a str>,
}

/// How many times an UPDATE or DELETE whose target vanished is decided again.
const TARGET_RETRIES: usize = 2;

/// The identity of `model`'s embeddings: the hub id, or the canonical path of a local
/// directory; the hidden size; the pooling.
pub fn model_identity(model: &OlmoeModel, hidden_size: usize) -> EmbeddingIdentity {
    let name = &model.config().model_name;
    let path = Path::new(name);
    let model_id = if path.is_dir() {
        path.canonicalize()
            .map_or_else(|_| name.clone(), |p| p.display().to_string())
    } else {
        name.clone()
    };
    let pooling = serde_json::to_value(model.config().pooling)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", model.config().pooling).to_lowercase());
    EmbeddingIdentity {
        model: model_id,
        hidden_size,
        pooling,
    }
}

/// Hex SHA-256 of a head directory's weights file.
pub fn head_hash(dir: &Path) -> MemoryResult<String> {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|source| crate::Error::Io { path, source })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn encode(model: &OlmoeModel, texts: &[&str]) -> MemoryResult<(EmbeddingIdentity, Vec<Vec<f32>>)> {
    let vectors = model.encode(texts)?;
    let width = vectors.first().map_or(0, Vec::len);
    Ok((model_identity(model, width), vectors))
}

impl MemoryBank {
    /// Adds facts to `scope`. With `infer`, the model's trained action head decides ADD,
    /// UPDATE, DELETE or NOOP for each fact among its retrieved candidates (a head that was
    /// never trained is refused: give `action_head_path`); without, every new fact is
    /// added. A fact already held in the scope is a NOOP either way.
    pub fn add(
        &mut self,
        model: &OlmoeModel,
        facts: &[&str],
        scope: &Scope,
        metadata: &Metadata,
        infer: bool,
    ) -> MemoryResult<Vec<Event>> {
        self.check_add(facts, scope)?;
        let hash;
        let decider = if infer {
            let head = model.action_head().ok_or(crate::Error::NeedsCandle {
                what: "the memory action head",
                backend: model.backend().ok_or(crate::Error::NotLoaded)?,
            })?;
            let dir = model
                .config()
                .action_head_path
                .as_deref()
                .ok_or(MemoryError::UntrainedHead)?;
            hash = head_hash(dir)?;
            Some(Decider {
                head,
                head_hash: Some(&hash),
            })
        } else {
            None
        };
        let (identity, vectors) = encode(model, facts)?;
        self.add_embedded(&identity, facts, &vectors, scope, metadata, decider)
    }

    fn check_add(&self, facts: &[&str], scope: &Scope) -> MemoryResult<()> {
        scope.validate()?;
        if facts.is_empty() {
            return Err(MemoryError::bad_text("facts", "none given"));
        }
        for (i, f) in facts.iter().enumerate() {
            self.check_text(&format!("fact {}", i + 1), f)?;
        }
        Ok(())
    }

    /// [`MemoryBank::add`] with already computed embeddings (one per fact) and an explicit
    /// decider (`None`: always ADD).
    pub fn add_embedded(
        &mut self,
        identity: &EmbeddingIdentity,
        facts: &[&str],
        vectors: &[Vec<f32>],
        scope: &Scope,
        metadata: &Metadata,
        decider: Option<Decider<'_>>,
    ) -> MemoryResult<Vec<Event>> {
        self.check_add(facts, scope)?;
        if vectors.len() != facts.len() {
            return Err(MemoryError::Internal(format!(
                "{} embeddings for {} facts",
                vectors.len(),
                facts.len()
            )));
        }
        for v in vectors {
            check_vector(identity, v)?;
        }
        let mut events = Vec::with_capacity(facts.len());
        for (fact, vector) in facts.iter().zip(vectors) {
            let mut event = None;
            let candidates = self.config.candidates;
            let retrieval = self.config.retrieval.clone();
            self.write_journaled(Some(scope), &mut |tx, index| {
                ensure_identity(tx, identity)?;
                let hash = content_hash(fact);
                if let Some(id) = tx.find_hash(scope, &hash)? {
                    event = Some(Event {
                        id: Some(id),
                        event: EventKind::Noop,
                        memory: fact.to_string(),
                        previous_memory: None,
                    });
                    return Ok(());
                }
                let new = Record {
                    id: Uuid::now_v7(),
                    scope: scope.clone(),
                    text: fact.to_string(),
                    hash,
                    metadata: metadata.clone(),
                    created_at: now_micros(),
                    updated_at: now_micros(),
                    embedding: vector.clone(),
                };
                let Some(decider) = decider else {
                    event = Some(insert_in(tx, new, None)?);
                    return Ok(());
                };
                let mut attempt = 0;
                event = Some(loop {
                    // Codes cached from the committed state serve only a transaction that
                    // has not changed anything yet.
                    let cache = tx.is_clean().then_some(&mut *index);
                    let found = retrieve(tx, cache, scope, fact, vector, candidates, &retrieval)?;
                    let mut records = Vec::new();
                    for (id, _) in found.into_iter().take(candidates) {
                        if let Some(r) = tx.get(id)? {
                            records.push(r);
                        }
                    }
                    match decide_and_apply(tx, decider, new.clone(), &records)? {
                        Applied::Done(e) => break e,
                        Applied::TargetGone { op, id } => {
                            attempt += 1;
                            if attempt > TARGET_RETRIES {
                                return Err(MemoryError::TargetGone {
                                    fact: fact.to_string(),
                                    op,
                                    id: id.to_string(),
                                });
                            }
                            tracing::warn!(%id, op, "the head's target vanished; deciding again");
                        }
                    }
                });
                Ok(())
            })?;
            events.push(event.ok_or_else(|| MemoryError::Internal("add made no event".into()))?);
        }
        Ok(events)
    }

    /// Searches `options.scope` for the memories best matching `query` (hybrid retrieval).
    pub fn search(
        &mut self,
        model: &OlmoeModel,
        query: &str,
        options: &SearchOptions,
    ) -> MemoryResult<Vec<SearchHit>> {
        self.check_text("query", query)?;
        options.scope.validate()?;
        let (identity, vectors) = encode(model, &[query])?;
        let vector = vectors
            .first()
            .ok_or_else(|| MemoryError::Internal("encode returned nothing".into()))?;
        self.search_embedded(&identity, query, vector, options)
    }

    /// Replaces a memory's text and embedding (its scope and metadata stay).
    pub fn update(
        &mut self,
        model: &OlmoeModel,
        id: Uuid,
        scope: Option<&Scope>,
        text: &str,
    ) -> MemoryResult<Event> {
        self.check_text("text", text)?;
        let (identity, vectors) = encode(model, &[text])?;
        let vector = vectors
            .first()
            .ok_or_else(|| MemoryError::Internal("encode returned nothing".into()))?;
        self.update_embedded(&identity, id, scope, text, vector)
    }
}

enum Applied {
    Done(Event),
    TargetGone { op: String, id: Uuid },
}

fn insert_in(
    tx: &mut dyn StoreTx,
    record: Record,
    cause: Option<&Decision>,
) -> MemoryResult<Event> {
    tx.insert(&record)?;
    tx.add_history(&HistoryRow {
        memory_id: record.id,
        event: EventKind::Add,
        old_memory: None,
        new_memory: Some(record.text.clone()),
        fact: Some(record.text.clone()),
        probabilities: cause.map(|d| d.probabilities.clone()),
        head_hash: cause.and_then(|d| d.head_hash.clone()),
        created_at: record.created_at,
    })?;
    Ok(Event {
        id: Some(record.id),
        event: EventKind::Add,
        memory: record.text,
        previous_memory: None,
    })
}

fn decide_and_apply(
    tx: &mut dyn StoreTx,
    decider: Decider<'_>,
    new: Record,
    candidates: &[Record],
) -> MemoryResult<Applied> {
    let memories: Vec<(String, Vec<f32>)> = candidates
        .iter()
        .map(|r| (r.id.to_string(), r.embedding.clone()))
        .collect();
    let action = decider.head.decide(&new.embedding, &memories)?;
    let decision = Decision {
        probabilities: action.probabilities.clone(),
        head_hash: decider.head_hash.map(str::to_string),
    };
    let target = || -> MemoryResult<&Record> {
        let t = action.target.as_deref().ok_or_else(|| {
            MemoryError::Internal(format!("the head chose {} without a target", action.op))
        })?;
        candidates
            .iter()
            .find(|r| r.id.to_string() == t)
            .ok_or_else(|| MemoryError::Internal(format!("the head chose unknown target `{t}`")))
    };
    let event = match action.op.as_str() {
        "ADD" => insert_in(tx, new, Some(&decision))?,
        "NOOP" => Event {
            id: None,
            event: EventKind::Noop,
            memory: new.text,
            previous_memory: None,
        },
        "UPDATE" => {
            let old = target()?;
            if let Some(holder) = tx.find_hash(&old.scope, &new.hash)? {
                // The target's scope already holds the fact: nothing to change.
                return Ok(Applied::Done(Event {
                    id: Some(holder),
                    event: EventKind::Noop,
                    memory: new.text,
                    previous_memory: None,
                }));
            }
            let at = now_micros();
            if !tx.update(old.id, &new.text, &new.hash, &new.embedding, at)? {
                return Ok(Applied::TargetGone {
                    op: action.op.clone(),
                    id: old.id,
                });
            }
            tx.add_history(&HistoryRow {
                memory_id: old.id,
                event: EventKind::Update,
                old_memory: Some(old.text.clone()),
                new_memory: Some(new.text.clone()),
                fact: Some(new.text.clone()),
                probabilities: Some(decision.probabilities.clone()),
                head_hash: decision.head_hash.clone(),
                created_at: at,
            })?;
            Event {
                id: Some(old.id),
                event: EventKind::Update,
                memory: new.text,
                previous_memory: Some(old.text.clone()),
            }
        }
        "DELETE" => {
            let old = target()?;
            if tx.get(old.id)?.is_none() {
                return Ok(Applied::TargetGone {
                    op: action.op.clone(),
                    id: old.id,
                });
            }
            delete_in(tx, old, Some((&new.text, &decision)))?
        }
        other => {
            return Err(MemoryError::Internal(format!(
                "the head chose operation `{other}`, which the bank does not know"
            )))
        }
    };
    Ok(Applied::Done(event))
}
