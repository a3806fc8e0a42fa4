//! The attention masks and the grouped-query head repetition.

use candle_core::{DType, Device, Tensor};

use super::super::session::LayerCache;
use crate::error::Result;

/// The mask of `t` new tokens of one sequence after what `cache` holds: none for one token.
pub(super) fn step_mask(
    cache: &Option<LayerCache>,
    t: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    match t {
        1 => Ok(None),
        _ => {
            let past = cache.as_ref().map_or(0, LayerCache::len);
            Ok(Some(causal_mask(past, t, dtype, device)?))
        }
    }
}

/// The additive mask [1, 1, t, past + t] of `t` new queries after `past` cached columns: query
/// q sees keys up to `past + q`.
pub(super) fn causal_mask(past: usize, t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let keys = past + t;
    let m: Vec<f32> = (0..t)
        .flat_map(|q| {
            (0..keys).map(move |k| {
                if k <= past + q {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (1, 1, t, keys), device)?.to_dtype(dtype)?)
}

/// [B, kv, T, D] → [B, kv·n, T, D], each kv head repeated n times in place.
pub(super) fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, n, t, d))?
        .reshape((b, kv * n, t, d))?)
}
