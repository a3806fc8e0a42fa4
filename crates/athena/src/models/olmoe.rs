//! `OlmoeModel`: load OLMoE on the best backend available, and say why.
//!
//! `load()` tries MLX first when `use_mlx` is set and MLX is available (compiled in and a
//! usable device); an MLX model carries no action head. Otherwise — MLX disabled, unavailable,
//! or failing to load — it loads the candle path (tokenizer, model, then the
//! [`MemoryActionHead`]), the only trainable one. Every backend tried or skipped is recorded in
//! the [`LoadReport`], with the same words in the log and in errors.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::action_head::{Action, MemoryActionHead};
use super::cancel::Cancel;
use super::encode_batches::token_batches;
use crate::backend::candle::CandleProvider;
use crate::backend::mlx::MlxProvider;
use crate::backend::{Availability, Backend, BackendKind, BackendProvider, LoadSpec};
use crate::checkpoint::hub;
use crate::config::OlmoeConfig;
use crate::error::{Error, Result};
use crate::generate::{
    generate_constrained, FinishReason, GenerateParams, Grammar, Grammars, Tokenizer,
};

/// What happened to one backend during `load()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Not tried: disabled, not compiled in, or no device.
    Skipped,
    /// Tried and failed.
    Failed,
    /// Tried and chosen.
    Loaded,
}

/// What the caller needs of the loaded model: it decides which backends `load` may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Need {
    /// Any backend: MLX first when enabled and available, else candle.
    #[default]
    Inference,
    /// The memory action head, which only the trainable candle path carries: MLX is skipped
    /// with [`HEAD_NEEDS_CANDLE`] as its reason.
    ActionHead,
    /// This backend and no other (a caller that names one): the other is skipped, and a
    /// failure of this one is an error rather than a fallback.
    Backend(BackendKind),
}

/// The reason MLX is skipped for a caller that needs the action head.
pub const HEAD_NEEDS_CANDLE: &str = "the memory action head needs the trainable candle path";

/// One backend's entry in the [`LoadReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The backend.
    pub backend: BackendKind,
    /// What happened.
    pub outcome: Outcome,
    /// Why (for skipped and failed backends), or what was loaded.
    pub reason: String,
}

/// The result of `load()`: which backend runs the model, and why each one before it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The backend chosen.
    pub backend: BackendKind,
    /// Whether the memory action head is attached (candle only).
    pub action_head: bool,
    /// The checkpoint the chosen backend loaded.
    pub model_path: String,
    /// Every backend tried or skipped, in order.
    pub attempts: Vec<Attempt>,
}

/// A memory the agent holds: an id and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Stable identifier.
    pub id: String,
    /// The memory's text.
    pub text: String,
}

/// Why the candle path did not load: not tried for this need, or tried and failed.
enum CandleMiss {
    Skip(&'static str),
    Failure(Error),
}

struct Loaded {
    backend: Box<dyn Backend>,
    /// `None` for a model directory without `tokenizer.json`: it runs on token ids only.
    tokenizer: Option<Tokenizer>,
    head: Option<MemoryActionHead>,
    report: LoadReport,
    /// The grammar compiler over the tokenizer, built on first use.
    grammars: OnceLock<Arc<Grammars>>,
}

/// OLMoE as the agent sees it. Create with [`OlmoeModel::new`], then [`OlmoeModel::load`].
pub struct OlmoeModel {
    config: OlmoeConfig,
    mlx: Box<dyn BackendProvider>,
    candle: CandleProvider,
    loaded: Option<Loaded>,
    /// The attempts of the last `load()` when it found no backend.
    failed_attempts: Vec<Attempt>,
}

impl Loaded {
    fn text_tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::tokenizer(
                Path::new(&self.report.model_path).join("tokenizer.json"),
                "not found: this model runs on token ids only; text needs its tokenizer",
            )
        })
    }
}

impl OlmoeModel {
    /// A model to be loaded according to `config`. Nothing is read until [`Self::load`].
    pub fn new(config: OlmoeConfig) -> Self {
        Self::with_mlx_provider(config, Box::new(MlxProvider))
    }

