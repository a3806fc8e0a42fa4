//! Greedy actions of the head on a batch, and [`evaluate`]: greedy accuracy and mean reward
//! on a set of examples.

use crate::error::{Error, Result};
use crate::models::action_head::MemoryActionHead;
use crate::train::data::Example;
use crate::train::features::FeatureStore;
use crate::train::log::Evaluation;
use crate::train::reward::{is_correct, Reward};

/// Examples scored per pass when evaluating.
const EVAL_BATCH: usize = 256;

/// Index of the largest value, the first on ties (as [`MemoryActionHead::decide`]).
fn argmax(values: &[f32]) -> usize {
    crate::generate::argmax(values) as usize
}

pub(crate) fn op_index(head: &MemoryActionHead, op: &str) -> Result<usize> {
    head.config()
        .operations
        .iter()
        .position(|o| o == op)
        .ok_or_else(|| Error::invalid("label", format!("operation `{op}` is not the head's")))
}

pub(crate) fn is_target_op(head: &MemoryActionHead, op: &str) -> bool {
    head.config().target_operations.iter().any(|t| t == op)
}

/// Greedy actions `(op, target)` of every example of a batch, from its operation logits
/// `[B, n]` and target logits `[B, M]` (row-major).
pub(crate) fn greedy(
    head: &MemoryActionHead,
    batch: &[&Example],
    op_logits: &[f32],
    target_logits: &[f32],
    m: usize,
) -> Vec<(String, Option<String>)> {
    let ops = &head.config().operations;
    let n = ops.len();
    let mut out = Vec::with_capacity(batch.len());
    for (i, ex) in batch.iter().enumerate() {
        let op = ops[argmax(&op_logits[i * n..(i + 1) * n])].clone();
        let mut target = None;
        if is_target_op(head, &op) && !ex.memories.is_empty() && m > 0 {
            let row = &target_logits[i * m..i * m + ex.memories.len().min(m)];
            target = ex.memories.get(argmax(row)).map(|m| m.id.clone());
        }
        out.push((op, target));
    }
    out
}

/// Greedy accuracy and mean reward of `head` on `examples` (zeros when there are none),
/// encoding the texts not held yet.
pub fn evaluate(
    head: &MemoryActionHead,
    features: &mut FeatureStore,
    examples: &[Example],
    reward: &dyn Reward,
) -> Result<Evaluation> {
    if examples.is_empty() {
        return Ok(Evaluation {
            accuracy: 0.0,
            reward: 0.0,
        });
    }
    features.ensure_examples(examples)?;
    let (mut correct, mut total) = (0usize, 0f64);
    for chunk in examples.chunks(EVAL_BATCH) {
        let batch: Vec<&Example> = chunk.iter().collect();
        let (facts, memories, counts) = features.batch(&batch)?;
        let s = head.batch_scores(&facts, &memories, &counts)?;
        let ops = s.op_logits.flatten_all()?.to_vec1::<f32>()?;
        let (targets, m) = match &s.target_logits {
            Some(t) => (t.flatten_all()?.to_vec1::<f32>()?, t.dim(1)?),
            None => (Vec::new(), 0),
        };
        for (ex, (op, target)) in batch.iter().zip(greedy(head, &batch, &ops, &targets, m)) {
            correct += usize::from(is_correct(ex, &op, target.as_deref()));
            total += f64::from(reward.reward(ex, &op, target.as_deref()));
        }
    }
    let n = examples.len() as f64;
    Ok(Evaluation {
        accuracy: (correct as f64 / n) as f32,
        reward: (total / n) as f32,
    })
}
