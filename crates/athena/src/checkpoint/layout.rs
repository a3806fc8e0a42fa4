//! On-disk layouts → athena's one canonical layout.
//!
//! Attention, norms and embeddings have the same names in every layout. Experts differ:
//! - HF hub: `mlp.experts.{e}.{gate,up,down}_proj.weight`, one [out, in] matrix per expert;
//! - transformers v5: `mlp.experts.gate_up_proj` [E, 2I, H] (gate rows, then up) and
//!   `mlp.experts.down_proj` [E, H, I];
//! - mlx-lm: `mlp.switch_mlp.{gate,up,down}_proj.weight`, already stacked [E, out, in].
//!
//! The canonical layout is the mlx-lm one: per projection a stacked [E, out, in] tensor.
//! Every tensor is checked for its shape, converted to the compute dtype, and marked as used;
//! [`CheckpointReader::finish`] refuses tensors nobody asked for.

use std::cell::RefCell;
use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};

use super::args::OlmoeArgs;
use super::files::WeightFiles;
use crate::error::{Error, Result};

/// How a checkpoint stores its experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertLayout {
    /// One matrix per expert and projection (the HF hub layout).
    PerExpert,
    /// transformers v5: fused `gate_up_proj` and stacked `down_proj`.
    FusedGateUp,
    /// mlx-lm: `switch_mlp` stacked per projection.
    SwitchMlp,
}

/// One of an expert's three projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertProj {
    /// `gate_proj`: [I, H].
    Gate,
    /// `up_proj`: [I, H].
    Up,
    /// `down_proj`: [H, I].
    Down,
}

impl ExpertProj {
    fn name(self) -> &'static str {
        match self {
            ExpertProj::Gate => "gate_proj",
            ExpertProj::Up => "up_proj",
            ExpertProj::Down => "down_proj",
        }
    }
}

/// Tensors that checkpoints may carry and that athena recomputes instead.
fn ignorable(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// Reads a checkpoint's tensors by their HF names, in the canonical layout.
pub struct CheckpointReader<'a> {
    files: &'a WeightFiles,
    args: &'a OlmoeArgs,
    layout: ExpertLayout,
    device: Device,
    dtype: DType,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> CheckpointReader<'a> {
    /// Detects the expert layout from layer 0 and prepares to read in `dtype` on `device`.
    pub fn new(
        files: &'a WeightFiles,
        args: &'a OlmoeArgs,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let p = "model.layers.0.mlp";
        let layout = if files.contains(&format!("{p}.switch_mlp.gate_proj.weight")) {
            ExpertLayout::SwitchMlp
        } else if files.contains(&format!("{p}.experts.gate_up_proj")) {
            ExpertLayout::FusedGateUp
        } else if files.contains(&format!("{p}.experts.0.gate_proj.weight")) {
            ExpertLayout::PerExpert
        } else {
            return Err(Error::tensor(
                format!("{p}.experts"),
                format!(
                    "no experts found in layer 0 of {} (looked for the HF per-expert, transformers-v5 fused and mlx-lm switch_mlp layouts)",
                    files.origin().display()
                ),
            ));
        };
        tracing::debug!(?layout, "expert layout");
        Ok(CheckpointReader {
            files,
            args,
            layout,
            device: device.clone(),
            dtype,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// The layout detected.
    pub fn layout(&self) -> ExpertLayout {
        self.layout
    }

    /// Loads `name`, checks it has `shape`, converts it to the compute dtype.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let stored = self.files.shape(name)?;
        if stored != shape {
            let file = self.files.path_of(name).unwrap_or(self.files.origin());
            return Err(Error::tensor(
                name,
                format!(
                    "shape {stored:?} in {} does not match the config's {shape:?}",
                    file.display()
                ),
            ));
        }
        self.used.borrow_mut().insert(name.to_string());
        let t = self.files.load(name, &self.device)?;
        Ok(t.to_dtype(self.dtype)?)
    }

    /// Like [`Self::tensor`], but `None` when the checkpoint does not have it.
    pub fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.files.contains(name) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The stacked [E, out, in] weights of one projection of layer `layer`'s experts.
    pub fn experts(&self, layer: usize, proj: ExpertProj) -> Result<Tensor> {
        let (e, h, i) = (
            self.args.num_experts,
            self.args.hidden_size,
            self.args.intermediate_size,
        );
        let (out, inp) = match proj {
            ExpertProj::Gate | ExpertProj::Up => (i, h),
            ExpertProj::Down => (h, i),
        };
        let p = format!("model.layers.{layer}.mlp");
        match self.layout {
            ExpertLayout::SwitchMlp => self.tensor(
                &format!("{p}.switch_mlp.{}.weight", proj.name()),
                &[e, out, inp],
            ),
            ExpertLayout::PerExpert => {
                let mats = (0..e)
                    .map(|x| {
                        self.tensor(
                            &format!("{p}.experts.{x}.{}.weight", proj.name()),
                            &[out, inp],
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::stack(&mats, 0)?)
            }
            ExpertLayout::FusedGateUp => match proj {
                ExpertProj::Down => self.tensor(&format!("{p}.experts.down_proj"), &[e, h, i]),
                ExpertProj::Gate | ExpertProj::Up => {
                    // Loaded twice (once per half); the narrow copies only the half needed.
                    let both = self.tensor(&format!("{p}.experts.gate_up_proj"), &[e, 2 * i, h])?;
                    let start = if proj == ExpertProj::Gate { 0 } else { i };
                    Ok(both.narrow(1, start, i)?.contiguous()?)
                }
            },
        }
    }

    /// Refuses any tensor that was not read: a checkpoint with extra tensors is not the model
    /// the config describes.
    pub fn finish(self) -> Result<()> {
        let used = self.used.into_inner();
        let extra: Vec<&str> = self
            .files
            .names()
            .filter(|n| !used.contains(*n) && !ignorable(n))
            .collect();
        match extra.as_slice() {
            [] => Ok(()),
            [first, rest @ ..] => Err(Error::tensor(
                *first,
                format!(
                    "unexpected tensor in {}{} (does config.json match the weights?)",
                    self.files
                        .path_of(first)
                        .unwrap_or(self.files.origin())
                        .display(),
                    if rest.is_empty() {
                        String::new()
                    } else {
                        format!(" (and {} more)", rest.len())
                    }
                ),
            )),
        }
    }
}
