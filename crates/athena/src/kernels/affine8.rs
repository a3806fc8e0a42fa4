//! Dot products of MLX affine-quantized weight rows (4 and 8 bits) with input rows held as
//! int8 codes: the faster, less exact companion of [`super::affine`]'s int16 form, which a
//! quantized matrix opts into ([`super::layout::InputForm::Int8`]).
//!
//! An input row is cut into blocks of [`BLOCK_LEN`] values, each stored as int8 codes
//! `round(x / s)` with its own step `s = max|x| / 127`: the error of each input value is at
//! most half a step, 2⁻⁸ of its block's largest value, as llama.cpp's Q8_0 activations. The
//! weight codes (unsigned) then multiply the input codes (signed) four pairs per int32 lane
//! with AVX-512 VNNI's `vpdpbusd`, a whole span of 64 values in one instruction, half the
//! integer work and input reads of the int16 form. The biases still meet the exact sums of the
//! input values (`Σ w·x = scale·Σ q·x + bias·Σ x` per group), so only the `scale·Σ q·x` part
//! sees the rounding.
//!
//! The codes are stored twice, in the two orders the weight widths unpack to: natural order
//! for 8-bit rows (one 512-bit load is 64 codes in order), and per span evens first for 4-bit
//! rows (32 code bytes broadcast to both halves of a register, the low nibbles kept in one
//! half and the high nibbles in the other, give the span's even columns then its odd ones).
//! Each order has its per-lane steps: a block's step under every int32 lane its products
//! land in.
//!
//! Rows need a multiple of [`SPAN_LEN`] columns and a CPU with AVX-512 VNNI
//! ([`cpu::has_avx512_vnni`]); elsewhere inputs keep the int16 form.

use super::affine::{all_finite, write_sums, RowDots, RowShape};
use super::cpu;
use super::layout::{QInput8, BLOCK_LEN, INPUTS_PER_PASS, ROWS_PER_BLOCK, SPAN_LEN, STEP_LANES};
#[cfg(target_arch = "x86_64")]
use super::x86::avx512;

/// The largest int8 code an input value is scaled to.
const QMAX: f32 = 127.0;
/// Marks the start of an int8 prepared tail (a NaN bit pattern arithmetic does not produce,
/// distinct from the int16 form's).
const MARKER: u32 = 0x7fa1_6e58;
/// Where the parts of an int8 prepared tail start, in f32 words after the marker.
struct Layout {
    blocks: usize,
    /// Steps per lane in natural order, then evens first.
    steps: [usize; 2],
    /// Sums per block, then per 64 and per 128 values.
    sums: [usize; 3],
    /// Codes in natural order, then evens first (four a word).
    codes: [usize; 2],
    end: usize,
}

impl Layout {
    fn new(cols: usize) -> Option<Layout> {
        if cols == 0 || !cols.is_multiple_of(SPAN_LEN) {
            return None;
        }
        let blocks = cols / BLOCK_LEN;
        let natural = 0;
        let evens = natural + STEP_LANES * blocks;
        let s32 = evens + STEP_LANES * blocks;
        let s64 = s32 + blocks;
        let s128 = s64 + blocks / 2;
        let codes = s128 + blocks / 4;
        Some(Layout {
            blocks,
            steps: [natural, evens],
            sums: [s32, s64, s128],
            codes: [codes, codes + cols / 4],
            end: codes + cols / 2,
        })
    }
}

/// f32 words the int8 prepared tail of a row of `cols` values takes (0 when `cols` is not a
/// positive multiple of [`SPAN_LEN`]).
pub fn prepared_len(cols: usize) -> usize {
    Layout::new(cols).map_or(0, |l| 1 + l.end)
}

