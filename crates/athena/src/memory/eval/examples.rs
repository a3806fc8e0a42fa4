//! Training examples drawn from a stream: the ground truth is replayed into a bank, and each
//! fact the head would decide becomes an example whose memories are the candidates the
//! bank's retrieval gives for it, at that point of the stream, labelled with the truth.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use super::replay::ENCODE_BATCH;
use super::stream::{fold, StreamFact, StreamOp};
use crate::memory::add::model_identity;
use crate::memory::bank::{retrieve, MemoryBank};
use crate::memory::error::{MemoryError, MemoryResult};
use crate::memory::types::{content_hash, Metadata, Record, Scope};
use crate::models::olmoe::{Memory, OlmoeModel};
use crate::train::data::{Example, Label};

/// What drawing examples from a stream did with its facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExampleStats {
    /// Facts in the stream.
    pub facts: usize,
    /// Examples written.
    pub examples: usize,
    /// Examples by operation.
    pub by_op: BTreeMap<String, usize>,
    /// Facts left out because their text is already held: the bank answers those NOOP
    /// without the head.
    pub known: usize,
    /// UPDATE and DELETE facts left out because retrieval did not give their target among
    /// the candidates, so no head could choose it.
    pub target_not_retrieved: usize,
}

/// The records the bank's retrieval gives as `fact`'s candidates in `scope`, best first.
pub fn candidates(
    bank: &mut MemoryBank,
    scope: &Scope,
    fact: &str,
    vector: &[f32],
) -> MemoryResult<Vec<Record>> {
    let k = bank.config.candidates;
    let retrieval = bank.config.retrieval.clone();
    let mut records = Vec::new();
    let index = &mut bank.index;
    bank.store.read(&mut |tx| {
        records.clear();
        for (id, _) in retrieve(tx, Some(&mut *index), scope, fact, vector, k, &retrieval)?
            .into_iter()
            .take(k)
        {
            if let Some(r) = tx.get(id)? {
                records.push(r);
            }
        }
        Ok(())
    })?;
    Ok(records)
}

/// Replays the ground truth of `facts` into `bank` (which must hold no memory of their
/// users) and returns an example per fact the head would decide, with its candidates as
/// `m1`, `m2`, ... in retrieval order.
pub fn stream_examples(
    bank: &mut MemoryBank,
    model: &OlmoeModel,
    facts: &[StreamFact],
) -> MemoryResult<(Vec<Example>, ExampleStats)> {
    fold(facts).map_err(|msg| MemoryError::invalid("stream", msg))?;
    for f in facts {
        if !bank.get_all(&Scope::user(&f.user_id), 0, 1)?.is_empty() {
            return Err(MemoryError::invalid(
                "bank",
                format!(
                    "{} already holds memories of user `{}`; use a fresh bank",
                    bank.location(),
                    f.user_id
                ),
            ));
        }
    }
    let mut stats = ExampleStats {
        facts: facts.len(),
        ..ExampleStats::default()
    };
    let mut examples = Vec::new();
    // Per (user, slot key): the id of the memory the truth holds there.
    let mut ids: BTreeMap<(String, String), Uuid> = BTreeMap::new();
    for chunk in facts.chunks(ENCODE_BATCH) {
        let texts: Vec<&str> = chunk.iter().map(|f| f.fact.as_str()).collect();
        let vectors = model.encode(&texts)?;
        let identity = model_identity(model, vectors.first().map_or(0, Vec::len));
        for (f, vector) in chunk.iter().zip(&vectors) {
            let scope = Scope::user(&f.user_id);
            let slot = (f.user_id.clone(), f.key.clone());
            let known = candidates_hold(bank, &scope, &f.fact)?;
            if known {
                stats.known += 1;
            } else {
                let found = candidates(bank, &scope, &f.fact, vector)?;
                match example(f, &found) {
                    Some(e) => {
                        *stats.by_op.entry(f.op.as_str().to_string()).or_default() += 1;
                        examples.push(e);
                    }
                    None => stats.target_not_retrieved += 1,
                }
            }
            let held = || {
                ids.get(&slot)
                    .copied()
                    .ok_or_else(|| MemoryError::Internal(format!("no memory for `{}`", f.key)))
            };
            match f.op {
                StreamOp::Add => {
                    let events = bank.add_embedded(
                        &identity,
                        &[f.fact.as_str()],
                        std::slice::from_ref(vector),
                        &scope,
                        &Metadata::new(),
                        None,
                    )?;
                    let id = events.first().and_then(|e| e.id).ok_or_else(|| {
                        MemoryError::Internal(format!("adding `{}` gave no id", f.fact))
                    })?;
                    ids.insert(slot, id);
                }
                StreamOp::Update => {
                    let id = held()?;
                    bank.update_embedded(&identity, id, Some(&scope), &f.fact, vector)?;
                }
                StreamOp::Delete => {
                    let id = held()?;
                    bank.delete(id, Some(&scope))?;
                    ids.remove(&slot);
                }
                StreamOp::Noop => {}
            }
        }
    }
    stats.examples = examples.len();
    Ok((examples, stats))
}

/// Whether `scope` already holds `text` (the bank decides such a fact without the head).
fn candidates_hold(bank: &mut MemoryBank, scope: &Scope, text: &str) -> MemoryResult<bool> {
    let hash = content_hash(text);
    let mut found = false;
    bank.store.read(&mut |tx| {
        found = tx.find_hash(scope, &hash)?.is_some();
        Ok(())
    })?;
    Ok(found)
}

/// The example for `fact` among `found`; `None` when its target is not among them.
fn example(fact: &StreamFact, found: &[Record]) -> Option<Example> {
    let memories: Vec<Memory> = found
        .iter()
        .enumerate()
        .map(|(i, r)| Memory {
            id: format!("m{}", i + 1),
            text: r.text.clone(),
        })
        .collect();
    let target = match &fact.target {
        Some(t) => Some(memories.iter().find(|m| m.text == *t)?.id.clone()),
        None => None,
    };
    Some(Example {
        fact: fact.fact.clone(),
        memories,
        label: Label {
            op: fact.op.as_str().to_string(),
            target,
        },
    })
}
