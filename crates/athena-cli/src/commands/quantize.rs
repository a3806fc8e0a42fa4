//! `athena quantize`: write an mlx-lm affine-quantized checkpoint (config.json + safetensors)
//! that mlx-lm loads and athena loads back.

use std::path::PathBuf;

use anyhow::{Context, Result};
use athena::checkpoint::convert::quantize_checkpoint;
use athena::quant::AffineParams;

/// Flags of `athena quantize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint to quantize (a directory or hub id).
    #[arg(long)]
    model: String,
    /// Where to write the quantized checkpoint (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Bits per weight: 2, 3, 4, 5, 6 or 8.
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Weights per scale/bias pair: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    group_size: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `athena quantize`.
pub fn run(a: Args) -> Result<()> {
    let params = AffineParams::new(a.bits, a.group_size)?;
    let input = athena::checkpoint::hub::resolve(&a.model)?;
    let report = quantize_checkpoint(&input, &a.out, params, |done, total| {
        eprint!("\rquantizing layer {done}/{total}");
    })
    .with_context(|| format!("quantizing {}", input.display()))?;
    eprintln!();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "wrote {} ({}-bit, group {}): {:.1} MB from {:.1} MB",
            report.out.display(),
            report.bits,
            report.group_size,
            report.bytes as f64 / 1e6,
            report.input_bytes as f64 / 1e6
        );
    }
    Ok(())
}
