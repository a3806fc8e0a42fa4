//! Training checkpoints, from which a run resumes bit for bit: the same batches, the same
//! samples, the same updates.
//!
//! A checkpoint is two files in the run's directory, each written so that a crash leaves a
//! readable pair:
//!
//! - [`CHECKPOINT_FILE`], written atomically: the head's parameters (`head.<name>`), AdamW's
//!   moments (`adam.m.<name>`, `adam.v.<name>`) and the frozen reference head when the run
//!   keeps its own (`ref.<name>`), all f32; the run's counters (`run.counters`: step, random
//!   generator state, cursor, epoch, AdamW step, and the length and hash of the history that
//!   belongs to it) and data order (`run.order`) as u64 tensors; and in the metadata, as JSON,
//!   what stays the same through the run (format version, hyper-parameters, head
//!   configuration, training set size, the initial evaluation). Nothing in its header grows
//!   with the steps.
//! - [`HISTORY_FILE`]: one JSON [`StepLog`] a line, from step 1 (the step that completed an
//!   epoch carries its [`EpochLog`]). The first checkpoint of a process writes it whole and
//!   atomically; later ones append the new steps. The checkpoint names the prefix that is
//!   its own, so lines a crash left after it are ignored.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::models::action_head::{ActionHeadConfig, MemoryActionHead};
use crate::train::config::TrainConfig;
use crate::train::log::{EpochLog, StepLog};
use crate::train::optim::AdamW;
use crate::train::state::{sorted_vars, Progress};

/// File name of a checkpoint in its directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of a checkpoint's step history in its directory.
pub const HISTORY_FILE: &str = "checkpoint_history.jsonl";
/// Version of the checkpoint format.
const FORMAT_VERSION: u32 = 2;
/// The u64 tensor of the run's counters ([`Counters`]).
const COUNTERS_TENSOR: &str = "run.counters";
/// The u64 tensor of the data order.
const ORDER_TENSOR: &str = "run.order";

/// The JSON metadata of a checkpoint: what stays the same through a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format_version: u32,
    config: TrainConfig,
    head_config: ActionHeadConfig,
    input_dim: usize,
    train_examples: usize,
    has_reference: bool,
    initial_eval_accuracy: f32,
}

/// The run's counters, stored in this order as [`COUNTERS_TENSOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    step: u64,
    rng: u64,
    cursor: u64,
    epoch: u64,
    adam_t: u64,
    /// Bytes of [`HISTORY_FILE`] that belong to the checkpoint.
    history_bytes: u64,
    /// Their [`fnv1a`] hash.
    history_hash: u64,
}

impl Counters {
    const LEN: usize = 7;

    fn to_array(self) -> [u64; Self::LEN] {
        [
            self.step,
            self.rng,
            self.cursor,
            self.epoch,
            self.adam_t,
            self.history_bytes,
            self.history_hash,
        ]
    }

    fn from_slice(v: &[u64]) -> Option<Self> {
        match *v {
            [step, rng, cursor, epoch, adam_t, history_bytes, history_hash] => Some(Self {
                step,
                rng,
                cursor,
                epoch,
                adam_t,
                history_bytes,
                history_hash,
            }),
            _ => None,
        }
    }
}

/// 64-bit FNV-1a of `bytes`, continuing from `hash` (start from [`FNV_START`]).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a's offset basis: the hash of nothing.
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The history file of a checkpoint file.
fn history_path(checkpoint: &Path) -> PathBuf {
    checkpoint.with_file_name(HISTORY_FILE)
}

fn to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

