//! Per-group scales or biases, kept as f32 or, to halve their memory, as f16 or bf16 (the
//! dtype of an mlx-lm checkpoint's scales is kept as stored: bf16 widens to f32 exactly,
//! a row block at a time through [`crate::kernels::widen_bf16`]). Kernels read them as
//! stored through [`GroupValues`].

use std::borrow::Cow;

use half::{bf16, f16};

use crate::kernels::GroupValues;

/// One value per group, row-major [rows, groups].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalars {
    /// Full precision (what MLX checkpoints in f32 and `mx.quantize` give).
    F32(Vec<f32>),
    /// Half precision: 2 bytes a group instead of 4.
    F16(Vec<f16>),
    /// bfloat16, as mlx-lm checkpoints of bf16 models store them.
    Bf16(Vec<bf16>),
}

impl Scalars {
    /// Row `row` as f32 values, `None` past the end.
    pub(crate) fn row(&self, row: usize, groups: usize) -> Option<Cow<'_, [f32]>> {
        match self {
            Scalars::F32(v) => v.chunks_exact(groups).nth(row).map(Cow::Borrowed),
            Scalars::F16(v) => v
                .chunks_exact(groups)
                .nth(row)
                .map(|r| Cow::Owned(r.iter().map(|h| h.to_f32()).collect())),
            Scalars::Bf16(v) => v
                .chunks_exact(groups)
                .nth(row)
                .map(|r| Cow::Owned(r.iter().map(|h| h.to_f32()).collect())),
        }
    }

    /// Row `row` (in range) as f32: borrowed, or converted into `buf` (`groups` long).
    #[inline]
    pub(crate) fn row_in<'a>(&'a self, row: usize, groups: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.rows_in(row, 1, groups, buf)
    }

    /// Rows `first..first + count` (in range), row-major, as f32: borrowed, or converted
    /// into `buf` (`count · groups` long) in one pass.
    #[inline]
    pub(crate) fn rows_in<'a>(
        &'a self,
        first: usize,
        count: usize,
        groups: usize,
        buf: &'a mut [f32],
    ) -> &'a [f32] {
        match self
            .values()
            .slice(first * groups..(first + count) * groups)
        {
            GroupValues::F32(v) => v,
            half => {
                let buf = &mut buf[..count * groups];
                half.widened(buf);
                buf
            }
        }
    }

    /// Asks the cache for rows `first..first + count` (a hint: rows past the end are
    /// skipped). Half-precision rows are widened before the products that use them, so a
    /// miss there would stall the products; the next block's rows are asked for meanwhile.
    #[inline]
    pub(crate) fn prefetch_rows(&self, first: usize, count: usize, groups: usize) {
        self.values()
            .prefetch(first * groups..(first + count) * groups);
    }

    /// The values as stored, for kernels that widen them as they read.
    pub(crate) fn values(&self) -> GroupValues<'_> {
        match self {
            Scalars::F32(v) => GroupValues::F32(v),
            Scalars::F16(v) => GroupValues::F16(v),
            Scalars::Bf16(v) => GroupValues::Bf16(v),
        }
    }

    /// Value `i` (in range).
    #[inline]
    pub(crate) fn value(&self, i: usize) -> f32 {
        self.values().value(i)
    }

    /// All values as f32.
    pub(crate) fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Scalars::F32(v) => v.clone(),
            Scalars::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            Scalars::Bf16(v) => v.iter().map(|h| h.to_f32()).collect(),
        }
    }

    /// The same values rounded to f16.
    pub(crate) fn to_f16(&self) -> Scalars {
        match self {
            Scalars::F32(v) => Scalars::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Scalars::F16(v) => Scalars::F16(v.clone()),
            Scalars::Bf16(v) => Scalars::F16(v.iter().map(|x| f16::from_f32(x.to_f32())).collect()),
        }
    }

    /// The same values rounded to bf16.
    pub(crate) fn to_bf16(&self) -> Scalars {
        match self {
            Scalars::F32(v) => Scalars::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            Scalars::F16(v) => {
                Scalars::Bf16(v.iter().map(|x| bf16::from_f32(x.to_f32())).collect())
            }
            Scalars::Bf16(v) => Scalars::Bf16(v.clone()),
        }
    }

    /// Whether every value is finite (f16 overflows to infinity past 65504).
    pub(crate) fn all_finite(&self) -> bool {
        match self {
            Scalars::F32(v) => v.iter().all(|x| x.is_finite()),
            Scalars::F16(v) => v.iter().all(|x| x.is_finite()),
            Scalars::Bf16(v) => v.iter().all(|x| x.is_finite()),
        }
    }

    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.values().len()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Scalars::F32(v) => std::mem::size_of_val(v.as_slice()),
            Scalars::F16(v) => std::mem::size_of_val(v.as_slice()),
            Scalars::Bf16(v) => std::mem::size_of_val(v.as_slice()),
        }
    }
}
