//! Decode's quantized products in one call per task: every weight row of a range against one
//! prepared int16 input ([`QInput`]), for groups of 64 on AVX-512. 4-bit rows run four
//! at a time and the last few one by one, 8-bit rows one by one (the next block's codes,
//! scales and biases prefetched), with the same arithmetic per row, so a row's output does
//! not depend on where a task's range starts; scales and
//! biases are read as stored (f32, bf16 or f16), widened as the kernel folds them. Each
//! output equals [`super::affine::AffineDots`]'s for that row, bit for bit: this path only leaves out
//! the calls, slices and buffer copies it makes per block of four rows.

use std::ops::Range;

use super::cpu;
use super::layout::{GroupValues, QInput};
#[cfg(target_arch = "x86_64")]
use super::x86::avx512;

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
        && cpu::has_avx512_vnni();
    if !ok {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let run = match bits {
            4 => avx512::decode_rows::<4>,
            _ => avx512::decode_rows::<8>,
        };
        // SAFETY: the CPU has AVX-512 F, BW and VNNI, and the lengths were checked above.
        unsafe { run(packed, row_words, scales, biases, x, rows, out) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