fn u64_bytes(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The lines of [`HISTORY_FILE`] for steps `from + 1..=progress.step`.
fn history_lines(progress: &Progress, from: usize, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for log in &progress.history[from..] {
        let mut log = log.clone();
        log.epoch_end = progress
            .epochs
            .iter()
            .find(|e| e.end_step == log.step)
            .cloned();
        serde_json::to_writer(&mut out, &log)
            .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// How much of [`HISTORY_FILE`] this process has written.
#[derive(Debug, Clone, Copy)]
struct HistoryMark {
    steps: usize,
    bytes: u64,
    hash: u64,
}

/// Writes a run's checkpoints to one file, keeping track of the history written so far.
#[derive(Debug)]
pub(crate) struct Writer {
    path: PathBuf,
    history: Option<HistoryMark>,
}

impl Writer {
    /// Checkpoints into `dir` (created when the first is written).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(CHECKPOINT_FILE),
            history: None,
        }
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the history's new lines, then the checkpoint of the run atomically.
    pub fn write(
        &mut self,
        head: &MemoryActionHead,
        opt: &AdamW,
        reference: Option<&MemoryActionHead>,
        cfg: &TrainConfig,
        progress: &Progress,
    ) -> Result<()> {
        let path = self.path.clone();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mark = self.write_history(progress)?;
        let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut push = |name: String, t: &Tensor| -> Result<()> {
            buffers.push((name, Dtype::F32, t.dims().to_vec(), to_bytes(t)?));
            Ok(())
        };
        for (name, var) in sorted_vars(head) {
            push(format!("head.{name}"), var.as_tensor())?;
        }
        for (name, m, v) in opt.moments()? {
            push(format!("adam.m.{name}"), &m)?;
            push(format!("adam.v.{name}"), &v)?;
        }
        if let Some(r) = reference {
            for (name, var) in sorted_vars(r) {
                push(format!("ref.{name}"), var.as_tensor())?;
            }
        }
        let counters = Counters {
            step: progress.step as u64,
            rng: progress.rng,
            cursor: progress.cursor as u64,
            epoch: progress.epoch as u64,
            adam_t: opt.t(),
            history_bytes: mark.bytes,
            history_hash: mark.hash,
        };
        buffers.push((
            COUNTERS_TENSOR.into(),
            Dtype::U64,
            vec![Counters::LEN],
            u64_bytes(&counters.to_array()),
        ));
        let order: Vec<u64> = progress.order.iter().map(|&i| i as u64).collect();
        buffers.push((
            ORDER_TENSOR.into(),
            Dtype::U64,
            vec![order.len()],
            u64_bytes(&order),
        ));
        let state = State {
            format_version: FORMAT_VERSION,
            config: cfg.clone(),
            head_config: head.config().clone(),
            input_dim: head.input_dim(),
            train_examples: progress.order.len(),
            has_reference: reference.is_some(),
            initial_eval_accuracy: progress.initial_eval_accuracy,
        };
        let json = serde_json::to_string(&state)
            .map_err(|e| Error::checkpoint(&path, format!("cannot serialise: {e}")))?;
        let views = buffers
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                Ok((
                    name.as_str(),
                    TensorView::new(*dtype, shape.clone(), bytes)?,
                ))
            })
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .and_then(|views| {
                safetensors::serialize(views, Some(HashMap::from([("state".to_string(), json)])))
            })
            .map_err(|e| Error::checkpoint(&path, format!("cannot serialise: {e}")))?;
        write_atomic(&path, |tmp| {
            std::fs::write(tmp, &views).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })
    }

    /// Brings [`HISTORY_FILE`] up to `progress.step`: the whole history, atomically, the first
    /// time; the new lines, appended and synced, after that.
    fn write_history(&mut self, progress: &Progress) -> Result<HistoryMark> {
        let path = history_path(&self.path);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mark = match self.history {
            None => {
                let bytes = history_lines(progress, 0, &path)?;
                write_atomic(&path, |tmp| {
                    std::fs::write(tmp, &bytes).map_err(|source| Error::Io {
                        path: tmp.to_path_buf(),
                        source,
                    })
                })?;
                HistoryMark {
                    steps: progress.step,
                    bytes: bytes.len() as u64,
                    hash: fnv1a(FNV_START, &bytes),
                }
            }
            Some(mark) => {
                let bytes = history_lines(progress, mark.steps, &path)?;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io)?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_data())
                    .map_err(io)?;
                HistoryMark {
                    steps: progress.step,
                    bytes: mark.bytes + bytes.len() as u64,
                    hash: fnv1a(mark.hash, &bytes),
                }
            }
        };
        self.history = Some(mark);
        Ok(mark)
    }
}

/// A checkpoint read from disk.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    state: State,
    adam_t: u64,
    tensors: HashMap<String, Tensor>,
    pub(crate) progress: Progress,
}

