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
use crate::quant::AffineParams;

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

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
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

    /// Like [`Self::tensor`], but keeps the stored dtype when it is a float type.
    pub fn tensor_stored(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.raw(name, shape)?;
        Ok(match t.dtype() {
            DType::F32 | DType::BF16 | DType::F16 => t,
            _ => t.to_dtype(self.dtype)?,
        })
    }

    /// Like [`Self::tensor`], but `None` when the checkpoint does not have it.
    pub fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.files.contains(name) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The [out, in] shape of one expert's `proj` matrix.
    pub fn expert_shape(&self, proj: ExpertProj) -> (usize, usize) {
        let (h, i) = (self.args.hidden_size, self.args.intermediate_size);
        match proj {
            ExpertProj::Gate | ExpertProj::Up => (i, h),
            ExpertProj::Down => (h, i),
        }
    }

    /// The stacked [E, out, in] weights of one projection of layer `layer`'s experts.
    pub fn experts(&self, layer: usize, proj: ExpertProj) -> Result<Tensor> {
        let (e, (out, inp)) = (self.args.num_experts, self.expert_shape(proj));
        let p = format!("model.layers.{layer}.mlp");
        match self.layout {
            ExpertLayout::SwitchMlp => self.tensor(
                &format!("{p}.switch_mlp.{}.weight", proj.name()),
                &[e, out, inp],
            ),
            ExpertLayout::PerExpert => {
                // Fill the stack expert by expert: no second copy of the whole projection.
                let stack = Tensor::zeros((e, out, inp), self.dtype, &self.device)?;
                self.for_each_expert(layer, proj, |x, m| {
                    Ok(stack.slice_set(&m.unsqueeze(0)?, 0, x)?)
                })?;
                Ok(stack)
            }
            ExpertLayout::FusedGateUp => match proj {
                ExpertProj::Down => self.tensor(&format!("{p}.experts.down_proj"), &[e, out, inp]),
                ExpertProj::Gate | ExpertProj::Up => {
                    // Loaded twice (once per half); the narrow copies only the half needed.
                    let both =
                        self.tensor(&format!("{p}.experts.gate_up_proj"), &[e, 2 * out, inp])?;
                    let start = if proj == ExpertProj::Gate { 0 } else { out };
                    Ok(both.narrow(1, start, out)?.contiguous()?)
                }
            },
        }
    }

    /// Calls `f(expert, matrix)` with each expert's [out, in] matrix in order. In the
    /// per-expert layout each is read only when its turn comes, so a caller that converts them
    /// one by one (quantization) never holds more than one.
    pub fn for_each_expert(
        &self,
        layer: usize,
        proj: ExpertProj,
        mut f: impl FnMut(usize, Tensor) -> Result<()>,
    ) -> Result<()> {
        let (e, (out, inp)) = (self.args.num_experts, self.expert_shape(proj));
        match self.layout {
            ExpertLayout::PerExpert => {
                for x in 0..e {
                    let name = format!(
                        "model.layers.{layer}.mlp.experts.{x}.{}.weight",
                        proj.name()
                    );
                    f(x, self.tensor(&name, &[out, inp])?)?;
                }
            }
            ExpertLayout::SwitchMlp | ExpertLayout::FusedGateUp => {
                let stack = self.experts(layer, proj)?;
                for x in 0..e {
                    f(x, stack.get(x)?)?;
                }
            }
        }
        Ok(())
    }

    /// One [out, in] matrix per expert, all at once.
    pub fn expert_matrices(&self, layer: usize, proj: ExpertProj) -> Result<Vec<Tensor>> {
        let mut mats = Vec::with_capacity(self.args.num_experts);
        self.for_each_expert(layer, proj, |_, m| {
            mats.push(m);
            Ok(())
        })?;
        Ok(mats)
    }

    /// The name of a layer's stacked expert module in the mlx-lm layout.
    pub fn switch_module(layer: usize, proj: ExpertProj) -> String {
        format!("model.layers.{layer}.mlp.switch_mlp.{}", proj.name())
    }

    /// Whether `module` (a name without `.weight`) is stored affine-quantized: it has `.scales`.
    pub fn is_quantized(&self, module: &str) -> bool {
        self.files.contains(&format!("{module}.scales"))
    }

    /// The stored `weight`, `scales` and `biases` of an affine-quantized module, with its
    /// bits and group size from config.json. `lead` are leading dimensions (`[E]` for stacked
    /// experts); `out`/`inp` the logical matrix shape. Shapes are checked here; the packing
    /// itself is checked by the quantized matrix type.
    pub fn quantized(
        &self,
        module: &str,
        lead: &[usize],
        out: usize,
        inp: usize,
    ) -> Result<(Tensor, Tensor, Tensor, AffineParams)> {
        let spec = self
            .args
            .quantization
            .as_ref()
            .ok_or_else(|| {
                Error::tensor(
                    format!("{module}.scales"),
                    "the checkpoint is quantized but config.json has no `quantization` block",
                )
            })?
            .spec(module)
            .ok_or_else(|| {
                Error::tensor(
                    format!("{module}.scales"),
                    "present, but config.json marks this module as not quantized",
                )
            })?;
        if !inp.is_multiple_of(spec.group_size) || !(inp * spec.bits as usize).is_multiple_of(32) {
            return Err(Error::tensor(
                format!("{module}.weight"),
                format!(
                    "{inp} input features do not split into groups of {} at {} bits",
                    spec.group_size, spec.bits
                ),
            ));
        }
        let shape =
            |last: usize| -> Vec<usize> { lead.iter().copied().chain([out, last]).collect() };
        let weight = self.raw(
            &format!("{module}.weight"),
            &shape(inp * spec.bits as usize / 32),
        )?;
        let scales = self.raw(&format!("{module}.scales"), &shape(inp / spec.group_size))?;
        let biases = self.raw(&format!("{module}.biases"), &shape(inp / spec.group_size))?;
        Ok((weight, scales, biases, spec))
    }

    /// Loads `name` in its stored dtype after checking its shape.
    fn raw(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let stored = self.files.shape(name)?;
        if stored != shape {
            return Err(Error::tensor(
                name,
                format!("shape {stored:?} does not match the expected {shape:?}"),
            ));
        }
        self.used.borrow_mut().insert(name.to_string());
        self.files.load(name, &self.device)
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
