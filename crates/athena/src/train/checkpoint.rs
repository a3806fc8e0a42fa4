//! Training checkpoints: one safetensors file, written atomically, holding the head's
//! parameters (`head.<name>`), AdamW's moments (`adam.m.<name>`, `adam.v.<name>`), the frozen
//! reference head when the run keeps its own (`ref.<name>`), and in the metadata, as JSON,
//! the step, the AdamW step count, the random generator's state, the data order and cursor,
//! the hyper-parameters and the history so far. Resuming from it continues the run bit for
//! bit: the same batches, the same samples, the same updates.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::action_head::{ActionHeadConfig, MemoryActionHead};
use crate::train::optim::AdamW;
use crate::train::trainer::{sorted_vars, Progress, TrainConfig};

/// File name of a checkpoint in its directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// Version of the checkpoint format.
const FORMAT_VERSION: u32 = 1;

/// The JSON metadata of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format_version: u32,
    config: TrainConfig,
    head_config: ActionHeadConfig,
    input_dim: usize,
    train_examples: usize,
    adam_t: u64,
    has_reference: bool,
    progress: Progress,
}

/// A checkpoint read from disk.
pub(crate) struct Checkpoint {
    state: State,
    tensors: HashMap<String, Tensor>,
    pub(crate) progress: Progress,
}

fn to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

/// Writes the checkpoint of a run atomically to `path`.
pub(crate) fn write(
    path: &Path,
    head: &MemoryActionHead,
    opt: &AdamW,
    reference: Option<&MemoryActionHead>,
    cfg: &TrainConfig,
    progress: &Progress,
) -> Result<()> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, var) in sorted_vars(head) {
        buffers.push((
            format!("head.{name}"),
            var.dims().to_vec(),
            to_bytes(var.as_tensor())?,
        ));
    }
    for (name, m, v) in opt.moments()? {
        buffers.push((format!("adam.m.{name}"), m.dims().to_vec(), to_bytes(&m)?));
        buffers.push((format!("adam.v.{name}"), v.dims().to_vec(), to_bytes(&v)?));
    }
    if let Some(r) = reference {
        for (name, var) in sorted_vars(r) {
            buffers.push((
                format!("ref.{name}"),
                var.dims().to_vec(),
                to_bytes(var.as_tensor())?,
            ));
        }
    }
    let state = State {
        format_version: FORMAT_VERSION,
        config: cfg.clone(),
        head_config: head.config().clone(),
        input_dim: head.input_dim(),
        train_examples: progress.order.len(),
        adam_t: opt.t(),
        has_reference: reference.is_some(),
        progress: progress.clone(),
    };
    let json = serde_json::to_string(&state)
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .and_then(|views| {
            safetensors::serialize(views, Some(HashMap::from([("state".to_string(), json)])))
        })
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    crate::io::write_atomic(path, |tmp| {
        std::fs::write(tmp, &views).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
}

impl Checkpoint {
    /// Reads and checks a checkpoint file; errors name the file and the tensor or field.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |msg: String| Error::checkpoint(path, msg);
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("state"))
            .ok_or_else(|| bad("no `state` in the metadata".into()))?;
        let state: State = serde_json::from_str(json).map_err(|e| bad(format!("`state`: {e}")))?;
        if state.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is not supported (expected {FORMAT_VERSION})",
                state.format_version
            )));
        }
        let p = &state.progress;
        let mut sorted = p.order.clone();
        sorted.sort_unstable();
        if sorted.iter().enumerate().any(|(i, &x)| i != x)
            || p.cursor > p.order.len()
            || p.history.len() != p.step
        {
            return Err(bad("`state.progress` is inconsistent".into()));
        }
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "tensor `{name}` has a value that is not finite"
                )));
            }
            let t = Tensor::from_vec(values, view.shape(), &candle_core::Device::Cpu)?;
            tensors.insert(name, t);
        }
        let progress = state.progress.clone();
        Ok(Self {
            state,
            tensors,
            progress,
        })
    }

    /// Refuses to resume a different run: other hyper-parameters (but for `steps`), another
    /// head, another training set size.
    pub(crate) fn check_compatible(
        &self,
        path: &Path,
        head: &MemoryActionHead,
        cfg: &TrainConfig,
        train_examples: usize,
    ) -> Result<()> {
        let s = &self.state;
        let bad = |what: &str| {
            Error::checkpoint(
                path,
                format!("cannot resume: the checkpoint was written with another {what}"),
            )
        };
        let same_cfg = TrainConfig {
            steps: cfg.steps,
            ..s.config.clone()
        };
        if &same_cfg != cfg {
            return Err(bad("training configuration"));
        }
        if &s.head_config != head.config() || s.input_dim != head.input_dim() {
            return Err(bad("head configuration or input width"));
        }
        if s.train_examples != train_examples {
            return Err(bad("training set size"));
        }
        if s.progress.step > cfg.steps {
            return Err(bad(&format!(
                "step count: it is at step {}, past --steps {}",
                s.progress.step, cfg.steps
            )));
        }
        Ok(())
    }

    fn take(&self, path: &Path, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::checkpoint(path, format!("tensor `{name}` is missing")))
    }

    /// Sets the head's parameters and the optimiser's state; returns the reference head the
    /// run kept, if it kept one.
    pub(crate) fn restore(
        &self,
        path: &Path,
        head: &MemoryActionHead,
        opt: &mut AdamW,
    ) -> Result<Option<MemoryActionHead>> {
        for (name, var) in sorted_vars(head) {
            let t = self.take(path, &format!("head.{name}"))?;
            if t.dims() != var.dims() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "tensor `head.{name}` has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_device(head.device())?)?;
        }
        let device = head.device().clone();
        opt.restore(self.state.adam_t, |name| {
            Ok((
                self.take(path, &format!("adam.m.{name}"))?
                    .to_device(&device)?,
                self.take(path, &format!("adam.v.{name}"))?
                    .to_device(&device)?,
            ))
        })
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        if !self.state.has_reference {
            return Ok(None);
        }
        let reference = head.frozen_copy()?;
        for (name, var) in sorted_vars(&reference) {
            let t = self.take(path, &format!("ref.{name}"))?;
            if t.dims() != var.dims() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "tensor `ref.{name}` has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_device(&device)?)?;
        }
        Ok(Some(reference))
    }
}
