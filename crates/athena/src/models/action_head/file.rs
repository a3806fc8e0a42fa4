//! The head on disk: a directory holding [`WEIGHTS_FILE`] (every parameter by name, f32) and
//! [`CONFIG_FILE`] (`{"config": .., "input_dim": .., "format_version": 2}`), each written
//! atomically, weights first.

use std::path::Path;

use candle_core::{Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::config::{check_dims, ActionHeadConfig};
use super::head::MemoryActionHead;
use super::params::{per_param, Param};
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// File name of a saved head's weights.
pub const WEIGHTS_FILE: &str = "head.safetensors";
/// File name of a saved head's configuration.
pub const CONFIG_FILE: &str = "head_config.json";
/// The version of the on-disk format written by [`MemoryActionHead::save`].
pub const FORMAT_VERSION: u32 = 2;

/// The contents of [`CONFIG_FILE`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadFile {
    config: ActionHeadConfig,
    input_dim: usize,
    format_version: u32,
}

impl MemoryActionHead {
    /// Writes [`WEIGHTS_FILE`] then [`CONFIG_FILE`] into `dir` (created if needed), each
    /// atomically. A head whose parameters are not all finite is refused, so that whatever
    /// is saved can be loaded.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let _span = tracing::debug_span!("action_head.save", dir = %dir.display()).entered();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let mut buffers = Vec::new();
        for param in Param::ALL {
            let (name, tensor) = (param.name(), self.param(param));
            let values = tensor.flatten_all()?.to_vec1::<f32>()?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::tensor(
                    name,
                    format!(
                        "value {i} is not finite; refusing to save a head that cannot be loaded"
                    ),
                ));
            }
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((name, tensor.dims().to_vec(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                Ok((*name, TensorView::new(Dtype::F32, shape.clone(), bytes)?))
            })
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .and_then(|views| safetensors::serialize(views, None))
            .map_err(|e| Error::checkpoint(&weights_path, format!("cannot serialise: {e}")))?;
        write_atomic(&weights_path, |tmp| {
            std::fs::write(tmp, &views).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })?;

        let config_path = dir.join(CONFIG_FILE);
        let file = HeadFile {
            config: self.config().clone(),
            input_dim: self.input_dim(),
            format_version: FORMAT_VERSION,
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::config(&config_path, format!("cannot serialise: {e}")))?;
        write_atomic(&config_path, |tmp| {
            std::fs::write(tmp, &json).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })
    }

    /// Reads a head saved by [`MemoryActionHead::save`]. The configuration must parse and
    /// validate, and the weights must hold exactly the expected tensors, each f32, of the
    /// expected shape, with finite values; errors name the file and the tensor.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let _span = tracing::debug_span!("action_head.load", dir = %dir.display()).entered();
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let file: HeadFile = serde_json::from_slice(&text)
            .map_err(|e| Error::config(&config_path, e.to_string()))?;
        if file.format_version != FORMAT_VERSION {
            return Err(Error::config(
                &config_path,
                format!(
                    "format_version {} is not supported (expected {FORMAT_VERSION})",
                    file.format_version
                ),
            ));
        }
        file.config
            .validate()
            .and_then(|()| check_dims(&file.config, file.input_dim))
            .map_err(|e| Error::config(&config_path, e.to_string()))?;

        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path).map_err(|source| Error::Io {
            path: weights_path.clone(),
            source,
        })?;
        let bad = |msg: String| Error::checkpoint(&weights_path, msg);
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let mut names = st.names();
        names.sort_unstable();
        if let Some(extra) = names.iter().find(|n| Param::from_name(n).is_none()) {
            return Err(bad(format!("unexpected tensor `{extra}`")));
        }
        let dims = file.config.dims(file.input_dim);
        let tensors = per_param(|param| {
            let name = param.name();
            let view = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
            let shape = param.shape(dims);
            if view.shape() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("tensor `{name}`: value {i} is not finite")));
            }
            Ok(Tensor::from_vec(values, shape, device)?)
        })?;
        Self::from_tensors(file.config, file.input_dim, tensors, device)
    }
}
