//! Scores of a replay: how the bank's end state compares with the ground truth, and how often
//! each fact got the operation it called for.
//!
//! The end state is compared as sets of memory texts, scope by scope, and summed over the
//! scopes (micro-averaged): precision is the share of the memories held that the truth holds
//! (1 when nothing is held), recall the share of the truth's memories that are held (1 when
//! the truth holds nothing), and exact match the share of scopes whose memories equal the
//! truth's exactly.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::stream::StreamOp;

/// Memory texts by scope (user id).
pub type ScopeTexts = BTreeMap<String, BTreeSet<String>>;

/// How the end state compares with the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndStateScore {
    /// Memories held that the truth holds, over memories held.
    pub precision: f64,
    /// Memories held that the truth holds, over the truth's memories.
    pub recall: f64,
    /// Scopes whose memories equal the truth's, over scopes.
    pub exact_match: f64,
    /// Memories held, in every scope.
    pub held: usize,
    /// Memories the truth holds, in every scope.
    pub expected: usize,
    /// Memories held that the truth holds.
    pub correct: usize,
    /// Scopes compared (those of either side).
    pub scopes: usize,
    /// Scopes that match exactly.
    pub exact_scopes: usize,
}

/// Compares the memories `held` with the `truth`, scope by scope.
pub fn score_end_state(truth: &ScopeTexts, held: &ScopeTexts) -> EndStateScore {
    let empty = BTreeSet::new();
    let scopes: BTreeSet<&String> = truth.keys().chain(held.keys()).collect();
    let (mut n_held, mut n_expected, mut n_correct, mut exact) = (0, 0, 0, 0);
    for scope in &scopes {
        let t = truth.get(*scope).unwrap_or(&empty);
        let h = held.get(*scope).unwrap_or(&empty);
        n_held += h.len();
        n_expected += t.len();
        n_correct += h.intersection(t).count();
        exact += usize::from(h == t);
    }
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            1.0
        } else {
            num as f64 / den as f64
        }
    };
    EndStateScore {
        precision: ratio(n_correct, n_held),
        recall: ratio(n_correct, n_expected),
        exact_match: ratio(exact, scopes.len()),
        held: n_held,
        expected: n_expected,
        correct: n_correct,
        scopes: scopes.len(),
        exact_scopes: exact,
    }
}

/// What the bank did with one fact, next to what the fact called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactOutcome {
    /// The operation the fact called for.
    pub expected: StreamOp,
    /// The operation the bank applied.
    pub got: StreamOp,
    /// Whether the bank did the right thing: the same operation and, for UPDATE and DELETE,
    /// on the memory the truth names.
    pub correct: bool,
}

/// How often facts of one operation got the right decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpScore {
    /// Facts that called for the operation.
    pub total: usize,
    /// Those the bank got right.
    pub correct: usize,
    /// `correct / total`; `None` when no fact called for the operation.
    pub accuracy: Option<f64>,
}

/// Every figure of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Facts replayed.
    pub facts: usize,
    /// The end state against the truth.
    pub end_state: EndStateScore,
    /// Facts decided right, over all facts.
    pub accuracy: f64,
    /// Per operation the fact called for (`ADD`, `UPDATE`, `DELETE`, `NOOP`).
    pub operations: BTreeMap<String, OpScore>,
    /// Facts by the operation they called for, then by the operation applied.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
}

/// Scores a replay: its per-fact outcomes and its end state against the truth.
pub fn score(outcomes: &[FactOutcome], truth: &ScopeTexts, held: &ScopeTexts) -> Report {
    let mut operations = BTreeMap::new();
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for op in StreamOp::ALL {
        let of_op = outcomes.iter().filter(|o| o.expected == op);
        let total = of_op.clone().count();
        let correct = of_op.clone().filter(|o| o.correct).count();
        operations.insert(
            op.as_str().to_string(),
            OpScore {
                total,
                correct,
                accuracy: (total > 0).then(|| correct as f64 / total as f64),
            },
        );
        let row = confusion.entry(op.as_str().to_string()).or_default();
        for got in StreamOp::ALL {
            row.insert(
                got.as_str().to_string(),
                of_op.clone().filter(|o| o.got == got).count(),
            );
        }
    }
    let correct = outcomes.iter().filter(|o| o.correct).count();
    Report {
        facts: outcomes.len(),
        end_state: score_end_state(truth, held),
        accuracy: if outcomes.is_empty() {
            0.0
        } else {
            correct as f64 / outcomes.len() as f64
        },
        operations,
        confusion,
    }
}