/// Writes `x` and its int8 prepared tail into `out` (`x.len() + prepared_len(x.len())`
/// long, else nothing is written). `false` when the row has no int8 form (a length that is
/// not a multiple of [`SPAN_LEN`], or a value that is not finite).
pub fn write_prepared(x: &[f32], out: &mut [f32]) -> bool {
    let cols = x.len();
    let Some(l) = Layout::new(cols) else {
        return false;
    };
    if out.len() != cols + 1 + l.end || !all_finite(x) {
        return false;
    }
    let (head, tail) = out.split_at_mut(cols + 1);
    head[..cols].copy_from_slice(x);
    head[cols] = f32::from_bits(MARKER);
    let (steps, rest) = tail.split_at_mut(l.sums[0]);
    let (sums, codes) = rest.split_at_mut(l.codes[0] - l.sums[0]);
    let (natural, evens) = steps.split_at_mut(l.steps[1]);
    // SAFETY: f32 words reinterpreted as four times as many i8 values: same memory, i8's
    // alignment (1) divides f32's, and every bit pattern is a valid i8.
    let codes: &mut [i8] =
        unsafe { std::slice::from_raw_parts_mut(codes.as_mut_ptr().cast::<i8>(), 2 * cols) };
    let (cn, ce) = codes.split_at_mut(cols);
    let mut exact = vec![0f64; l.blocks];
    for (b, xb) in x.chunks_exact(BLOCK_LEN).enumerate() {
        let max = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let step = max / QMAX;
        let inv = if max > 0.0 { QMAX / max } else { 0.0 };
        exact[b] = xb.iter().map(|&v| f64::from(v)).sum();
        natural[STEP_LANES * b..STEP_LANES * (b + 1)].fill(step);
        // Evens first: per span, lanes 0–3 and 8–11 hold the first block's products, 4–7 and
        // 12–15 the second's.
        let (span, second) = (b / 2, b % 2);
        for half in 0..2 {
            let at = 16 * span + 8 * half + 4 * second;
            evens[at..at + 4].fill(step);
        }
        for (i, &v) in xb.iter().enumerate() {
            let c = code(v * inv);
            let col = b * BLOCK_LEN + i;
            cn[col] = c;
            ce[even_index(col)] = c;
        }
    }
    write_sums(&exact, sums);
    true
}

/// Position of column `col` in the evens-first order: per span of [`SPAN_LEN`], the even columns
/// then the odd ones.
pub fn even_index(col: usize) -> usize {
    let (span, o) = (col / SPAN_LEN * SPAN_LEN, col % SPAN_LEN);
    span + o / 2 + (o % 2) * (SPAN_LEN / 2)
}

/// `y` (|y| ≤ 127 up to rounding) to the nearest int8, ties to even.
#[inline]
fn code(y: f32) -> i8 {
    const ROUND: f32 = 12_582_912.0;
    ((y + ROUND) - ROUND) as i8
}

/// The int8 prepared form behind an input row of `cols` values, if `x` carries one.
pub fn prepared(x: &[f32], cols: usize) -> Option<QInput8<'_>> {
    let l = Layout::new(cols)?;
    if x.len() != cols + 1 + l.end || x[cols].to_bits() != MARKER {
        return None;
    }
    let tail = &x[cols + 1..];
    let (steps, rest) = tail.split_at(l.sums[0]);
    let (sums, codes) = rest.split_at(l.codes[0] - l.sums[0]);
    let (natural, evens) = steps.split_at(l.steps[1]);
    let (s32, rest) = sums.split_at(l.blocks);
    let (s64, s128) = rest.split_at(l.blocks / 2);
    // SAFETY: as in `write_prepared`: `codes` holds cols / 2 f32 words, i.e. 2·cols i8 values.
    let codes: &[i8] = unsafe { std::slice::from_raw_parts(codes.as_ptr().cast::<i8>(), 2 * cols) };
    let (cn, ce) = codes.split_at(cols);
    Some(QInput8 {
        steps: natural,
        even_steps: evens,
        sums: [s32, s64, s128],
        codes: cn,
        even_codes: ce,
    })
}

/// Up to [`INPUTS_PER_PASS`] int8-prepared inputs checked once against a bit width and group size, for
/// the products of many weight rows in turn.
#[derive(Clone, Copy)]
pub struct Int8Dots<'a> {
    shape: RowShape,
    xs: [QInput8<'a>; INPUTS_PER_PASS],
    n: usize,
}