    /// Like [`Self::new`] with another MLX provider (a build's own, or one that simulates MLX's
    /// availability in tests). The candle path is always the real one.
    pub fn with_mlx_provider(config: OlmoeConfig, mlx: Box<dyn BackendProvider>) -> Self {
        OlmoeModel {
            config,
            mlx,
            candle: CandleProvider,
            loaded: None,
            failed_attempts: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OlmoeConfig {
        &self.config
    }

    /// Loads the model: MLX first when enabled and available, else (or on its failure) candle.
    pub fn load(&mut self) -> Result<&LoadReport> {
        self.load_for(Need::Inference)
    }

    /// Loads the model for what the caller `need`s: [`Need::ActionHead`] skips MLX, with the
    /// reason in the report, and loads candle with the head.
    pub fn load_for(&mut self, need: Need) -> Result<&LoadReport> {
        self.load_reporting(need, &mut |_, _| {})
    }

    /// Like [`Self::load_for`], calling `on_layer(done, total)` as the chosen backend's decoder
    /// layers load (a backend that fails and the one after it each count from the start).
    pub fn load_reporting(
        &mut self,
        need: Need,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<&LoadReport> {
        let _span =
            tracing::info_span!("OlmoeModel::load", model = %self.config.model_name).entered();
        self.loaded = None;
        self.failed_attempts.clear();
        self.config.validate()?;
        let mut attempts = Vec::new();

        // MLX: only when asked for and available.
        let mlx_skip = if !self.config.use_mlx {
            Some("disabled by use_mlx=false".to_string())
        } else if need == Need::ActionHead {
            Some(HEAD_NEEDS_CANDLE.to_string())
        } else if need == Need::Backend(BackendKind::Candle) {
            Some("not asked for (backend candle)".to_string())
        } else {
            match self.mlx.availability() {
                Availability::Available => None,
                Availability::NotCompiled(why) | Availability::NoDevice(why) => Some(why),
            }
        };
        match mlx_skip {
            Some(reason) => {
                tracing::info!("MLX skipped: {reason}");
                attempts.push(Attempt {
                    backend: BackendKind::Mlx,
                    outcome: Outcome::Skipped,
                    reason,
                });
            }
            None => {
                let path = self.config.mlx_path().to_string();
                tracing::info!("Loading OLMoE via MLX: {path}");
                match self.load_with(BackendKind::Mlx, &path, on_layer) {
                    Ok((backend, tokenizer)) => {
                        attempts.push(Attempt {
                            backend: BackendKind::Mlx,
                            outcome: Outcome::Loaded,
                            reason: format!("loaded {path}"),
                        });
                        return Ok(self.finish(backend, tokenizer, None, path, attempts));
                    }
                    Err(e) => {
                        let reason = format!("failed: {e}");
                        tracing::warn!("MLX load failed, falling back to candle: {e}");
                        attempts.push(Attempt {
                            backend: BackendKind::Mlx,
                            outcome: Outcome::Failed,
                            reason,
                        });
                    }
                }
            }
        }

        // candle: the trainable path, with the action head.
        let path = self.config.model_name.clone();
        let candle = if need == Need::Backend(BackendKind::Mlx) {
            tracing::info!("candle skipped: not asked for (backend mlx)");
            Err(CandleMiss::Skip("not asked for (backend mlx)"))
        } else {
            tracing::info!("Loading OLMoE via candle: {path}");
            self.load_with(BackendKind::Candle, &path, on_layer)
                .and_then(|(backend, tokenizer)| {
                    let head = self.attach_head(backend.as_ref())?;
                    Ok((backend, tokenizer, head))
                })
                .map_err(CandleMiss::Failure)
        };
        match candle {
            Ok((backend, tokenizer, head)) => {
                attempts.push(Attempt {
                    backend: BackendKind::Candle,
                    outcome: Outcome::Loaded,
                    reason: format!("loaded {path}"),
                });
                Ok(self.finish(backend, tokenizer, Some(head), path, attempts))
            }
            Err(e) => {
                attempts.push(match e {
                    CandleMiss::Skip(reason) => Attempt {
                        backend: BackendKind::Candle,
                        outcome: Outcome::Skipped,
                        reason: reason.to_string(),
                    },
                    CandleMiss::Failure(e) => Attempt {
                        backend: BackendKind::Candle,
                        outcome: Outcome::Failed,
                        reason: format!("failed: {e}"),
                    },
                });
                let reasons = attempts
                    .iter()
                    .map(|a| format!("{}: {}", a.backend, a.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                let err = Error::NoBackend { reasons };
                tracing::error!("{err}");
                self.failed_attempts = attempts;
                Err(err)
            }
        }
    }

    fn load_with(
        &self,
        kind: BackendKind,
        model: &str,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<(Box<dyn Backend>, Option<Tokenizer>)> {
        let provider: &dyn BackendProvider = match kind {
            BackendKind::Mlx => self.mlx.as_ref(),
            BackendKind::Candle => &self.candle,
        };
        let backend = provider.load_reporting(&self.load_spec(model), on_layer)?;
        let dir = hub::resolve(model)?;
        // A checkpoint without a tokenizer (as converters and benchmarks write them) still
        // runs on token ids; what needs text says so ([`OlmoeModel::text_tokenizer`]).
        let tokenizer = match dir.join("tokenizer.json").exists() {
            true => Some(Tokenizer::from_dir(&dir)?),
            false => {
                tracing::info!("{}: no tokenizer.json; token ids only", dir.display());
                None
            }
        };
        Ok((backend, tokenizer))
    }

    /// What the backends are asked to load for `model`, from the caller's configuration.
    fn load_spec(&self, model: &str) -> LoadSpec {
        let c = &self.config;
        LoadSpec {
            model: model.to_string(),
            device: c.device,
            dtype: c.dtype,
            quantization: c.quantization,
            lora_path: c.lora_path.clone(),
            merge_lora: c.merge_lora,
            int8_activations: c.int8_activations,
        }
    }

    fn attach_head(&self, backend: &dyn Backend) -> Result<MemoryActionHead> {
        let width = backend.args().hidden_size;
        let head = match &self.config.action_head_path {
            Some(dir) => MemoryActionHead::load(dir, &Device::Cpu)?,
            None => MemoryActionHead::new(self.config.action_head.clone(), width, &Device::Cpu)?,
        };
        if head.input_dim() != width {
            return Err(Error::invalid(
                "action_head_path",
                format!(
                    "the head takes {} features, the model gives {width}",
                    head.input_dim()
                ),
            ));
        }
        Ok(head)
    }

    fn finish(
        &mut self,
        backend: Box<dyn Backend>,
        tokenizer: Option<Tokenizer>,
        head: Option<MemoryActionHead>,
        model_path: String,
        attempts: Vec<Attempt>,
    ) -> &LoadReport {
        let report = LoadReport {
            backend: backend.kind(),
            action_head: head.is_some(),
            model_path,
            attempts,
        };
        let loaded = self.loaded.insert(Loaded {
            backend,
            tokenizer,
            head,
            report,
            grammars: OnceLock::new(),
        });
        &loaded.report
    }

    /// The backend running the model; `None` until loaded.
    pub fn backend(&self) -> Option<BackendKind> {
        self.loaded.as_ref().map(|l| l.backend.kind())
    }

    /// Whether `load()` has succeeded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.is_some()
    }

    /// The report of the last successful `load()`.
    pub fn report(&self) -> Option<&LoadReport> {
        self.loaded.as_ref().map(|l| &l.report)
    }

    /// Every backend the last `load()` tried or skipped, in order, whether it found one (the
    /// attempts of [`Self::report`]) or not (each one's reason for failing); empty before any
    /// load.
    pub fn attempts(&self) -> &[Attempt] {
        match &self.loaded {
            Some(l) => &l.report.attempts,
            None => &self.failed_attempts,
        }
    }

    /// The memory action head: present after a candle load, `None` on MLX or before loading.
    pub fn action_head(&self) -> Option<&MemoryActionHead> {
        self.loaded.as_ref().and_then(|l| l.head.as_ref())
    }

    /// The loaded model, over plain data.
    pub fn model(&self) -> Option<&dyn Backend> {
        self.loaded.as_ref().map(|l| l.backend.as_ref())
    }

    /// The tokenizer: `None` before loading, and for a model directory without
    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.loaded.as_ref().and_then(|l| l.tokenizer.as_ref())
    }

    /// The tokenizer, for work on text: [`Error::NotLoaded`] before loading, and an
    /// [`Error::Tokenizer`] naming the missing file for a model loaded without one.
    pub fn text_tokenizer(&self) -> Result<&Tokenizer> {
        self.loaded()?.text_tokenizer()
    }

    fn loaded(&self) -> Result<&Loaded> {
        self.loaded.as_ref().ok_or(Error::NotLoaded)
    }

    /// Final-norm hidden states of each text, pooled as the config says: one vector of
    /// `hidden_size` floats per text, in the order given. Texts run in padded batches of like
    /// length under the configuration's `encode_batch_tokens` ([`token_batches`]), so a pass
    /// allocates what the budget allows whatever the number of texts.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let loaded = self.loaded()?;
        let batch = texts
            .iter()
            .map(|text| loaded.text_tokenizer()?.encode(text, true))
            .collect::<Result<Vec<_>>>()?;
        self.encode_ids(&batch)
    }

    /// [`encode`](Self::encode) for texts already tokenized (with special tokens, as
    /// `encode` does): a caller that counted the tokens need not tokenize twice.
    pub fn encode_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.encode_ids_until(batch, &Cancel::new())
    }

    /// [`encode_ids`](Self::encode_ids) that checks `cancel` before each forward pass and stops
    /// with [`Error::Cancelled`] once it is raised.
    pub fn encode_ids_until(&self, batch: &[Vec<u32>], cancel: &Cancel) -> Result<Vec<Vec<f32>>> {
        let loaded = self.loaded()?;
        let _span = tracing::info_span!("encode", texts = batch.len()).entered();
        if let Some(i) = batch.iter().position(Vec::is_empty) {
            return Err(Error::invalid("texts", format!("text {i} has no tokens")));
        }
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); batch.len()];
        for part in token_batches(&lens, self.config.encode_batch_tokens) {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled { what: "encode" });
            }
            let ids: Vec<Vec<u32>> = part.iter().map(|&i| batch[i].clone()).collect();
            let vectors = loaded.backend.encode(&ids, self.config.pooling)?;
            if vectors.len() != part.len() {
                return Err(Error::internal(
                    "encode",
                    format!("{} vectors for {} texts", vectors.len(), part.len()),
                ));
            }
            for (i, v) in part.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The grammar compiler over this model's tokenizer (constrained decoding), built on first
    /// use and shared: compile a [`Grammar`] into a [`crate::generate::Constraint`] per sequence.
    pub fn grammars(&self) -> Result<Arc<Grammars>> {
        let loaded = self.loaded()?;
        if let Some(g) = loaded.grammars.get() {
            return Ok(g.clone());
        }
        let built = Arc::new(Grammars::new(
            loaded.text_tokenizer()?,
            loaded.backend.args().vocab_size,
        )?);
        Ok(loaded.grammars.get_or_init(|| built).clone())
    }

