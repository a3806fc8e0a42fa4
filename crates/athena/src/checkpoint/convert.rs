//! `athena quantize`: an HF (or unquantized mlx-lm) checkpoint → an mlx-lm affine-quantized
//! checkpoint that mlx-lm itself loads: experts stacked as `switch_mlp`, every linear weight,
//! the embeddings and lm_head quantized, the router kept dense (its top-k choices are the most
//! sensitive part of the model), norms and biases in float32 (MLX's CPU kernels need f32).
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
}

impl Writer {
    fn dense(&mut self, name: String, t: Tensor) -> Result<()> {
        self.tensors.insert(name, t.to_dtype(DType::F32)?);
        Ok(())
    }

    fn quantized(&mut self, module: &str, q: &QMatrix) -> Result<()> {
        let (w, s, b) = q.to_mlx(DType::F32)?;
        self.tensors.insert(format!("{module}.weight"), w);
        self.tensors.insert(format!("{module}.scales"), s);
        self.tensors.insert(format!("{module}.biases"), b);
        Ok(())
    }
}

fn quantize(module: &str, w: &Tensor, params: AffineParams) -> Result<QMatrix> {
    let (rows, cols) = w.dims2()?;
    let data = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    QMatrix::quantize(module, &data, rows, cols, params)
}

/// Quantizes the checkpoint in `input` into a new mlx-lm checkpoint at `out`.
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
    let (hd, i) = (args.head_dim, args.intermediate_size);
    let (qw, kvw) = (args.num_attention_heads * hd, args.num_key_value_heads * hd);
    let mut w = Writer {
        tensors: HashMap::new(),
    };

    let embed = r.tensor("model.embed_tokens.weight", &[v, h])?;
    w.quantized(
        "model.embed_tokens",
        &quantize("model.embed_tokens", &embed, params)?,
    )?;
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
            w.quantized(&module, &quantize(&module, &weight, params)?)?;
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
            let (mut ws, mut ss, mut bs) = (vec![], vec![], vec![]);
            for (x, m) in r.expert_matrices(l, proj)?.into_iter().enumerate() {
                let (qw_, s, b) =
                    quantize(&format!("{module}[{x}]"), &m, params)?.to_mlx(DType::F32)?;
                ws.push(qw_);
                ss.push(s);
                bs.push(b);
            }
            w.tensors
                .insert(format!("{module}.weight"), Tensor::stack(&ws, 0)?);
            w.tensors
                .insert(format!("{module}.scales"), Tensor::stack(&ss, 0)?);
            w.tensors
                .insert(format!("{module}.biases"), Tensor::stack(&bs, 0)?);
        }
        let _ = i;
        on_layer(l + 1, args.num_hidden_layers);
    }
    let norm = r.tensor("model.norm.weight", &[h])?;
    w.dense("model.norm.weight".into(), norm)?;
    if args.tie_word_embeddings {
        let _ = r.optional("lm_head.weight", &[v, h])?;
    } else {
        let head = r.tensor("lm_head.weight", &[v, h])?;
        w.quantized("lm_head", &quantize("lm_head", &head, params)?)?;
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
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let result = (|| -> Result<u64> {
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let weights = tmp.join(super::files::SINGLE_FILE);
        candle_core::safetensors::save(&w.tensors, &weights)?;
        let bytes = std::fs::metadata(&weights).map_err(io(&weights))?.len();
        write_config(&config_path, &tmp.join("config.json"), params)?;
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
fn write_config(input: &Path, output: &Path, params: AffineParams) -> Result<()> {
    let text = std::fs::read_to_string(input).map_err(|source| Error::Io {
        path: input.into(),
        source,
    })?;
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| Error::config(input, e.to_string()))?;
    let q = serde_json::json!({ "group_size": params.group_size, "bits": params.bits, "mode": "affine" });
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
