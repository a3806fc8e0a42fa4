//! The data every kernel agrees on: block sizes, the prepared input forms ([`QInput`],
//! [`QInput8`]), the order of their codes, stored group scales and biases ([`GroupValues`]),
//! the panels of many inputs ([`Panel`]) and the summation order of the bias term
//! ([`bias_dot`]).
//!
//! This module imports nothing from the rest of `kernels`: the instruction-set kernels
//! (`x86`, `portable`) read these layouts, and the dispatchers above them build and check
//! them.
//!
//! An int16-prepared input stores its codes in spans of [`SPAN_LEN`] values (two blocks of
//! [`BLOCK_LEN`]; a last lone block is a span of its own), each span evens first
//! (`x₀, x₂, …`, then `x₁, x₃, …`): the order in which a 16-bit lane of packed 8-bit codes
//! (two codes a lane) or of zero-extended 4-bit code bytes (two nibbles a lane) splits into a
//! low and a high code, so both widths unpack with one mask and one shift. Each block's step
//! is stored [`STEP_LANES`] times, once per int32 lane of the block's products.

use std::ops::Range;

use half::{bf16, f16};

/// Elements summed in f32 lanes before the partial sums are folded into f64.
pub(crate) const FLUSH: usize = 256;

/// Input values per block of the prepared forms (the smallest MLX group size).
pub const BLOCK_LEN: usize = 32;
/// Input values per span whose codes are stored evens first (two blocks).
pub const SPAN_LEN: usize = 2 * BLOCK_LEN;
/// Copies of each block's step in the prepared forms.
pub const STEP_LANES: usize = 8;
/// Prepared input rows the row kernels multiply against one weight row in one pass.
pub const INPUTS_PER_PASS: usize = 4;
/// Weight rows the block kernels take at once (`AffineDots::rows`, `Int8Dots::rows`).
pub const ROWS_PER_BLOCK: usize = 4;

/// Position among a prepared row's codes of input value `i` (of `cols`, a multiple of
/// [`BLOCK_LEN`]): spans of [`SPAN_LEN`] values (the last may be one block), evens first.
pub fn code_index(cols: usize, i: usize) -> usize {
    let span = i / SPAN_LEN * SPAN_LEN;
    let half = (cols - span).min(SPAN_LEN) / 2;
    let o = i - span;
    span + if o.is_multiple_of(2) {
        o / 2
    } else {
        half + o / 2
    }
}

/// Offsets among a prepared row's codes of block `b`'s even and odd values (`blocks` in the
/// row): within its span of two blocks, or a lone last block.
#[inline]
pub(super) fn block_offsets(blocks: usize, b: usize) -> (usize, usize) {
    if b + 1 == blocks && blocks % 2 == 1 {
        (BLOCK_LEN * b, BLOCK_LEN * b + BLOCK_LEN / 2)
    } else {
        let base = SPAN_LEN * (b / 2) + BLOCK_LEN / 2 * (b % 2);
        (base, base + BLOCK_LEN)
    }
}

/// How the quantized rows of a matrix want their inputs prepared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputForm {
    /// int16 codes ([`QInput`]): relative error about 2⁻¹⁶ per block.
    #[default]
    Int16,
    /// int8 codes ([`QInput8`]): relative error about 2⁻⁸ per block, faster.
    Int8,
}

/// An int16-prepared input row: per block its step, the exact sums, and its int16 codes.
#[derive(Clone, Copy, Default)]
pub struct QInput<'a> {
    /// Per block, the value of one code step, [`STEP_LANES`] copies.
    pub steps: &'a [f32],
    /// Per span of [`SPAN_LEN`] values (both its blocks'), the step once.
    pub spans: &'a [f32],
    /// `Σ x` of the original values per block, per 64 and per 128 values.
    pub sums: [&'a [f32]; 3],
    /// `cols` codes in spans of [`SPAN_LEN`], evens first.
    pub codes: &'a [i16],
}

