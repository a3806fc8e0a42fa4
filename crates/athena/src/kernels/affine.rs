//! Dot products of MLX affine-quantized weight rows (4 and 8 bits) with an input row held in
//! an int16 form, for decoding.
//!
//! For a group of weights `w = scale·q + bias`, `Σ w·x = scale·Σ q·x + bias·Σ x`. The input
//! row is prepared once for all weight rows ([`prepare_input`]): cut into blocks of
//! [`QBLOCK`] values, each block stored as int16 codes `round(x / s)` with its own step
//! `s = max|x| / 32767` (relative error at most 2⁻¹⁶ of the block's largest value), plus the
//! block's exact sum `Σ x`. A weight row then costs only integer multiply-adds of its codes
//! with the input codes (`vpmaddwd` on AVX2: sixteen products a step, exact in int32), one
//! conversion and fused multiply-add per block, and one multiply-add per group for the bias.
//!
//! The prepared form travels behind the input row itself: [`crate::kernels::matmul`] hands
//! every [`crate::kernels::Rows`] the row's `cols` values followed by the prepared tail. Rows
//! that read only `x[..cols]` (f32, bf16, and wrappers that forward `x`) are unaffected; a
//! quantized row recognizes the tail by its length and marker ([`prepared`]).
//!
//! Within a block of 32 input values the codes are stored evens first (`x₀, x₂, …, x₃₀`,
//! then `x₁, x₃, …, x₃₁`): the order in which a 16-bit lane of packed 8-bit codes (two codes
//! a lane) or of zero-extended 4-bit code bytes (two nibbles a lane) splits into a low and a
//! high code, so both widths unpack with one mask and one shift.

/// Input values per block of the int16 form (the smallest MLX group size).
pub const QBLOCK: usize = 32;
/// The largest int16 code an input value is scaled to.
const QMAX: f32 = 32767.0;
/// Marks the start of a prepared tail (a NaN bit pattern arithmetic does not produce).
const MARKER: u32 = 0x7fa1_6e57;

/// f32 words the prepared tail of a row of `cols` values takes (0 when `cols` is not a
/// positive multiple of [`QBLOCK`]).
pub fn prepared_len(cols: usize) -> usize {
    if cols == 0 || cols % QBLOCK != 0 {
        return 0;
    }
    1 + 2 * (cols / QBLOCK) + cols / 2
}

/// Writes `x` followed by its prepared tail into `out` (replacing its contents). Returns
/// `false`, with only `x` written, when `x.len()` is not a positive multiple of [`QBLOCK`] or
/// a value is not finite (the exact path then keeps NaN and infinity as they are).
pub fn prepare_input(x: &[f32], out: &mut Vec<f32>) -> bool {
    out.clear();
    out.extend_from_slice(x);
    let cols = x.len();
    let len = prepared_len(cols);
    if len == 0 || !x.iter().all(|v| v.is_finite()) {
        return false;
    }
    let nb = cols / QBLOCK;
    out.push(f32::from_bits(MARKER));
    let base = out.len();
    out.resize(base + len - 1, 0.0);
    let (steps, rest) = out[base..].split_at_mut(nb);
    let (sums, codes) = rest.split_at_mut(nb);
    // SAFETY: an f32 slice reinterpreted as twice as many i16 values: same memory, i16's
    // alignment (2) divides f32's (4), and every bit pattern is a valid i16.
    let codes: &mut [i16] =
        unsafe { std::slice::from_raw_parts_mut(codes.as_mut_ptr().cast::<i16>(), cols) };
    for (((xb, step), sum), qb) in x
        .chunks_exact(QBLOCK)
        .zip(steps.iter_mut())
        .zip(sums.iter_mut())
        .zip(codes.chunks_exact_mut(QBLOCK))
    {
        let max = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        *step = max / QMAX;
        *sum = xb.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
        let inv = if max > 0.0 { QMAX / max } else { 0.0 };
        let (evens, odds) = qb.split_at_mut(QBLOCK / 2);
        for (k, pair) in xb.chunks_exact(2).enumerate() {
            // |x·inv| ≤ 32767 up to rounding; `as` saturates.
            evens[k] = (pair[0] * inv).round() as i16;
            odds[k] = (pair[1] * inv).round() as i16;
        }
    }
    true
}

