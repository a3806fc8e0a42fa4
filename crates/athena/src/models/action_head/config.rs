//! [`ActionHeadConfig`]: what the head decides between and how wide it is, and the checks
//! that keep a configuration (and a head's size) within what can be built.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::params::{HeadDims, Param};
use crate::error::{Error, Result};

/// Largest accepted [`ActionHeadConfig::proj_dim`].
const MAX_PROJ_DIM: usize = 65536;
/// Largest accepted input width.
const MAX_INPUT_DIM: usize = 1 << 20;
/// Largest accepted number of parameters (1 GiB of f32).
const MAX_PARAMETERS: usize = 1 << 28;

/// What the head decides between, and how wide it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionHeadConfig {
    /// The operations, in logit order. Default `["ADD", "UPDATE", "DELETE", "NOOP"]`.
    pub operations: Vec<String>,
    /// The operations that name an existing memory; a subset of `operations` that leaves at
    /// least one operation out, so that a fact with no memories still has a decision.
    /// Default `["UPDATE", "DELETE"]`.
    pub target_operations: Vec<String>,
    /// Width of the shared projection. Default 64: on the fixture's synthetic memory task a
    /// fresh head of width 64 trains to 0.93 held-out accuracy with GRPO (128: 0.95, 256:
    /// 0.77) at a quarter of the cost of 256 a step; SFT reaches 0.98 at any of these.
    pub proj_dim: usize,
    /// Seed of the initialisation. Default 0.
    pub seed: u64,
}

impl Default for ActionHeadConfig {
    fn default() -> Self {
        Self {
            operations: ["ADD", "UPDATE", "DELETE", "NOOP"]
                .map(String::from)
                .to_vec(),
            target_operations: ["UPDATE", "DELETE"].map(String::from).to_vec(),
            proj_dim: 64,
            seed: 0,
        }
    }
}

impl ActionHeadConfig {
    /// Checks that the operations are non-empty and unique, that the target operations are a
    /// proper subset of them, and that `proj_dim` is in `1..=65536`. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.operations.is_empty() {
            return Err(Error::invalid(
                "operations",
                "must name at least one operation",
            ));
        }
        let mut ops = HashSet::new();
        for op in &self.operations {
            if op.is_empty() {
                return Err(Error::invalid("operations", "an operation name is empty"));
            }
            if !ops.insert(op.as_str()) {
                return Err(Error::invalid(
                    "operations",
                    format!("`{op}` appears more than once"),
                ));
            }
        }
        let mut targets = HashSet::new();
        for op in &self.target_operations {
            if !ops.contains(op.as_str()) {
                return Err(Error::invalid(
                    "target_operations",
                    format!("`{op}` is not one of operations {:?}", self.operations),
                ));
            }
            if !targets.insert(op.as_str()) {
                return Err(Error::invalid(
                    "target_operations",
                    format!("`{op}` appears more than once"),
                ));
            }
        }
        if targets.len() == ops.len() {
            return Err(Error::invalid(
                "target_operations",
                "every operation needs a target memory; at least one must not, \
                 so that a fact with no memories still has a decision",
            ));
        }
        if !(1..=MAX_PROJ_DIM).contains(&self.proj_dim) {
            return Err(Error::invalid(
                "proj_dim",
                format!("{} is outside 1..={MAX_PROJ_DIM}", self.proj_dim),
            ));
        }
        Ok(())
    }

    /// Whether `op` names an existing memory.
    pub(crate) fn is_target(&self, op: &str) -> bool {
        self.target_operations.iter().any(|t| t == op)
    }

    /// The parameters' dimensions of a head of this configuration over inputs of width
    /// `input_dim`.
    pub(crate) fn dims(&self, input_dim: usize) -> HeadDims {
        HeadDims {
            input: input_dim,
            proj: self.proj_dim,
            ops: self.operations.len(),
        }
    }
}

/// Refuses an input width, or a head size, that could not reasonably be allocated.
pub(crate) fn check_dims(config: &ActionHeadConfig, input_dim: usize) -> Result<()> {
    if !(1..=MAX_INPUT_DIM).contains(&input_dim) {
        return Err(Error::invalid(
            "input_dim",
            format!("{input_dim} is outside 1..={MAX_INPUT_DIM}"),
        ));
    }
    let dims = config.dims(input_dim);
    let total = Param::ALL
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.numel(dims)?));
    match total {
        Some(n) if n <= MAX_PARAMETERS => Ok(()),
        _ => Err(Error::invalid(
            "proj_dim",
            format!(
                "a head with proj_dim {} over input_dim {input_dim} would hold more than \
                 {MAX_PARAMETERS} parameters",
                config.proj_dim
            ),
        )),
    }
}
