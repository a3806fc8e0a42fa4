//! `OLMoEModel`: athena's [`OlmoeModel`] for Python. `load()` picks MLX first when enabled and
//! available, else candle with the memory action head; every call that runs the model releases
//! the GIL, and the model is shared (behind a lock) with its tokenizer, its generation streams
//! and the memory banks that use it.

use std::sync::{Arc, RwLock};

use athena::generate::{GenerateParams, SamplingParams};
use athena::models::olmoe::{Memory, OlmoeModel};
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use crate::config::PyOlmoeConfig;
use crate::convert::{from_python, serialize_to_python};
use crate::errors::{model_error, user_error};
use crate::head::PyActionHead;
use crate::shared::{loaded_parts, read, write, SharedModel};
use crate::stream::PyGenerationStream;
use crate::tokenizer::PyTokenizer;

/// OLMoE as the agent sees it: create with a config, then `load()`.
#[pyclass(name = "OLMoEModel", module = "athena", frozen)]
pub struct PyOlmoeModel {
    pub(crate) model: SharedModel,
    /// The configuration the model was made with.
    config: Py<PyOlmoeConfig>,
}

/// What `generate` and `stream_generate` were asked, as the library's parameters.
#[allow(clippy::too_many_arguments)]
fn generate_params(
    max_tokens: usize,
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: u64,
    stop: Option<Vec<String>>,
) -> PyResult<GenerateParams> {
    let sampling = SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        seed,
    };
    sampling.validate().map_err(model_error)?;
    Ok(GenerateParams {
        max_tokens,
        sampling,
        stop: stop.unwrap_or_default(),
        skip_special_tokens: true,
    })
}

#[pymethods]
impl PyOlmoeModel {
    /// A model to be loaded according to `config` (default: `OLMoEConfig()`). Nothing is read
    /// until `load()`.
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(py: Python<'_>, config: Option<Py<PyOlmoeConfig>>) -> PyResult<Self> {
        let config = match config {
            Some(c) => c,
            None => Py::new(
                py,
                PyOlmoeConfig {
                    inner: Default::default(),
                },
            )?,
        };
        let model = OlmoeModel::new(config.get().inner.clone());
        Ok(PyOlmoeModel {
            model: Arc::new(RwLock::new(model)),
            config,
        })
    }

    /// Loads the model: MLX first when `use_mlx` is set and MLX is available, else (or on
    /// its failure) candle with the memory action head. Returns False when no backend loads;
    /// the reasons go to the `athena` logger, as the Rust log says them.
    fn load(&self, py: Python<'_>) -> PyResult<bool> {
        let model = self.model.clone();
        match py.detach(move || write(&model).load().map(|_| ())) {
            Ok(()) => Ok(true),
            Err(athena::Error::NoBackend { .. }) => Ok(false),
            Err(e) => Err(model_error(e)),
        }
    }

    /// The configuration.
    #[getter]
    fn config(&self, py: Python<'_>) -> Py<PyOlmoeConfig> {
        self.config.clone_ref(py)
    }

    /// "mlx" or "candle" once loaded; None before.
    #[getter]
    fn backend(&self, py: Python<'_>) -> Option<String> {
        let model = self.model.clone();
        py.detach(move || read(&model).backend().map(|b| b.to_string()))
    }

    /// Whether `load()` has succeeded.
    #[getter]
    fn is_loaded(&self, py: Python<'_>) -> bool {
        let model = self.model.clone();
        py.detach(move || read(&model).is_loaded())
    }

