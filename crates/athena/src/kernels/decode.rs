//! Decode's quantized products in one call per task: every weight row of a range against one
//! prepared int16 input ([`affine::QInput`]), for groups of 64 on AVX-512. 4-bit rows run four
//! at a time and the last few one by one, 8-bit rows one by one (the next block's codes,
//! scales and biases prefetched), with the same arithmetic per row, so a row's output does
//! not depend on where a task's range starts; scales and
//! biases are read as stored (f32, bf16 or f16), widened as the kernel folds them. Each
//! output equals [`affine::AffineDots`]'s for that row, bit for bit: this path only leaves out
//! the calls, slices and buffer copies it makes per block of four rows.

use std::ops::Range;

use half::{bf16, f16};

use super::affine::{self, QInput};

/// One matrix's per-group scales or biases as stored, `[rows, groups]` row-major.
#[derive(Clone, Copy, Debug)]
pub enum GroupValues<'a> {
    /// Full precision.
    F32(&'a [f32]),
    /// bfloat16 (mlx-lm checkpoints of bf16 models).
    Bf16(&'a [bf16]),
    /// IEEE half precision (load-time 8-bit quantization).
    F16(&'a [f16]),
}

impl<'a> GroupValues<'a> {
    /// Number of values.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            GroupValues::F32(v) => v.len(),
            GroupValues::Bf16(v) => v.len(),
            GroupValues::F16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `range` (in range).
    #[inline(always)]
    pub(crate) fn slice(&self, range: Range<usize>) -> GroupValues<'a> {
        match *self {
            GroupValues::F32(v) => GroupValues::F32(&v[range]),
            GroupValues::Bf16(v) => GroupValues::Bf16(&v[range]),
            GroupValues::F16(v) => GroupValues::F16(&v[range]),
        }
    }

    /// Asks the cache for values `range` (clamped to the values held; a hint only).
    #[inline]
    pub(crate) fn prefetch(&self, range: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        {
            let (ptr, size) = match self {
                GroupValues::F32(v) => (v.as_ptr().cast::<u8>(), 4),
                GroupValues::Bf16(v) => (v.as_ptr().cast::<u8>(), 2),
                GroupValues::F16(v) => (v.as_ptr().cast::<u8>(), 2),
            };
            let end = range.end.min(self.len()) * size;
            for at in (range.start.min(end / size) * size..end).step_by(64) {
                // SAFETY: `at` lies inside the values; a prefetch never faults.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(ptr.add(at).cast());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = range;
    }

    /// Value `i` (in range) as f32.
    #[inline]
    pub(crate) fn value(&self, i: usize) -> f32 {
        match self {
            GroupValues::F32(v) => v[i],
            GroupValues::Bf16(v) => v[i].to_f32(),
            GroupValues::F16(v) => v[i].to_f32(),
        }
    }

    /// The values as f32, borrowed or widened into `buf` (at least as long).
    #[inline]
    pub(crate) fn widened<'b>(&'b self, buf: &'b mut [f32]) -> &'b [f32] {
        match *self {
            GroupValues::F32(v) => v,
            GroupValues::Bf16(v) => {
                super::widen_bf16(v, buf);
                &buf[..v.len()]
            }
            GroupValues::F16(v) => {
                super::widen_f16(v, buf);
                &buf[..v.len()]
            }
        }
    }
}

/// `out[i] = Σ w·x` for weight rows `rows` (`packed` holds every row's codes from row 0,
/// `scales` and `biases` every row's groups) against the one prepared input `x`, on AVX-512
/// for 4- and 8-bit rows in groups of 64. `false`, writing nothing, when this CPU or these
/// shapes call for the general path.
#[allow(clippy::too_many_arguments)]
pub fn decode_rows(
    bits: u8,
    group_size: usize,
    packed: &[u32],
    scales: GroupValues<'_>,
    biases: GroupValues<'_>,
    x: &QInput<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> bool {
    let cols = x.codes.len();
    let groups = cols / 64;
    let row_words = cols * usize::from(bits) / 32;
    let ok = matches!(bits, 4 | 8)
        && group_size == 64
        && cols > 0
        && cols.is_multiple_of(64)
        && x.spans.len() == groups
        && x.group_sums(64).is_some_and(|s| s.len() == groups)
        && rows.start <= rows.end
        && out.len() == rows.len()
        && packed.len() >= rows.end * row_words
        && scales.len() >= rows.end * groups
        && biases.len() >= rows.end * groups
        && affine::has_avx512_vnni();
    if !ok {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let run = match bits {
            4 => super::avx512::decode_rows::<4>,
            _ => super::avx512::decode_rows::<8>,
        };
        // SAFETY: the CPU has AVX-512 F, BW and VNNI, and the lengths were checked above.
        unsafe { run(packed, row_words, scales, biases, x, rows, out) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
