//! `athena quantize`: an HF (or unquantized mlx-lm) checkpoint → an mlx-lm affine-quantized
//! checkpoint that mlx-lm itself loads: experts stacked as `switch_mlp`, every linear weight,
//! the embeddings and lm_head quantized, the router kept dense (its top-k choices are the most
//! sensitive part of the model), norms and biases in float32 (MLX's CPU kernels need f32).
//! Scales and biases of the quantized layers are stored as `mlx_lm.convert` stores them: bf16
//! for a checkpoint that declares bf16 (`mx.quantize` of its bf16 weights, bit for bit), else
//! float32.
//!
//! The output directory is written beside its final place, validated by loading it back, and
//! only then renamed into place; an existing output is never overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::args::OlmoeArgs;
use super::files::WeightFiles;
use super::layout::{CheckpointReader, ExpertProj};
use crate::error::{Error, Result};
use crate::quant::{AffineParams, QMatrix};

/// Files copied unchanged from the input directory when present.
const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// What `quantize_checkpoint` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    /// The output directory.
    pub out: PathBuf,
    /// Bits per weight.
    pub bits: u8,
    /// Group size.
    pub group_size: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// Bytes of tensor data read.
    pub input_bytes: u64,
}

struct Writer {
    tensors: HashMap<String, Tensor>,
    params: AffineParams,
    /// The dtype of the quantized layers' scales and biases.
    scales: DType,
    /// Modules written with other parameters than the default (or dense: `None`).
    overrides: std::collections::BTreeMap<String, Option<AffineParams>>,
}

impl Writer {
    fn dense(&mut self, name: String, t: Tensor) -> Result<()> {
        self.tensors.insert(name, t.to_dtype(DType::F32)?);
        Ok(())
    }

    /// The parameters `module` gets for `cols` columns, recording any departure from the
    /// default; `None` means it stays dense.
    fn fit(&mut self, module: &str, cols: usize) -> Option<AffineParams> {
        let fitted = self.params.fitting(cols);
        if fitted != Some(self.params) {
            self.overrides.insert(module.to_string(), fitted);
        }
        fitted
    }

    /// Writes `module` quantized, or dense when its width fits no group size.
    fn linear(&mut self, module: &str, w: &Tensor) -> Result<()> {
        match self.fit(module, w.dim(1)?) {
            Some(p) => {
                let (qw, s, b) = QMatrix::quantize_tensor(module, w, p)?.to_mlx(self.scales)?;
                self.tensors.insert(format!("{module}.weight"), qw);
                self.tensors.insert(format!("{module}.scales"), s);
                self.tensors.insert(format!("{module}.biases"), b);
            }
            None => self.dense(format!("{module}.weight"), w.clone())?,
        }
        Ok(())
    }

    /// Writes stacked experts `mats` as one `switch_mlp` module.
    fn experts(&mut self, module: &str, mats: Vec<Tensor>) -> Result<()> {
        let Some(first) = mats.first() else {
            return Ok(());
        };
        match self.fit(module, first.dim(1)?) {
            Some(p) => {
                let (mut ws, mut ss, mut bs) = (vec![], vec![], vec![]);
                for (x, m) in mats.iter().enumerate() {
                    let (qw, s, b) = QMatrix::quantize_tensor(&format!("{module}[{x}]"), m, p)?
                        .to_mlx(self.scales)?;
                    ws.push(qw);
                    ss.push(s);
                    bs.push(b);
                }
                self.tensors
                    .insert(format!("{module}.weight"), Tensor::stack(&ws, 0)?);
                self.tensors
                    .insert(format!("{module}.scales"), Tensor::stack(&ss, 0)?);
                self.tensors
                    .insert(format!("{module}.biases"), Tensor::stack(&bs, 0)?);
            }
            None => self.dense(format!("{module}.weight"), Tensor::stack(&mats, 0)?)?,
        }
        Ok(())
    }
}

/// The file that marks a temporary output directory as quantize's while it is being written.
const TEMP_MARKER: &str = ".athena-quantize-partial";

/// Removes what killed runs left beside `out`: hidden temporary directories whose process is
/// gone and that still carry [`TEMP_MARKER`].
fn remove_stale_output(out: &Path) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = out.file_name() else {
        return Ok(());
    };
    for dir in crate::io::remove_stale_temp_dirs(parent, name, TEMP_MARKER)? {
        tracing::info!(path = %dir.display(), "removed the partial output of a killed quantize run");
    }
    Ok(())
}

