//! Rewards for sampled actions of the memory action head.
//!
//! [`Reward`] is the pluggable interface; [`LabelReward`] scores an action against the
//! example's label.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::data::Example;

/// A reward for a sampled action given the example (pluggable).
pub trait Reward: Send + Sync {
    /// The reward of choosing `op` (with `target`, for target operations) on `example`.
    fn reward(&self, example: &Example, op: &str, target: Option<&str>) -> f32;
    /// A short name for logs.
    fn name(&self) -> &str;
}

/// Whether the action matches the label exactly: the same operation and, when the label names
/// a target (the operation needs one), the same target. For operations without a target, the
/// sampled `target` is ignored.
pub fn is_correct(example: &Example, op: &str, target: Option<&str>) -> bool {
    let label = &example.label;
    op == label.op
        && match label.target.as_deref() {
            Some(t) => target == Some(t),
            None => true,
        }
}

/// Reward from the label. Not normalised; the rule is:
///
/// - wrong operation: `wrong_penalty`;
/// - right operation without a target (the label names none): `op_weight`;
/// - right operation with a target: `op_weight`, plus `target_weight` when the target is right.
///
/// So the best reward is `op_weight + target_weight` for target operations and `op_weight` for
/// the others; with the defaults (1, 1, 0) that is 2 and 1, and a wrong action earns 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelReward {
    /// Reward for the right operation. Default 1.
    pub op_weight: f32,
    /// Extra reward for the right target, given only with the right operation. Default 1.
    pub target_weight: f32,
    /// Reward for a wrong operation. Default 0.
    pub wrong_penalty: f32,
}

impl Default for LabelReward {
    fn default() -> Self {
        Self {
            op_weight: 1.0,
            target_weight: 1.0,
            wrong_penalty: 0.0,
        }
    }
}

impl LabelReward {
    /// Checks that every weight is finite. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("op_weight", self.op_weight),
            ("target_weight", self.target_weight),
            ("wrong_penalty", self.wrong_penalty),
        ] {
            if !v.is_finite() {
                return Err(Error::invalid(field, format!("{v} is not finite")));
            }
        }
        Ok(())
    }

    /// The best reward on `example`: `op_weight + target_weight` when its label names a
    /// target, `op_weight` otherwise.
    pub fn max_reward(&self, example: &Example) -> f32 {
        if example.label.target.is_some() {
            self.op_weight + self.target_weight
        } else {
            self.op_weight
        }
    }
}

impl Reward for LabelReward {
    fn reward(&self, example: &Example, op: &str, target: Option<&str>) -> f32 {
        let label = &example.label;
        if op != label.op {
            return self.wrong_penalty;
        }
        match label.target.as_deref() {
            Some(t) if target == Some(t) => self.op_weight + self.target_weight,
            _ => self.op_weight,
        }
    }

    fn name(&self) -> &str {
        "label"
    }
}
