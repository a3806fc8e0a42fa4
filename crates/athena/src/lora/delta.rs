//! One low-rank update and the reading of its factors from an adapter's weight file.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::WeightFiles;
use crate::error::{Error, Result};

/// One low-rank update: ΔW = scale · B·A, with A [r, in], B [out, r] (f32, on the device
/// given to [`LoraAdapter::load`]).
#[derive(Debug, Clone)]
pub struct LoraDelta {
    /// [r, in].
    pub a: Tensor,
    /// [out, r].
    pub b: Tensor,
    /// The factor in front of B·A.
    pub scale: f64,
}

impl LoraDelta {
    /// The rank r.
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// The dense update scale · B·A, [out, in] f32.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }
}

/// Opens the adapter's weights, naming the file when it is missing.
pub(crate) fn open_weights(path: &Path, what: &str) -> Result<WeightFiles> {
    if !path.is_file() {
        return Err(Error::checkpoint(
            path,
            format!("missing: {what} adapter keeps its weights in this file"),
        ));
    }
    WeightFiles::open_files(&[path.to_path_buf()])
}

/// Loads `name` as f32 on the CPU, refusing non-float dtypes and NaN or infinite values.
pub(crate) fn load_f32(files: &WeightFiles, name: &str) -> Result<Tensor> {
    let t = files.load(name, &Device::Cpu)?;
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(Error::tensor(
            name,
            format!("dtype {:?} is not a float type", t.dtype()),
        ));
    }
    let t = t.to_dtype(DType::F32)?;
    // 0·x is 0 for every finite x and NaN for NaN and ±inf.
    let probe = (&t * 0.0)?.sum_all()?.to_scalar::<f32>()?;
    if probe != 0.0 {
        return Err(Error::tensor(name, "holds NaN or infinite values"));
    }
    Ok(t)
}
