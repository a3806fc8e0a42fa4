//! q, k and v joined into one projection for the fused GPU path, at load.

use candle_core::Tensor;

use super::super::linear::Linear;
use crate::error::Result;

/// On a GPU with the fused kernels, dense q, k and v projections without bias joined into one
/// [q + 2·kv, H] matrix, and the three as views of it; `None` otherwise.
pub(super) fn joint_qkv(
    q: &Linear,
    k: &Linear,
    v: &Linear,
) -> Result<Option<(Linear, [Linear; 3])>> {
    let dense = |l: &Linear| match l {
        Linear::Dense { weight, bias: None } if fused_runs(weight) => Some(weight.clone()),
        _ => None,
    };
    let (Some(q), Some(k), Some(v)) = (dense(q), dense(k), dense(v)) else {
        return Ok(None);
    };
    if q.dtype() != k.dtype() || k.dtype() != v.dtype() {
        return Ok(None);
    }
    let (nq, nk, nv) = (q.dim(0)?, k.dim(0)?, v.dim(0)?);
    let joint = Tensor::cat(&[&q, &k, &v], 0)?;
    let view =
        |start, len| -> Result<Linear> { Ok(Linear::dense(joint.narrow(0, start, len)?, None)) };
    let views = [view(0, nq)?, view(nq, nk)?, view(nq + nk, nv)?];
    Ok(Some((Linear::dense(joint, None), views)))
}

/// Whether the fused CUDA kernels take tensors like `x` (never without CUDA).
fn fused_runs(x: &Tensor) -> bool {
    #[cfg(feature = "cuda")]
    return super::super::fused_cuda::runs(x);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = x;
        false
    }
}