/// Little-endian u64 values of a tensor named `name`, which must be U64 and 1-D.
fn read_u64s(st: &SafeTensors, name: &str, path: &Path) -> Result<Vec<u64>> {
    let bad = |msg: String| Error::checkpoint(path, msg);
    let view = st
        .tensor(name)
        .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
    if view.dtype() != Dtype::U64 || view.shape().len() != 1 {
        return Err(bad(format!(
            "tensor `{name}` is {:?} {:?}, expected a 1-D U64 tensor",
            view.dtype(),
            view.shape()
        )));
    }
    Ok(view
        .data()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// The step and epoch logs held in the first `counters.history_bytes` bytes of the history
/// file, checked against the checkpoint's hash.
fn read_history(path: &Path, counters: &Counters) -> Result<(Vec<StepLog>, Vec<EpochLog>)> {
    let hpath = history_path(path);
    let bad = |msg: String| Error::checkpoint(&hpath, msg);
    let bytes = std::fs::read(&hpath).map_err(|source| Error::Io {
        path: hpath.clone(),
        source,
    })?;
    let own = usize::try_from(counters.history_bytes)
        .ok()
        .and_then(|n| bytes.get(..n))
        .ok_or_else(|| {
            bad(format!(
                "shorter than the {} bytes of the checkpoint's history",
                counters.history_bytes
            ))
        })?;
    if fnv1a(FNV_START, own) != counters.history_hash {
        return Err(bad(format!(
            "does not hold the history of {} (it was rewritten by another run)",
            path.display()
        )));
    }
    let text = std::str::from_utf8(own).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let (mut history, mut epochs) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let mut log: StepLog =
            serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
        if log.step != i + 1 {
            return Err(bad(format!("line {} logs step {}", i + 1, log.step)));
        }
        epochs.extend(log.epoch_end.take());
        history.push(log);
    }
    Ok((history, epochs))
}

impl Checkpoint {
    /// Reads and checks a checkpoint file and its history; errors name the file and the
    /// tensor or field. A missing checkpoint file says that none has been written yet.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::checkpoint(
                path,
                "cannot resume: no checkpoint has been written there yet",
            ),
            _ => Error::Io {
                path: path.to_path_buf(),
                source,
            },
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
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("`state`: {e}")))?;
        if version["format_version"] != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is not supported (expected {FORMAT_VERSION})",
                version["format_version"]
            )));
        }
        let state: State = serde_json::from_str(json).map_err(|e| bad(format!("`state`: {e}")))?;
        let counters = Counters::from_slice(&read_u64s(&st, COUNTERS_TENSOR, path)?)
            .ok_or_else(|| bad(format!("tensor `{COUNTERS_TENSOR}` has the wrong length")))?;
        let order = read_u64s(&st, ORDER_TENSOR, path)?
            .into_iter()
            .map(usize::try_from)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| bad(format!("tensor `{ORDER_TENSOR}` is out of range")))?;
        let (history, epochs) = read_history(path, &counters)?;
        let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let progress = Progress {
            step: as_usize(counters.step),
            rng: counters.rng,
            order,
            cursor: as_usize(counters.cursor),
            epoch: as_usize(counters.epoch),
            initial_eval_accuracy: state.initial_eval_accuracy,
            history,
            epochs,
        };
        let mut sorted = progress.order.clone();
        sorted.sort_unstable();
        if sorted.iter().enumerate().any(|(i, &x)| i != x)
            || progress.order.len() != state.train_examples
            || progress.cursor > progress.order.len()
            || progress.history.len() != progress.step
            || progress.epochs.len() != progress.epoch
        {
            return Err(bad("the run's counters, order and history disagree".into()));
        }
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if name == COUNTERS_TENSOR || name == ORDER_TENSOR {
                continue;
            }
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
        Ok(Self {
            state,
            adam_t: counters.adam_t,
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
        if self.progress.step > cfg.steps {
            return Err(bad(&format!(
                "step count: it is at step {}, past --steps {}",
                self.progress.step, cfg.steps
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
        opt.restore(self.adam_t, |name| {
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

#[cfg(test)]
mod tests;