impl<'a> Int8Dots<'a> {
    /// The kernel for `xs` (1 to [`INPUTS_PER_PASS`] inputs of one width, each with the sums of
    /// `group_size` groups); `None` without AVX-512 VNNI, for other widths or group sizes, or
    /// for inputs that disagree.
    pub fn new(bits: u8, group_size: usize, xs: &[QInput8<'a>]) -> Option<Self> {
        let cols = xs.first()?.codes.len();
        let shape = RowShape::new(bits, group_size, cols)?;
        let ok = cpu::has_avx512_vnni()
            && xs.len() <= INPUTS_PER_PASS
            && Layout::new(cols).is_some()
            && xs.iter().all(|x| {
                x.codes.len() == cols
                    && x.even_codes.len() == cols
                    && x.steps.len() == STEP_LANES * cols / BLOCK_LEN
                    && x.even_steps.len() == STEP_LANES * cols / BLOCK_LEN
                    && x.group_sums(group_size)
                        .is_some_and(|s| s.len() == shape.groups())
            });
        if !ok {
            return None;
        }
        let mut all = [QInput8::default(); INPUTS_PER_PASS];
        all[..xs.len()].copy_from_slice(xs);
        Some(Int8Dots {
            shape,
            xs: all,
            n: xs.len(),
        })
    }

    /// `out[k] = Σ w·x_k` for one weight row and each input (`out` holds at least one value
    /// per input). `false`, writing nothing, when the row does not fit.
    #[inline]
    pub fn row(&self, words: &[u32], scales: &[f32], biases: &[f32], out: &mut [f32]) -> bool {
        if !self.shape.fits(words, scales, biases) || out.len() < self.n {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked in `new`); lengths checked in
        // `new` and `fits`.
        unsafe {
            avx512::dot_one_row(
                self.shape.bits,
                self.shape.group_size,
                words,
                scales,
                biases,
                &self.xs[..self.n],
                &mut out[..self.n],
            )
        };
        true
    }

    /// `out[r · n + k] = Σ w_r·x_k` for [`ROWS_PER_BLOCK`] weight rows and the `n` inputs (`out` holds at
    /// least `ROWS_PER_BLOCK · n` values). Against a single input the input's codes are loaded once for
    /// all the rows and `ahead` (the codes of the rows the next call takes, or nothing) is
    /// prefetched meanwhile; against more, two rows at a time share each input load. `false`,
    /// writing nothing, when a row does not fit.
    #[inline]
    pub fn rows(
        &self,
        words: [&[u32]; ROWS_PER_BLOCK],
        scales: [&[f32]; ROWS_PER_BLOCK],
        biases: [&[f32]; ROWS_PER_BLOCK],
        ahead: &[u32],
        out: &mut [f32],
    ) -> bool {
        let n = self.n;
        if !self.shape.fits_rows(words, scales, biases, n, out) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `row`.
        unsafe {
            avx512::dot_rows(
                self.shape.bits,
                self.shape.group_size,
                words,
                scales,
                biases,
                &self.xs[..n],
                ahead,
                &mut out[..ROWS_PER_BLOCK * n],
            )
        };
        true
    }
}

impl RowDots for Int8Dots<'_> {
    fn inputs(&self) -> usize {
        self.n
    }
    fn row(&self, words: &[u32], scales: &[f32], biases: &[f32], out: &mut [f32]) -> bool {
        Int8Dots::row(self, words, scales, biases, out)
    }
    fn rows(
        &self,
        words: [&[u32]; ROWS_PER_BLOCK],
        scales: [&[f32]; ROWS_PER_BLOCK],
        biases: [&[f32]; ROWS_PER_BLOCK],
        ahead: &[u32],
        out: &mut [f32],
    ) -> bool {
        Int8Dots::rows(self, words, scales, biases, ahead, out)
    }
}