/// A prepared input row: per block its step and exact sum, and its int16 codes.
#[derive(Clone, Copy)]
pub struct QInput<'a> {
    /// Per block, the value of one code step.
    pub steps: &'a [f32],
    /// Per block, `Σ x` of the original values.
    pub sums: &'a [f32],
    /// `cols` codes, each block evens first.
    pub codes: &'a [i16],
}

/// The prepared form behind an input row of `cols` values, if `x` carries one.
pub fn prepared(x: &[f32], cols: usize) -> Option<QInput<'_>> {
    let len = prepared_len(cols);
    if len == 0 || x.len() != cols + len || x[cols].to_bits() != MARKER {
        return None;
    }
    let nb = cols / QBLOCK;
    let tail = &x[cols + 1..];
    let (steps, rest) = tail.split_at(nb);
    let (sums, codes) = rest.split_at(nb);
    // SAFETY: as in `prepare_input`: `codes` holds cols / 2 f32 words, i.e. cols i16 values.
    let codes: &[i16] = unsafe { std::slice::from_raw_parts(codes.as_ptr().cast::<i16>(), cols) };
    Some(QInput { steps, sums, codes })
}

/// `Σ w·x` for one row of MLX affine codes (`bits` 4 or 8, `group_size` a multiple of
/// [`QBLOCK`]) with the row's per-group `scales` and `biases`, against a prepared input of
/// `scales.len() * group_size` values. `None` for other bit widths or mismatched lengths.
pub fn dot_affine(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    x: QInput<'_>,
) -> Option<f32> {
    let cols = scales.len() * group_size;
    if !matches!(bits, 4 | 8)
        || group_size == 0
        || group_size % QBLOCK != 0
        || biases.len() != scales.len()
        || words.len() * 32 != cols * usize::from(bits)
        || x.codes.len() != cols
        || x.steps.len() * QBLOCK != cols
        || x.sums.len() != x.steps.len()
    {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; the lengths were checked above.
        return Some(unsafe {
            match bits {
                4 => super::avx2::dot_affine::<4>(group_size, words, scales, biases, x),
                _ => super::avx2::dot_affine::<8>(group_size, words, scales, biases, x),
            }
        });
    }
    Some(portable_dot_affine(
        bits, group_size, words, scales, biases, x,
    ))
}

/// [`dot_affine`] in plain integer arithmetic; lengths checked by the caller.
pub(super) fn portable_dot_affine(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    x: QInput<'_>,
) -> f32 {
    let per_block = QBLOCK / 2;
    let block_bytes = QBLOCK * usize::from(bits) / 8;
    let blocks = group_size / QBLOCK;
    let code = |b: usize, i: usize| -> i32 {
        // Code i of block b: byte (b·block_bytes + i·bits/8), low bits first.
        let bit = (b * block_bytes) * 8 + i * usize::from(bits);
        ((words[bit / 32] >> (bit % 32)) & ((1u32 << bits) - 1)) as i32
    };
    let mut total = 0f32;
    for (g, (&scale, &bias)) in scales.iter().zip(biases).enumerate() {
        let (mut acc, mut sum) = (0f32, 0f32);
        for b in g * blocks..(g + 1) * blocks {
            let q = &x.codes[b * QBLOCK..(b + 1) * QBLOCK];
            let s: i32 = (0..per_block)
                .map(|k| {
                    code(b, 2 * k) * i32::from(q[k])
                        + code(b, 2 * k + 1) * i32::from(q[per_block + k])
                })
                .sum();
            acc += s as f32 * x.steps[b];
            sum += x.sums[b];
        }
        total += scale * acc + bias * sum;
    }
    total
}
