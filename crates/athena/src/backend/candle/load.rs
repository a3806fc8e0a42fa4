//! Loading a checkpoint onto candle: weights read, translated to the canonical layout,
//! optionally quantized and given a LoRA adapter.

use std::path::Path;

use candle_core::{DType, Device};

use super::olmoe::Olmoe;
use super::weights::{self, BuildOptions};
use crate::checkpoint::{CheckpointReader, OlmoeArgs, WeightFiles};
use crate::error::{Error, Result};
use crate::options::Quantization;

/// How to load a checkpoint on candle.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Quantize at load time (ignored for modules a checkpoint already stores quantized).
    pub quantization: Quantization,
    /// A PEFT or mlx-lm LoRA adapter directory.
    pub lora_path: Option<std::path::PathBuf>,
    /// Merge the adapter into the weights.
    pub merge_lora: bool,
    /// Run quantized matrices' products on int8 activations (AVX-512 VNNI CPUs; int16
    /// elsewhere): faster, about 2⁻⁸ of each block's largest input off instead of 2⁻¹⁶.
    pub int8_activations: bool,
}

impl LoadOptions {
    /// The affine parameters for load-time quantization (group size 64, as mlx-lm's default).
    pub fn affine(&self) -> Result<Option<crate::quant::AffineParams>> {
        use Quantization;
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

/// Quantized weights compute on the CPU only: asking for them on another device is refused
/// from config.json alone, before any weight is read.
fn refuse_quantized_off_cpu(on_cpu: bool, opts: &LoadOptions, args: &OlmoeArgs) -> Result<()> {
    if on_cpu {
        return Ok(());
    }
    let what = if args.quantization.is_some() {
        "this checkpoint stores quantized weights, which"
    } else if opts.quantization != Quantization::None {
        "`--quantization` makes quantized weights, which"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        "device",
        format!("{what} run on the CPU only in this version: load it with `--device cpu`"),
    ))
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
    refuse_quantized_off_cpu(device.is_cpu(), opts, &args)?;
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
            input_form: match opts.int8_activations {
                true => crate::quant::InputForm::Int8,
                false => crate::quant::InputForm::Int16,
            },
        },
        dtype,
    };
    let model = Olmoe::new(&weights, &args, on_layer)?;
    reader.finish()?;
    tracing::info!(
        layers = args.num_hidden_layers,
        experts = args.num_experts,
        quantization = ?opts.quantization,
        int8_activations = opts.int8_activations,
        lora = adapter.as_ref().map(|a| a.len()),
        "model loaded"
    );
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_args() -> OlmoeArgs {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/base");
        OlmoeArgs::from_file(&dir.join("config.json")).expect("the base fixture's config")
    }

    #[test]
    fn quantization_off_the_cpu_is_refused_from_the_config_alone() {
        let args = base_args();
        let plain = LoadOptions::default();
        let int4 = LoadOptions {
            quantization: Quantization::Int4,
            ..LoadOptions::default()
        };
        refuse_quantized_off_cpu(true, &int4, &args).expect("the CPU computes quantized weights");
        refuse_quantized_off_cpu(false, &plain, &args).expect("dense weights run anywhere");
        let err = refuse_quantized_off_cpu(false, &int4, &args).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "device",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("--device cpu"), "{err}");

        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/mlx_q8_g64");
        let stored = OlmoeArgs::from_file(&dir.join("config.json")).expect("a quantized fixture");
        assert!(stored.quantization.is_some());
        let err = refuse_quantized_off_cpu(false, &plain, &stored).unwrap_err();
        assert!(
            err.to_string().contains("stores quantized weights"),
            "{err}"
        );
    }
}