impl QInput<'_> {
    /// Blocks of [`BLOCK_LEN`] values.
    pub fn blocks(&self) -> usize {
        self.codes.len() / BLOCK_LEN
    }

    /// The step of block `b` (in range).
    pub fn step(&self, b: usize) -> f32 {
        self.steps[STEP_LANES * b]
    }

    /// `Σ x` per group of `group_size` values (32, 64 or 128), `None` for other sizes.
    pub fn group_sums(&self, group_size: usize) -> Option<&[f32]> {
        match group_size {
            32 => Some(self.sums[0]),
            64 => Some(self.sums[1]),
            128 => Some(self.sums[2]),
            _ => None,
        }
    }
}

/// An int8-prepared input row. Its codes are stored twice, in the two orders the weight
/// widths unpack to: natural order for 8-bit rows, and per span evens first for 4-bit rows.
#[derive(Clone, Copy, Default)]
pub struct QInput8<'a> {
    /// Per block its step, [`STEP_LANES`] copies (natural order's lanes).
    pub steps: &'a [f32],
    /// Per span the steps under the evens-first order's sixteen lanes.
    pub even_steps: &'a [f32],
    /// `Σ x` of the original values per block, per 64 and per 128 values.
    pub sums: [&'a [f32]; 3],
    /// The codes in natural order.
    pub codes: &'a [i8],
    /// The codes evens first per span.
    pub even_codes: &'a [i8],
}

impl QInput8<'_> {
    /// The step of block `b` (in range).
    pub fn step(&self, b: usize) -> f32 {
        self.steps[STEP_LANES * b]
    }

    /// `Σ x` per group of `group_size` values (32, 64 or 128), `None` for other sizes.
    pub fn group_sums(&self, group_size: usize) -> Option<&[f32]> {
        match group_size {
            32 => Some(self.sums[0]),
            64 => Some(self.sums[1]),
            128 => Some(self.sums[2]),
            _ => None,
        }
    }
}

/// One matrix's per-group scales or biases as stored, `[rows, groups]` row-major (widened
/// in bulk by `GroupValues::widened`, in `widen`).
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
}

/// Lanes of [`bias_dot`]'s partial sums (an AVX-512 register of f32, so that the decode
/// kernel computes the same sums in one).
pub(super) const BIAS_LANES: usize = 16;

/// `Σ a·b` over two short slices of equal length (a row's biases and an input's group sums),
/// in [`BIAS_LANES`] independent f32 lanes, then the lanes in order, then the tail. Every
/// instruction set adds the bias term in this order, so their outputs agree bit for bit.
#[inline]
pub(super) fn bias_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; BIAS_LANES];
    let (ac, bc) = (a.chunks_exact(BIAS_LANES), b.chunks_exact(BIAS_LANES));
    let tail = bias_tail(ac.remainder().iter().copied(), bc.remainder());
    for (a, b) in ac.zip(bc) {
        for k in 0..BIAS_LANES {
            acc[k] += a[k] * b[k];
        }
    }
    bias_total(&acc, tail)
}

/// [`bias_dot`]'s sum of the values past the last whole set of lanes.
#[inline]
pub(super) fn bias_tail(a: impl Iterator<Item = f32>, b: &[f32]) -> f32 {
    a.zip(b).map(|(a, b)| a * b).sum()
}

/// [`bias_dot`]'s total of its lanes' partial sums, pairwise (lane `i` with `i + 8`, then
/// `i + 4`, `i + 2`, `i + 1`: the order in which a register's lanes fold in halves), plus
/// the tail.
#[inline]
pub(super) fn bias_total(acc: &[f32; BIAS_LANES], tail: f32) -> f32 {
    let mut v = *acc;
    let mut half = BIAS_LANES / 2;
    while half > 0 {
        for i in 0..half {
            v[i] += v[i + half];
        }
        half /= 2;
    }
    v[0] + tail
}

