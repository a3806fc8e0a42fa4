//! Flags of the commands that load the model the way the agent does (`OlmoeModel::load()`):
//! MLX first when enabled and available, else candle with the memory action head.

use std::path::PathBuf;

use anyhow::Result;
use athena::config::OlmoeConfig;
use athena::models::olmoe::{LoadReport, Need, OlmoeModel};
use indicatif::{ProgressBar, ProgressStyle};

use athena::backend::BackendKind;

use crate::model::{BackendArg, DeviceArg, DtypeArg, QuantArg};

/// How to load the model.
#[derive(Debug, clap::Args)]
pub struct LoadFlags {
    /// A model directory, or a hub id such as `allenai/OLMoE-1B-7B-0924-Instruct`
    /// (overrides `model_name` in --config).
    #[arg(long)]
    pub model: Option<String>,
    /// An OlmoeConfig file (.toml or .json); flags given here override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Try MLX first (default true).
    #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
    pub use_mlx: Option<bool>,
    /// Checkpoint for the MLX path (default: --model).
    #[arg(long)]
    pub mlx_model_path: Option<String>,
    /// Compute dtype (candle and MLX).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Device for the candle path (default auto: CUDA if built in and present, else Metal if
    /// built in and present, else the CPU).
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Quantize the weights at load time (on MLX as `mlx_lm.convert -q` does).
    #[arg(long, value_enum)]
    pub quantization: Option<QuantArg>,
    /// A LoRA adapter directory (PEFT or mlx-lm).
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// Merge the adapter into the weights.
    #[arg(long, requires = "lora")]
    pub merge_lora: bool,
    /// Run quantized weights' products on int8 activations (candle path; faster, less exact;
    /// CPUs with AVX-512 VNNI).
    #[arg(long)]
    pub int8_activations: bool,
    /// A trained action head directory (head.safetensors + head_config.json).
    #[arg(long)]
    pub head: Option<PathBuf>,
}

impl LoadFlags {
    /// The configuration these flags describe.
    pub fn config(&self) -> Result<OlmoeConfig> {
        let mut c = match &self.config {
            Some(path) => OlmoeConfig::from_file(path)?,
            None => OlmoeConfig::default(),
        };
        if let Some(m) = &self.model {
            c.model_name = m.clone();
        } else if self.config.is_none() {
            anyhow::bail!("give --model (or a --config file with model_name)");
        }
        if let Some(v) = self.use_mlx {
            c.use_mlx = v;
        }
        if let Some(p) = &self.mlx_model_path {
            c.mlx_model_path = Some(p.clone());
        }
        if let Some(d) = self.dtype {
            c.dtype = d.into();
        }
        if let Some(d) = self.device {
            c.device = d.into();
        }
        if let Some(q) = self.quantization {
            c.quantization = q.into();
        }
        if let Some(l) = &self.lora {
            c.lora_path = Some(l.clone());
        }
        if self.merge_lora {
            c.merge_lora = true;
        }
        if self.int8_activations {
            c.int8_activations = true;
        }
        if let Some(h) = &self.head {
            c.action_head_path = Some(h.clone());
        }
        c.validate()?;
        Ok(c)
    }

    /// Loads the model on the backend `--backend` names, or by the rule when it names none.
    pub fn load_on(&self, backend: Option<BackendArg>) -> Result<OlmoeModel> {
        self.load_for(match backend {
            None => Need::Inference,
            Some(BackendArg::Candle) => Need::Backend(BackendKind::Candle),
            Some(BackendArg::Mlx) => Need::Backend(BackendKind::Mlx),
        })
    }

    /// Loads the model for inference (MLX first when enabled and available, else candle) and
    /// says on stderr which backend runs it and why.
    pub fn load(&self) -> Result<OlmoeModel> {
        self.load_for(Need::Inference)
    }

    /// Loads the model for what the command `need`s and says on stderr which backend runs it
    /// and why; a command that needs the action head gets candle ([`Need::ActionHead`]).
    pub fn load_for(&self, need: Need) -> Result<OlmoeModel> {
        let config = self.config()?;
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(config.model_name.clone());
        let mut model = OlmoeModel::new(config);
        let loaded = model.load_reporting(need, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
        bar.finish_and_clear();
        eprintln!("{}", backend_line(loaded?));
        Ok(model)
    }
}

/// One line that says which backend runs the model and why each one was or was not picked,
/// e.g. `backend candle (mlx skipped: disabled by use_mlx=false; candle loaded: loaded m)`.
pub fn backend_line(report: &LoadReport) -> String {
    let attempts: Vec<String> = report
        .attempts
        .iter()
        .map(|a| {
            let outcome = format!("{:?}", a.outcome).to_lowercase();
            format!("{} {outcome}: {}", a.backend, a.reason)
        })
        .collect();
    format!("backend {} ({})", report.backend, attempts.join("; "))
}

/// The backend a loaded model runs on, as the `"backend"` field of `--json` outputs.
pub fn backend_name(model: &OlmoeModel) -> String {
    model.backend().map(|b| b.to_string()).unwrap_or_default()
}
