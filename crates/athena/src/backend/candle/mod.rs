//! The candle backend: OLMoE's forward pass on candle tensors (CPU, CUDA or Metal).

mod linear;
mod moe;
#[cfg(feature = "cuda")]
mod moe_cuda;
mod olmoe;
mod provider;
mod rope;
mod session;
mod weights;

use std::path::Path;

use candle_core::{DType, Device};

pub use linear::{Embedding, Linear};
pub use olmoe::Olmoe;
pub use provider::CandleProvider;
pub use session::Session;
pub use weights::BuildOptions;

use crate::checkpoint::{CheckpointReader, OlmoeArgs, WeightFiles};
use crate::error::Result;

/// How to load a checkpoint on candle.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Quantize at load time (ignored for modules a checkpoint already stores quantized).
    pub quantization: crate::config::Quantization,
    /// A PEFT or mlx-lm LoRA adapter directory.
    pub lora_path: Option<std::path::PathBuf>,
    /// Merge the adapter into the weights.
    pub merge_lora: bool,
}

impl LoadOptions {
    /// The affine parameters for load-time quantization (group size 64, as mlx-lm's default).
    pub fn affine(&self) -> Result<Option<crate::quant::AffineParams>> {
        use crate::config::Quantization;
        Ok(match self.quantization {
            Quantization::None => None,
            Quantization::Int8 => Some(crate::quant::AffineParams::new(8, 32)?),
            Quantization::Int4 => Some(crate::quant::AffineParams::new(4, 64)?),
        })
    }
}

/// Loads the OLMoE checkpoint in `dir` (config.json + safetensors) onto `device`, computing
/// in `dtype`. `on_layer(done, total)` reports progress.
pub fn load_olmoe(
    dir: &Path,
    device: &Device,
    dtype: DType,
    on_layer: impl FnMut(usize, usize),
) -> Result<Olmoe> {
    load_olmoe_with(dir, device, dtype, &LoadOptions::default(), on_layer)
}

/// [`load_olmoe`] with quantization and LoRA options.
pub fn load_olmoe_with(
    dir: &Path,
    device: &Device,
    dtype: DType,
    opts: &LoadOptions,
    on_layer: impl FnMut(usize, usize),
) -> Result<Olmoe> {
    let _span = tracing::info_span!("load_olmoe", dir = %dir.display(), ?dtype).entered();
    let args = OlmoeArgs::from_file(&dir.join("config.json"))?;
    let files = WeightFiles::open(dir)?;
    let reader = CheckpointReader::new(&files, &args, device, dtype)?;
    let adapter = match &opts.lora_path {
        Some(p) => Some(crate::lora::LoraAdapter::load(p, &args, device)?),
        None => None,
    };
    let weights = weights::Weights {
        r: &reader,
        args: &args,
        opts: BuildOptions {
            quantize: opts.affine()?,
            lora: adapter.as_ref(),
            merge_lora: opts.merge_lora,
        },
        dtype,
    };
    let model = Olmoe::new(&weights, &args, on_layer)?;
    reader.finish()?;
    tracing::info!(
        layers = args.num_hidden_layers,
        experts = args.num_experts,
        quantization = ?opts.quantization,
        lora = adapter.as_ref().map(|a| a.len()),
        "model loaded"
    );
    Ok(model)
}

impl crate::backend::Backend for Olmoe {
    fn kind(&self) -> crate::backend::BackendKind {
        crate::backend::BackendKind::Candle
    }

    fn args(&self) -> &OlmoeArgs {
        Olmoe::args(self)
    }

    fn session(&self) -> Box<dyn crate::backend::DecodeSession + '_> {
        Box::new(CandleSession {
            model: self,
            session: Olmoe::session(self),
        })
    }

    fn slots(&self) -> Box<dyn crate::backend::SlotBatch + '_> {
        Box::new(CandleSlots {
            model: self,
            slots: Vec::new(),
        })
    }

    fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut s = Olmoe::session(self);
        let logits = self.forward(&[ids.to_vec()], &mut s)?.squeeze(0)?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
    }

    fn encode(
        &self,
        batch: &[Vec<u32>],
        pooling: crate::backend::Pooling,
    ) -> Result<Vec<Vec<f32>>> {
        let mut s = Olmoe::session(self);
        let hidden = self.forward_hidden(batch, &mut s)?.to_dtype(DType::F32)?;
        let mut out = Vec::with_capacity(batch.len());
        for (b, &pad) in s.padding().iter().enumerate() {
            let width = hidden.dim(1)?;
            let rows = hidden.get(b)?.narrow(0, pad, width - pad)?;
            let pooled = match pooling {
                crate::backend::Pooling::Mean => rows.mean(0)?,
                crate::backend::Pooling::Last => rows.get(width - pad - 1)?,
            };
            out.push(pooled.to_vec1()?);
        }
        Ok(out)
    }
}

/// Continuous batching on candle: each slot a single-sequence [`Session`]; a step runs all
/// listed slots through one forward pass ([`Olmoe::forward_each`]).
struct CandleSlots<'a> {
    model: &'a Olmoe,
    slots: Vec<Option<Session>>,
}

impl crate::backend::SlotBatch for CandleSlots<'_> {
    fn insert(&mut self, prompt: &[u32]) -> Result<(crate::backend::Slot, Vec<f32>)> {
        let mut session = self.model.session();
        let logits = self
            .model
            .forward_last(&[prompt.to_vec()], &mut session)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        Ok((crate::backend::take_slot(&mut self.slots, session), logits))
    }

    fn step(&mut self, steps: &[(crate::backend::Slot, u32)]) -> Result<Vec<Vec<f32>>> {
        crate::backend::check_step(&self.slots, steps)?;
        if steps.is_empty() {
            return Ok(vec![]);
        }
        // Slots in ascending order, so that each session can be borrowed mutably once.
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| steps[i].0);
        let mut sessions: Vec<(&mut Session, u32)> = Vec::with_capacity(steps.len());
        let mut rest: &mut [Option<Session>] = &mut self.slots;
        let mut base = 0;
        for &i in &order {
            let (slot, token) = steps[i];
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(slot - base);
            let (first, tail) = tail.split_first_mut().ok_or_else(|| {
                crate::error::Error::invalid("slot", format!("{slot} is out of range"))
            })?;
            let session = first.as_mut().ok_or_else(|| {
                crate::error::Error::invalid("slot", format!("{slot} holds no sequence"))
            })?;
            sessions.push((session, token));
            rest = tail;
            base = slot + 1;
        }
        let logits: Vec<Vec<f32>> = self
            .model
            .forward_each(&mut sessions)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        // Back to the caller's order.
        let mut out = vec![Vec::new(); steps.len()];
        for (row, &i) in logits.into_iter().zip(&order) {
            out[i] = row;
        }
        Ok(out)
    }

    fn remove(&mut self, slot: crate::backend::Slot) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = None;
        }
    }

    fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// A candle decoding session: the model and its KV cache.
struct CandleSession<'a> {
    model: &'a Olmoe,
    session: Session,
}

impl crate::backend::DecodeSession for CandleSession<'_> {
    fn step(&mut self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.forward_last(tokens, &mut self.session)?;
        Ok(logits.to_dtype(DType::F32)?.to_vec2()?)
    }
}
