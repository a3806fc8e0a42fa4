//! The candle backend: OLMoE's forward pass on candle tensors (CPU, CUDA or Metal).

mod linear;
mod moe;
mod olmoe;
mod provider;
mod rope;
mod session;

use std::path::Path;

use candle_core::{DType, Device};

pub use linear::Linear;
pub use olmoe::Olmoe;
pub use provider::CandleProvider;
pub use session::Session;

use crate::checkpoint::{CheckpointReader, OlmoeArgs, WeightFiles};
use crate::error::Result;

/// Loads the OLMoE checkpoint in `dir` (config.json + safetensors) onto `device`, computing
/// in `dtype`. `on_layer(done, total)` reports progress.
pub fn load_olmoe(
    dir: &Path,
    device: &Device,
    dtype: DType,
    on_layer: impl FnMut(usize, usize),
) -> Result<Olmoe> {
    let _span = tracing::info_span!("load_olmoe", dir = %dir.display(), ?dtype).entered();
    let args = OlmoeArgs::from_file(&dir.join("config.json"))?;
    let files = WeightFiles::open(dir)?;
    let reader = CheckpointReader::new(&files, &args, device, dtype)?;
    let model = Olmoe::new(&reader, &args, on_layer)?;
    reader.finish()?;
    tracing::info!(
        layers = args.num_hidden_layers,
        experts = args.num_experts,
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

    fn seq_len(&self, b: usize) -> usize {
        self.session.seq_len(b)
    }
}
