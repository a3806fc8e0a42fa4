//! [`MemoryActionHead`]: the parameters and how a head comes to be (fresh, copied, or from
//! tensors read elsewhere), and the types of what it answers.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::config::{check_dims, ActionHeadConfig};
use super::params::{per_param, Param, PARAM_COUNT};
use crate::error::Result;

/// The head's decision for one fact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// The chosen operation (the most probable one; the first on ties).
    pub op: String,
    /// The id of the memory the operation names, for target operations; `None` otherwise.
    pub target: Option<String>,
    /// Probability of every operation; they sum to 1.
    pub probabilities: BTreeMap<String, f32>,
    /// Probability of every candidate memory as the target, by id; they sum to 1. Filled
    /// whenever there are memories, whatever the operation; empty when there are none.
    pub target_probabilities: BTreeMap<String, f32>,
}

/// The head's raw, differentiable scores for one fact.
#[derive(Debug, Clone)]
pub struct HeadScores {
    /// Operation logits, `[n_ops]`, in the order of [`ActionHeadConfig::operations`]; target
    /// operations are [`MASKED_LOGIT`] when there are no memories.
    pub op_logits: Tensor,
    /// Target logits, `[M]`, one per memory; `None` when there are no memories.
    pub target_logits: Option<Tensor>,
}

/// The head's raw, differentiable scores for a batch of facts
/// ([`MemoryActionHead::batch_scores`]).
#[derive(Debug, Clone)]
pub struct BatchScores {
    /// Operation logits, `[B, n_ops]`; target operations are [`MASKED_LOGIT`] for examples
    /// without memories.
    pub op_logits: Tensor,
    /// Target logits, `[B, M]`, padding [`MASKED_LOGIT`]; `None` when `M` is 0.
    pub target_logits: Option<Tensor>,
}

/// The logit of what cannot be chosen: finite, so that gradients stay finite, and so far
/// below any real logit that its probability is exactly 0 in f32.
pub const MASKED_LOGIT: f32 = -1e30;

/// Decides what to do with a new fact given the memories held: see the [module
/// documentation](super) for the architecture.
pub struct MemoryActionHead {
    config: ActionHeadConfig,
    input_dim: usize,
    device: Device,
    varmap: VarMap,
    /// The variables' tensors, indexed by [`Param::index`].
    params: [Tensor; PARAM_COUNT],
}

impl std::fmt::Debug for MemoryActionHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryActionHead")
            .field("config", &self.config)
            .field("input_dim", &self.input_dim)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl MemoryActionHead {
    /// A freshly initialised head over inputs of width `input_dim`. Every parameter is drawn
    /// uniformly from `(-1/√fan_in, 1/√fan_in)`, as torch's `Linear` does, from a
    /// [`StdRng`] seeded with [`ActionHeadConfig::seed`]: the same seed gives the same head
    /// (for a given version of `rand`).
    pub fn new(config: ActionHeadConfig, input_dim: usize, device: &Device) -> Result<Self> {
        config.validate()?;
        check_dims(&config, input_dim)?;
        let dims = config.dims(input_dim);
        let mut rng = StdRng::seed_from_u64(config.seed);
        let tensors = per_param(|param| {
            let bound = 1.0 / (param.fan_in(dims) as f32).sqrt();
            let shape = param.shape(dims);
            let numel = shape.iter().product();
            let values: Vec<f32> = (0..numel)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            Ok(Tensor::from_vec(values, shape, device)?)
        })?;
        Self::from_tensors(config, input_dim, tensors, device)
    }

    /// Puts the tensors, indexed by [`Param::index`], into a fresh [`VarMap`] under the
    /// parameters' names and builds the layers over the variables, so that updates to the
    /// variables are seen by the head. The caller has checked the shapes.
    pub(crate) fn from_tensors(
        config: ActionHeadConfig,
        input_dim: usize,
        tensors: [Tensor; PARAM_COUNT],
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let params = {
            let mut data = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
            per_param(|param| {
                let var = Var::from_tensor(&tensors[param.index()])?;
                let tensor = var.as_tensor().clone();
                data.insert(param.name().to_string(), var);
                Ok(tensor)
            })?
        };
        Ok(Self {
            config,
            input_dim,
            device: device.clone(),
            varmap,
            params,
        })
    }

    /// A copy of the head with parameters of its own, equal to the head's now: later updates
    /// of either leave the other alone (the frozen reference of the GRPO KL penalty).
    pub fn frozen_copy(&self) -> Result<Self> {
        let tensors = per_param(|param| Ok(self.param(param).copy()?))?;
        Self::from_tensors(self.config.clone(), self.input_dim, tensors, &self.device)
    }

    /// The configuration the head was built with.
    pub fn config(&self) -> &ActionHeadConfig {
        &self.config
    }

    /// Width of the hidden states the head reads.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable parameters, by the names given in the [module documentation](super).
    /// Updating a variable in place (as candle's optimisers do) updates the head.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The tensor of one parameter (a variable of [`Self::varmap`]).
    pub(crate) fn param(&self, param: Param) -> &Tensor {
        &self.params[param.index()]
    }
}
