//! Replaying a stream into a bank: each fact goes through the bank's own `add` path (encoded,
//! its candidates retrieved from the bank, the decision applied in one transaction), one
//! fact at a time in stream order, each into its user's scope.

use std::collections::BTreeSet;

use super::metrics::{score, FactOutcome, Report, ScopeTexts};
use super::stream::{fold, StreamFact, StreamOp};
use crate::memory::add::{model_identity, Decider};
use crate::memory::bank::MemoryBank;
use crate::memory::error::{MemoryError, MemoryResult};
use crate::memory::types::{Event, EventKind, Metadata, Scope};
use crate::models::olmoe::OlmoeModel;

/// How many facts are encoded in one batch.
pub const ENCODE_BATCH: usize = 32;

/// Who decides what to do with each fact.
#[derive(Debug, Clone, Copy)]
pub enum Strategy<'a> {
    /// Every new fact is added (`infer = false`; mem0 v3's strategy).
    AlwaysAdd,
    /// An action head decides among the fact's retrieved candidates.
    Head(Decider<'a>),
}

impl Strategy<'_> {
    fn decider(&self) -> Option<Decider<'_>> {
        match self {
            Strategy::AlwaysAdd => None,
            Strategy::Head(d) => Some(*d),
        }
    }
}

/// What a replay left: per-fact outcomes and every scope's memories at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// One per fact, in stream order.
    pub outcomes: Vec<FactOutcome>,
    /// The bank's memory texts per user at the end.
    pub held: ScopeTexts,
}

/// Judges the bank's event for `fact`.
pub fn outcome(fact: &StreamFact, event: &Event) -> FactOutcome {
    let got = match event.event {
        EventKind::Add => StreamOp::Add,
        EventKind::Update => StreamOp::Update,
        EventKind::Delete => StreamOp::Delete,
        EventKind::Noop => StreamOp::Noop,
    };
    let target = fact.target.as_deref();
    let correct = got == fact.op
        && match got {
            StreamOp::Update => event.previous_memory.as_deref() == target,
            StreamOp::Delete => Some(event.memory.as_str()) == target,
            StreamOp::Add | StreamOp::Noop => true,
        };
    FactOutcome {
        expected: fact.op,
        got,
        correct,
    }
}

/// Every memory text of `user` in `bank`.
pub fn scope_texts(bank: &mut MemoryBank, user: &str) -> MemoryResult<BTreeSet<String>> {
    const PAGE: u64 = 1000;
    let scope = Scope::user(user);
    let mut texts = BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = bank.get_all(&scope, offset, PAGE)?;
        let n = page.len() as u64;
        texts.extend(page.into_iter().map(|r| r.text));
        if n < PAGE {
            return Ok(texts);
        }
        offset += n;
    }
}

/// Replays `facts` into `bank`, which must hold no memory of the stream's users.
/// `progress` is called with the number of facts done after each one.
pub fn replay(
    bank: &mut MemoryBank,
    model: &OlmoeModel,
    facts: &[StreamFact],
    strategy: Strategy<'_>,
    progress: &mut dyn FnMut(usize),
) -> MemoryResult<Replay> {
    let users: BTreeSet<&str> = facts.iter().map(|f| f.user_id.as_str()).collect();
    for user in &users {
        if !bank.get_all(&Scope::user(*user), 0, 1)?.is_empty() {
            return Err(MemoryError::invalid(
                "bank",
                format!(
                    "{} already holds memories of user `{user}`; replay into a fresh bank",
                    bank.location()
                ),
            ));
        }
    }
    let mut outcomes = Vec::with_capacity(facts.len());
    for chunk in facts.chunks(ENCODE_BATCH) {
        let texts: Vec<&str> = chunk.iter().map(|f| f.fact.as_str()).collect();
        let vectors = model.encode(&texts)?;
        let width = vectors.first().map_or(0, Vec::len);
        let identity = model_identity(model, width);
        for (fact, vector) in chunk.iter().zip(&vectors) {
            let events = bank.add_embedded(
                &identity,
                &[fact.fact.as_str()],
                std::slice::from_ref(vector),
                &Scope::user(&fact.user_id),
                &Metadata::new(),
                strategy.decider(),
            )?;
            let event = events
                .first()
                .ok_or_else(|| MemoryError::Internal("add returned no event".into()))?;
            outcomes.push(outcome(fact, event));
            progress(outcomes.len());
        }
    }
    let mut held = ScopeTexts::new();
    for user in users {
        held.insert(user.to_string(), scope_texts(bank, user)?);
    }
    Ok(Replay { outcomes, held })
}

/// Replays `facts` into `bank` and scores the end state against the stream's ground truth.
pub fn evaluate(
    bank: &mut MemoryBank,
    model: &OlmoeModel,
    facts: &[StreamFact],
    strategy: Strategy<'_>,
    progress: &mut dyn FnMut(usize),
) -> MemoryResult<Report> {
    let truth = fold(facts)
        .map_err(|msg| MemoryError::invalid("stream", msg))?
        .texts();
    let replayed = replay(bank, model, facts, strategy, progress)?;
    Ok(score(&replayed.outcomes, &truth, &replayed.held))
}