/// Quantizes the checkpoint in `input` into a new mlx-lm checkpoint at `out`, first removing
/// the partial outputs that earlier killed runs left beside it.
pub fn quantize_checkpoint(
    input: &Path,
    out: &Path,
    params: AffineParams,
    mut on_layer: impl FnMut(usize, usize),
) -> Result<QuantizeReport> {
    if out.exists() {
        return Err(Error::invalid(
            "out",
            format!("{} already exists; choose a new directory", out.display()),
        ));
    }
    remove_stale_output(out)?;
    let config_path = input.join("config.json");
    let args = OlmoeArgs::from_file(&config_path)?;
    if args.quantization.is_some() {
        return Err(Error::config(
            &config_path,
            "the checkpoint is already quantized",
        ));
    }
    let files = WeightFiles::open(input)?;
    let r = CheckpointReader::new(&files, &args, &Device::Cpu, DType::F32)?;
    let (v, h, e) = (args.vocab_size, args.hidden_size, args.num_experts);
    let hd = args.head_dim;
    let (qw, kvw) = (args.num_attention_heads * hd, args.num_key_value_heads * hd);
    let mut w = Writer {
        tensors: HashMap::new(),
        params,
        scales: match args.bf16_scales() {
            true => DType::BF16,
            false => DType::F32,
        },
        overrides: Default::default(),
    };

    let embed = r.tensor("model.embed_tokens.weight", &[v, h])?;
    w.linear("model.embed_tokens", &embed)?;
    drop(embed);
    for l in 0..args.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let name = format!("{p}.{norm}.weight");
            let t = r.tensor(&name, &[h])?;
            w.dense(name, t)?;
        }
        for (proj, out_f, in_f) in [
            ("q_proj", qw, h),
            ("k_proj", kvw, h),
            ("v_proj", kvw, h),
            ("o_proj", h, qw),
        ] {
            let module = format!("{p}.self_attn.{proj}");
            let weight = r.tensor(&format!("{module}.weight"), &[out_f, in_f])?;
            w.linear(&module, &weight)?;
            if args.attention_bias {
                let name = format!("{module}.bias");
                let t = r.tensor(&name, &[out_f])?;
                w.dense(name, t)?;
            }
        }
        for (norm, width) in [("q_norm", qw), ("k_norm", kvw)] {
            let name = format!("{p}.self_attn.{norm}.weight");
            let t = r.tensor(&name, &[width])?;
            w.dense(name, t)?;
        }
        let router = format!("{p}.mlp.gate.weight");
        let t = r.tensor(&router, &[e, h])?;
        w.dense(router, t)?;
        for proj in [ExpertProj::Gate, ExpertProj::Up, ExpertProj::Down] {
            let module = CheckpointReader::switch_module(l, proj);
            w.experts(&module, r.expert_matrices(l, proj)?)?;
        }
        on_layer(l + 1, args.num_hidden_layers);
    }
    let norm = r.tensor("model.norm.weight", &[h])?;
    w.dense("model.norm.weight".into(), norm)?;
    if args.tie_word_embeddings {
        let _ = r.optional("lm_head.weight", &[v, h])?;
    } else {
        let head = r.tensor("lm_head.weight", &[v, h])?;
        w.linear("lm_head", &head)?;
    }
    r.finish()?;
    let input_bytes = files.data_bytes();
    drop(files);

    // Write beside the destination, validate, then move into place.
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid("out", format!("{} has no directory name", out.display())))?;
    let tmp = parent.join(crate::io::temp_name(name, std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let result = (|| -> Result<u64> {
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        std::fs::write(tmp.join(TEMP_MARKER), b"").map_err(io(&tmp))?;
        let weights = tmp.join(super::files::SINGLE_FILE);
        candle_core::safetensors::save(&w.tensors, &weights)?;
        let bytes = std::fs::metadata(&weights).map_err(io(&weights))?.len();
        write_config(&config_path, &tmp.join("config.json"), params, &w.overrides)?;
        for f in SIDE_FILES {
            let src = input.join(f);
            if src.is_file() {
                std::fs::copy(&src, tmp.join(f)).map_err(io(&src))?;
            }
        }
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
        // The new checkpoint must load before it takes the name.
        let args = OlmoeArgs::from_file(&tmp.join("config.json"))?;
        let files = WeightFiles::open(&tmp)?;
        CheckpointReader::new(&files, &args, &Device::Cpu, DType::F32)?;
        std::fs::remove_file(tmp.join(TEMP_MARKER)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, out).map_err(io(out))?;
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io(&parent))?;
        Ok(bytes)
    })();
    match result {
        Ok(bytes) => Ok(QuantizeReport {
            out: out.to_path_buf(),
            bits: params.bits,
            group_size: params.group_size,
            bytes,
            input_bytes,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// The input's config.json with mlx-lm's `quantization` block (and its `quantization_config`
/// copy) and float32 as the dtype of the dense tensors.
fn write_config(
    input: &Path,
    output: &Path,
    params: AffineParams,
    overrides: &std::collections::BTreeMap<String, Option<AffineParams>>,
) -> Result<()> {
    let text = std::fs::read_to_string(input).map_err(|source| Error::Io {
        path: input.into(),
        source,
    })?;
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| Error::config(input, e.to_string()))?;
    let spec = |p: &AffineParams| serde_json::json!({ "group_size": p.group_size, "bits": p.bits, "mode": "affine" });
    let mut q = spec(&params);
    if let Some(map) = q.as_object_mut() {
        for (module, p) in overrides {
            map.insert(
                module.clone(),
                p.as_ref().map_or(serde_json::Value::Bool(false), spec),
            );
        }
    }
    config.insert("quantization".into(), q.clone());
    config.insert("quantization_config".into(), q);
    config.insert("dtype".into(), "float32".into());
    config.remove("torch_dtype");
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| Error::config(output, e.to_string()))?;
    std::fs::write(output, text).map_err(|source| Error::Io {
        path: output.into(),
        source,
    })
}
