//! The candle backend: OLMoE's forward pass on candle tensors (CPU, CUDA or Metal).

mod linear;
mod moe;
mod olmoe;
mod rope;
mod session;

use std::path::Path;

use candle_core::{DType, Device};

pub use linear::Linear;
pub use olmoe::Olmoe;
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
    tracing::info!(layers = args.num_hidden_layers, experts = args.num_experts, "model loaded");
    Ok(model)
}
