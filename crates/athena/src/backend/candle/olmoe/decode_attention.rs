//! Attention's decode path on the CPU: one query per sequence (f32 or bf16) against the cache
//! as it lies in the session's buffer, through [`crate::kernels::attention::decode_each`]
//! instead of two batched matrix products and a softmax.

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};

use super::attention::Attention;
use crate::error::Result;
use crate::kernels::attention::{self, CacheView, Heads, Query, Value};

impl Attention {
    /// `softmax(q·Kᵀ/√D)·V` for q [B, heads, 1, D] (unscaled) and the cached k, v
    /// [B, kv_heads, L, D] of one batch, through [`Self::decode_attention_each`] with each
    /// sequence's part of the cache; `None` where that path does not apply.
    pub(super) fn decode_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Option<Tensor>> {
        let (b, heads, t, d) = q.dims4()?;
        if t != 1 || k.dim(0)? != b || v.dim(0)? != b {
            return Ok(None);
        }
        let kvs = (0..b)
            .map(|i| Ok((k.narrow(0, i, 1)?, v.narrow(0, i, 1)?)))
            .collect::<Result<Vec<_>>>()?;
        // [1, heads, B, D]: sequence i's query in column i.
        let Some(out) = self.decode_attention_each(&q.transpose(0, 2)?, &kvs)? else {
            return Ok(None);
        };
        Ok(Some(out.reshape((b, 1, heads, d))?.transpose(1, 2)?))
    }
}

impl Attention {
    /// Attention for several sequences of one new token each (a server's decode step), every
    /// sequence against its own cache, in one pass: q [1, heads, S, D] (unscaled, sequence `i`
    /// in column `i`) and `kvs[i]` = sequence i's keys and values [1, kv_heads, L_i, D].
    /// Returns [1, S, heads·D]; `None` where the decode path does not apply.
    pub(super) fn decode_attention_each(
        &self,
        q: &Tensor,
        kvs: &[(Tensor, Tensor)],
    ) -> Result<Option<Tensor>> {
        let (b, heads, s, d) = q.dims4()?;
        let dtype = q.dtype();
        if !q.device().is_cpu()
            || !matches!(dtype, DType::F32 | DType::BF16)
            || b != 1
            || s != kvs.len()
        {
            return Ok(None);
        }
        let mut kv_heads = None;
        for (k, v) in kvs {
            let (kb, kh, len, kd) = k.dims4()?;
            let same = [k.dtype(), v.dtype()] == [dtype; 2]
                && (kb, kd) == (1, d)
                && v.dims4()? == (1, kh, len, d)
                && kh > 0
                && heads % kh == 0
                && *kv_heads.get_or_insert(kh) == kh;
            if !same {
                return Ok(None);
            }
        }
        let shape = Heads {
            heads,
            kv_heads: kv_heads.unwrap_or(heads),
            head_dim: d,
        };
        let scale = self.softmax_scale() as f32;
        // [1, S, heads, D]: each sequence's query heads side by side.
        let qt = q.transpose(1, 2)?.contiguous()?;
        let (qs, ql) = qt.storage_and_layout();
        let held: Vec<_> = kvs
            .iter()
            .map(|(k, v)| (k.storage_and_layout(), v.storage_and_layout()))
            .collect();
        let parts: Vec<_> = held
            .iter()
            .map(|((ks, kl), (vs, vl))| (&**ks, *kl, &**vs, *vl))
            .collect();
        let out = match &*qs {
            Storage::Cpu(CpuStorage::F32(qd)) => each(qd, ql, &parts, shape, scale, |s| match s {
                Storage::Cpu(CpuStorage::F32(v)) => Some(v.as_slice()),
                _ => None,
            }),
            Storage::Cpu(CpuStorage::BF16(qd)) => each(qd, ql, &parts, shape, scale, |s| match s {
                Storage::Cpu(CpuStorage::BF16(v)) => Some(v.as_slice()),
                _ => None,
            }),
            _ => None,
        };
        let Some(out) = out else {
            return Ok(None);
        };
        let out = Tensor::from_vec(out, (1, s, heads * d), q.device())?.to_dtype(dtype)?;
        Ok(Some(out))
    }
}

/// The storages and layouts of one sequence's keys and values.
type Parts<'a> = (&'a Storage, &'a Layout, &'a Storage, &'a Layout);

/// [`attention::decode_each`] on the queries in `q` (under `ql`, [1, S, heads, D]) and the
/// caches in `parts`, `pick` reading a storage as `V`; `None` when something does not fit.
fn each<'a, V: Value>(
    q: &'a [V],
    ql: &Layout,
    parts: &[Parts<'a>],
    shape: Heads,
    scale: f32,
    pick: impl Fn(&'a Storage) -> Option<&'a [V]>,
) -> Option<Vec<f32>> {
    let per = shape.heads * shape.head_dim;
    let queries: Option<Vec<Query<'a, V>>> = parts
        .iter()
        .enumerate()
        .map(|(i, &(ks, kl, vs, vl))| {
            let at = ql.start_offset() + i * per;
            let len = kl.dims().get(2).copied()?;
            Some(Query {
                q: q.get(at..at + per)?,
                keys: view(pick(ks)?, kl, len, shape.head_dim)?,
                values: view(pick(vs)?, vl, len, shape.head_dim)?,
            })
        })
        .collect();
    let outs = attention::decode_each(&queries?, shape, scale)?;
    Some(outs.concat())
}

/// `data` under `layout` [1, heads, len, d] as a [`CacheView`]: rows of `d` contiguous values,
/// one position after another.
fn view<'a, V>(data: &'a [V], layout: &Layout, len: usize, d: usize) -> Option<CacheView<'a, V>> {
    match layout.stride() {
        &[_, head_stride, row, 1] if row == d || len <= 1 => Some(CacheView {
            data,
            offset: layout.start_offset(),
            head_stride,
            len,
        }),
        _ => None,
    }
}