    /// Generates JSON valid under `schema` after the prompt `prompt` (token ids) and parses it.
    /// A schema llguidance refuses is [`Error::Grammar`]; an output cut off before the JSON is
    /// complete, by `max_tokens` or the context, or by one of `params.stop`, is
    /// [`Error::Invalid`] naming `max_tokens` or `stop`.
    pub fn generate_json(
        &self,
        prompt: &[u32],
        schema: &serde_json::Value,
        params: &GenerateParams,
    ) -> Result<serde_json::Value> {
        let loaded = self.loaded()?;
        let constraint = self
            .grammars()?
            .compile(&Grammar::JsonSchema(schema.clone()))?;
        let g = generate_constrained(
            loaded.backend.as_ref(),
            loaded.text_tokenizer()?,
            prompt,
            params,
            constraint,
            |_| {},
        )?;
        if g.finish_reason == FinishReason::Length {
            return Err(Error::invalid(
                "max_tokens",
                format!(
                    "the JSON was cut off after {} tokens, before it was complete",
                    g.tokens.len()
                ),
            ));
        }
        serde_json::from_str(&g.text).map_err(|e| match params.stop.is_empty() {
            false => Error::invalid(
                "stop",
                format!("a stop string cut the JSON before it was complete: {e}"),
            ),
            true => Error::internal(
                "constrained decoding",
                format!("the output is not the JSON its schema allows: {e}"),
            ),
        })
    }

