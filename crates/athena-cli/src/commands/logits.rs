//! `athena logits`: the parity hook. Writes the float32 logits of every position of a
//! sequence of ids as an [n, vocab] `.npy` file, atomically, on the backend the rule (or
//! `--backend`) picks.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::agent::LoadFlags;
use crate::model::BackendArg;

/// Flags of `athena logits`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: LoadFlags,
    /// Run on this engine only, without falling back (default: the backend rule, MLX first
    /// when enabled and available, else candle).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// Where to write the [n, vocab] float32 array.
    #[arg(long)]
    output: PathBuf,
}

/// Runs `athena logits`.
pub fn run(a: Args) -> Result<()> {
    if a.ids.is_empty() {
        bail!("--ids: give at least one token id");
    }
    let loaded = a.load.load_on(a.backend)?;
    let model = loaded.model().context("the model did not load")?;
    let rows = model.logits(&a.ids)?;
    let (n, v) = (rows.len(), rows.first().map_or(0, Vec::len));
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    let t = Tensor::from_vec(flat, (n, v), &Device::Cpu)?;
    athena::io::write_atomic(&a.output, |tmp| Ok(t.write_npy(tmp)?))
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("wrote {} [{n}, {v}] float32", a.output.display());
    Ok(())
}
