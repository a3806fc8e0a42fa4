//! Attention's decode path on the CPU: one f32 query per sequence against the cache as it lies
//! in the session's buffer, through [`crate::kernels::attention::decode`] instead of two
//! batched matrix products and a softmax.

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};

use super::Attention;
use crate::error::Result;
use crate::kernels::attention::{self, CacheView, Heads};

impl Attention {
    /// `softmax(q·Kᵀ/√D)·V` for q [B, heads, 1, D] (unscaled) and the cached k, v
    /// [B, kv_heads, L, D], on the CPU in f32; `None` where this path does not apply (another
    /// device or dtype, more than one query, a layout it does not read), for the general path.
    pub(super) fn decode_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Option<Tensor>> {
        let (b, heads, t, d) = q.dims4()?;
        let (kb, kv_heads, len, kd) = k.dims4()?;
        if !q.device().is_cpu()
            || [q.dtype(), k.dtype(), v.dtype()] != [DType::F32; 3]
            || t != 1
            || (kb, kd) != (b, d)
            || v.dims4()? != (b, kv_heads, len, d)
            || kv_heads == 0
            || heads % kv_heads != 0
        {
            return Ok(None);
        }
        let q = q.contiguous()?;
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (Some(qd), Some(keys), Some(values)) = (
            f32_data(&qs)
                .and_then(|s| s.get(ql.start_offset()..ql.start_offset() + q.elem_count())),
            f32_data(&ks).and_then(|s| view(s, kl, len, d)),
            f32_data(&vs).and_then(|s| view(s, vl, len, d)),
        ) else {
            return Ok(None);
        };
        let shape = Heads {
            batch: b,
            heads,
            kv_heads,
            head_dim: d,
        };
        let scale = self.softmax_scale() as f32;
        let Some(out) = attention::decode(qd, keys, values, shape, scale) else {
            return Ok(None);
        };
        Ok(Some(Tensor::from_vec(out, (b, heads, 1, d), q.device())?))
    }
}

/// The f32 data of a CPU storage.
fn f32_data(s: &Storage) -> Option<&[f32]> {
    match s {
        Storage::Cpu(CpuStorage::F32(v)) => Some(v),
        _ => None,
    }
}

/// `data` under `layout` [B, heads, len, d] as a [`CacheView`]: rows of `d` contiguous values,
/// one position after another.
fn view<'a>(data: &'a [f32], layout: &Layout, len: usize, d: usize) -> Option<CacheView<'a>> {
    match layout.stride() {
        &[batch_stride, head_stride, row, 1] if row == d || len <= 1 => Some(CacheView {
            data,
            offset: layout.start_offset(),
            batch_stride,
            head_stride,
            len,
        }),
        _ => None,
    }
}