/// Inputs per panel: the int32 lanes of a 512-bit register.
pub const PANEL: usize = 16;
/// Columns per unit of the panel weight layout (a multiple of every group size).
pub(super) const PANEL_CHUNK: usize = 128;
/// Four-code quads per block of [`BLOCK_LEN`] values (int8 inputs).
pub(super) const QUADS: usize = BLOCK_LEN / 4;
/// Two-code pairs per block (int16 inputs).
pub(super) const PAIRS: usize = BLOCK_LEN / 2;

/// Lane-wide steps (dwords of codes) per block of a panel in `form`.
pub(super) const fn steps_per_block(form: InputForm) -> usize {
    match form {
        InputForm::Int8 => QUADS,
        InputForm::Int16 => PAIRS,
    }
}

/// Where quad `j` of block `b` lies in a weight row unpacked for `bits` bits, in bytes.
#[inline(always)]
pub(super) fn quad_offset(bits: u8, b: usize, j: usize) -> usize {
    if bits == 8 {
        return BLOCK_LEN * b + 4 * j;
    }
    // Per 128 columns: 64 low nibbles (even columns), then 64 high ones (odd columns); block
    // k of the chunk is bytes 16k..16k + 16 of each half.
    let (c, k) = (b / 4, b % 4);
    PANEL_CHUNK * c + 64 * (j / 4) + 16 * k + 4 * (j % 4)
}

/// Where pair `j` of block `b` lies in a row or an input held in the int16 form's order
/// (spans of 64 values, evens first), in bytes: both halves of the span hold the block's
/// sixteen values at the same place.
#[inline(always)]
pub(super) fn pair_offset(b: usize, j: usize) -> usize {
    let (span, half) = (b / 2, b % 2);
    2 * SPAN_LEN * span + 64 * (j / 8) + 32 * half + 4 * (j % 8)
}

/// Up to [`PANEL`] prepared inputs laid out for the panel kernels: per block, per dword
/// step, the sixteen inputs side by side (built by `Panel::new` and `Panel::new_int16`, in
/// `panel`).
pub struct Panel {
    /// The form of the inputs.
    pub(super) form: InputForm,
    /// Inputs held (the other lanes are zero).
    pub(super) n: usize,
    /// Per block, per dword step, per input: four int8 codes plus 128, or two int16 codes.
    pub(super) codes: Vec<u8>,
    /// Per block, per input: its step.
    pub(super) steps: Vec<f32>,
    /// Per block, per input: what the block's integer sum starts from for the inputs' side
    /// (int8 inputs of 8-bit rows: 128 · the sum of the input's codes; else zero).
    pub(super) start: Vec<i32>,
    /// Per group, per input: `Σ x` of the original values.
    pub(super) sums: Vec<f32>,
}

impl Panel {
    /// The form of the inputs it holds.
    pub fn form(&self) -> InputForm {
        self.form
    }

    /// Inputs held.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it holds no input.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Blocks of [`BLOCK_LEN`] columns.
    pub(super) fn blocks(&self) -> usize {
        self.steps.len() / PANEL
    }
}

/// A weight row unpacked for the panel kernels of one input form: for int8 inputs, signed
/// byte codes in the panel's column order and, per block, 128 · the sum of those codes; for
/// int16 inputs, int16 codes in the int16 form's order.
#[derive(Default)]
pub struct Unpacked {
    pub(super) form: InputForm,
    pub(super) codes: Vec<u8>,
    pub(super) sums: Vec<i32>,
}

/// `R` weight rows (1 or 4) for the panel kernels: unpacked, with their per-group scales and
/// biases.
#[derive(Clone, Copy)]
pub struct WeightRows<'a, const R: usize> {
    /// The rows unpacked.
    pub rows: [&'a Unpacked; R],
    /// Each row's scales, one per group.
    pub scales: [&'a [f32]; R],
    /// Each row's biases, one per group.
    pub biases: [&'a [f32]; R],
}
