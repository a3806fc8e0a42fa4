//! `train_head`: one training run of the memory action head, as `athena train-head` runs it
//! ([`HeadTraining::run`]), with its options as keyword arguments.

use std::path::PathBuf;

use athena::train::grpo::LossType;
use athena::train::run::HeadTraining;
use athena::train::trainer::Mode;
use pyo3::conversion::FromPyObjectOwned;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::to_python;
use crate::errors::{model_error, user_error};
use crate::model::PyOlmoeModel;
use crate::shared::read;

/// A keyword option's value, or the caller's error naming it.
fn value<'py, T: FromPyObjectOwned<'py>>(key: &str, v: &Bound<'py, PyAny>) -> PyResult<T> {
    v.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        user_error(format!("train_head option {key}: {e}"))
    })
}

/// Sets the option `key` of `run`.
fn set_option(run: &mut HeadTraining, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
    let c = &mut run.config;
    match key {
        "steps" => c.steps = value(key, v)?,
        "batch_size" => c.batch_size = value(key, v)?,
        "group_size" => c.group_size = value(key, v)?,
        "mu" => c.mu = value(key, v)?,
        "lr" => c.lr = value(key, v)?,
        "weight_decay" => c.weight_decay = value(key, v)?,
        "warmup_steps" => c.warmup_steps = value(key, v)?,
        "max_grad_norm" => c.max_grad_norm = value(key, v)?,
        "seed" => c.seed = value(key, v)?,
        "eval_every" => c.eval_every = value(key, v)?,
        "epsilon" => c.grpo.epsilon = value(key, v)?,
        "epsilon_high" => c.grpo.epsilon_high = value(key, v)?,
        "beta" => c.grpo.beta = value(key, v)?,
        "loss_type" => {
            c.grpo.loss_type = match value::<String>(key, v)?.as_str() {
                "grpo" => LossType::Grpo,
                "dapo" => LossType::Dapo,
                "dr_grpo" => LossType::DrGrpo,
                "bnpo" => LossType::Bnpo,
                other => {
                    return Err(user_error(format!(
                        "train_head option loss_type: `{other}` is not grpo, dapo, dr_grpo or bnpo"
                    )))
                }
            }
        }
        "ref_head" => run.ref_head = value(key, v)?,
        "checkpoint_every" => run.checkpoint_every = value(key, v)?,
        "resume" => run.resume = value(key, v)?,
        "overwrite" => run.overwrite = value(key, v)?,
        "cache_dir" => run.cache_dir = value(key, v)?,
        "proj_dim" => run.proj_dim = value(key, v)?,
        other => return Err(user_error(format!("train_head: no option `{other}`"))),
    }
    Ok(())
}

/// Trains the memory action head of `model` (loaded on the candle path) on the examples in
/// `train`, evaluates on `eval` and writes the head, its checkpoint and `train_log.jsonl` to
/// `out`. `mode` is "grpo" or "sft"; the options and their defaults are those of
/// `athena train-head` (steps=1500, batch_size=16, lr=3e-3, ...). Returns the report
/// `athena train-head --json` prints.
#[pyfunction]
#[pyo3(signature = (model, train, eval, out, mode = "grpo", **options))]
pub fn train_head<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyOlmoeModel>,
    train: PathBuf,
    eval: PathBuf,
    out: PathBuf,
    mode: &str,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut run = HeadTraining::new(train, eval, out);
    run.config.mode = match mode {
        "grpo" => Mode::Grpo,
        "sft" => Mode::Sft,
        other => {
            return Err(user_error(format!(
                "train_head: mode `{other}` is not grpo or sft"
            )))
        }
    };
    if let Some(options) = options {
        for (key, v) in options.iter() {
            let key: String = key.extract()?;
            set_option(&mut run, &key, &v)?;
        }
    }
    let model = model.get().model.clone();
    let summary = py
        .detach(move || {
            run.check()?;
            run.run(&read(&model), |_| {})
        })
        .map_err(model_error)?;
    to_python(py, &summary.to_json())
}