    /// Each backend the last `load()` tried or skipped, in order, with why:
    /// `{"backend", "outcome", "reason"}` dicts ("skipped", "failed" or "loaded"); also after
    /// a load that found no backend; empty before any load.
    #[getter]
    fn load_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let model = self.model.clone();
        let attempts = py.detach(move || read(&model).attempts().to_vec());
        serialize_to_python(py, &attempts)
    }

    /// The memory action head: present after a candle load; None on MLX or before loading.
    #[getter]
    fn action_head(&self, py: Python<'_>) -> Option<PyActionHead> {
        let model = self.model.clone();
        py.detach(move || {
            let m = read(&model);
            m.action_head()
                .map(|h| PyActionHead::describe(h, m.config().action_head_path.as_deref()))
        })
    }

    /// The tokenizer of the loaded model.
    #[getter]
    fn tokenizer(&self, py: Python<'_>) -> PyResult<PyTokenizer> {
        let model = self.model.clone();
        py.detach(move || PyTokenizer::of(model))
    }

    /// Final-norm hidden states of each text, pooled as the config says: a float32
    /// `numpy.ndarray` of shape `[len(texts), hidden_size]`.
    fn encode<'py>(&self, py: Python<'py>, texts: Vec<String>) -> PyResult<Bound<'py, PyAny>> {
        let model = self.model.clone();
        let (vectors, hidden) = py
            .detach(move || {
                let m = read(&model);
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let hidden = m.model().map(|b| b.args().hidden_size);
                m.encode(&refs).map(|v| (v, hidden.unwrap_or(0)))
            })
            .map_err(model_error)?;
        vectors_to_numpy(py, &vectors, hidden)
    }

    /// What the memory action head does with `fact` given `memories` (a list of
    /// `{"id": ..., "text": ...}` dicts): `{"op", "target", "probabilities",
    /// "target_probabilities"}`, as `athena act --json` prints it. Candle path only.
    fn act<'py>(
        &self,
        py: Python<'py>,
        fact: String,
        memories: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let memories: Vec<Memory> = serde_json::from_value(from_python(memories)?)
            .map_err(|e| user_error(format!("memories: {e}")))?;
        let model = self.model.clone();
        let action = py
            .detach(move || read(&model).act(&fact, &memories))
            .map_err(model_error)?;
        serialize_to_python(py, &action)
    }

    /// Text generated after `prompt` (tokenized with its special tokens, as
    /// `athena generate` does); temperature 0 is greedy. With `stream=True`, an iterator of
    /// text pieces instead (see `stream_generate`).
    #[pyo3(signature = (prompt, max_tokens = 128, temperature = 0.0, top_k = None, top_p = None,
        min_p = None, repetition_penalty = None, seed = 0, stop = None, stream = false))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: String,
        max_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repetition_penalty: Option<f32>,
        seed: u64,
        stop: Option<Vec<String>>,
        stream: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let params = generate_params(
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            seed,
            stop,
        )?;
        if stream {
            let stream = PyGenerationStream::start(self.model.clone(), prompt, params);
            return Ok(Bound::new(py, stream)?.into_any());
        }
        let model = self.model.clone();
        let text = py
            .detach(move || {
                let m = read(&model);
                let (backend, tokenizer) = loaded_parts(&m)?;
                let ids = tokenizer.encode(&prompt, true)?;
                athena::generate::generate(backend, tokenizer, &ids, &params, |_| {})
                    .map(|g| g.text)
            })
            .map_err(model_error)?;
        Ok(text.into_pyobject(py)?.into_any())
    }

    /// An iterator of the text of `generate(...)`, piece by piece as it is generated (never
    /// part of a character). Generation runs on a thread of its own and stops at the next
    /// token once the iterator is dropped.
    #[pyo3(signature = (prompt, max_tokens = 128, temperature = 0.0, top_k = None, top_p = None,
        min_p = None, repetition_penalty = None, seed = 0, stop = None))]
    #[allow(clippy::too_many_arguments)]
    fn stream_generate(
        &self,
        prompt: String,
        max_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repetition_penalty: Option<f32>,
        seed: u64,
        stop: Option<Vec<String>>,
    ) -> PyResult<PyGenerationStream> {
        let params = generate_params(
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            seed,
            stop,
        )?;
        Ok(PyGenerationStream::start(
            self.model.clone(),
            prompt,
            params,
        ))
    }

    /// The model's name and the backend running it.
    fn __repr__(&self, py: Python<'_>) -> String {
        let model = self.model.clone();
        let (name, backend) = py.detach(move || {
            let m = read(&model);
            (
                m.config().model_name.clone(),
                m.backend().map(|b| b.to_string()),
            )
        });
        match backend {
            Some(b) => format!("OLMoEModel('{name}', backend='{b}')"),
            None => format!("OLMoEModel('{name}', not loaded)"),
        }
    }
}

/// Vectors of `hidden` floats as a float32 numpy array `[n, hidden]`: the floats are copied
/// once, into the bytearray the array is a view of.
fn vectors_to_numpy<'py>(
    py: Python<'py>,
    vectors: &[Vec<f32>],
    hidden: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(v) = vectors.iter().find(|v| v.len() != hidden) {
        return Err(model_error(athena::Error::internal(
            "encode",
            format!(
                "a vector of {} floats for a hidden size of {hidden}",
                v.len()
            ),
        )));
    }
    let bytes = PyByteArray::new_with(py, vectors.len() * hidden * 4, |buf| {
        for (row, v) in buf.chunks_exact_mut(hidden.max(1) * 4).zip(vectors) {
            for (out, x) in row.chunks_exact_mut(4).zip(v) {
                out.copy_from_slice(&x.to_ne_bytes());
            }
        }
        Ok(())
    })?;
    let numpy = py.import("numpy")?;
    let array = numpy.call_method1("frombuffer", (bytes, numpy.getattr("float32")?))?;
    array.call_method1("reshape", (vectors.len(), hidden))
}