    /// Decides what to do with `fact` given the agent's `memories` (candle path only).
    pub fn act(&self, fact: &str, memories: &[Memory]) -> Result<Action> {
        let loaded = self.loaded()?;
        let fact = loaded.text_tokenizer()?.encode(fact, true)?;
        let memories = memories
            .iter()
            .map(|m| {
                Ok((
                    m.id.clone(),
                    loaded.text_tokenizer()?.encode(&m.text, true)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.act_ids(fact, memories)
    }

    /// [`act`](Self::act) for a fact and memories (id, token ids) already tokenized.
    pub fn act_ids(&self, fact: Vec<u32>, memories: Vec<(String, Vec<u32>)>) -> Result<Action> {
        self.act_ids_until(fact, memories, &Cancel::new())
    }

    /// [`act_ids`](Self::act_ids) whose encoding stops once `cancel` is raised
    /// ([`encode_ids_until`](Self::encode_ids_until)).
    pub fn act_ids_until(
        &self,
        fact: Vec<u32>,
        memories: Vec<(String, Vec<u32>)>,
        cancel: &Cancel,
    ) -> Result<Action> {
        let loaded = self.loaded()?;
        let head = loaded.head.as_ref().ok_or(Error::NeedsCandle {
            what: "the memory action head",
            backend: loaded.backend.kind(),
        })?;
        let (ids, mut batch): (Vec<String>, Vec<Vec<u32>>) = memories.into_iter().unzip();
        batch.insert(0, fact);
        let mut vectors = self.encode_ids_until(&batch, cancel)?.into_iter();
        let fact_vec = vectors.next().ok_or(Error::NotLoaded)?;
        let candidates: Vec<(String, Vec<f32>)> = ids.into_iter().zip(vectors).collect();
        head.decide(&fact_vec, &candidates)
    }
}

/// Reads a memories file: one JSON object `{"id": "...", "text": "..."}` per line; blank lines
/// are skipped. Errors name the file and line.
pub fn read_memories(path: &Path) -> Result<Vec<Memory>> {
    let mut out: Vec<Memory> = Vec::new();
    crate::io::for_each_jsonl_line(path, |_, line| {
        let m: Memory = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if out.iter().any(|o| o.id == m.id) {
            return Err(format!("duplicate memory id `{}`", m.id));
        }
        out.push(m);
        Ok(())
    })?;
    Ok(out)
}
