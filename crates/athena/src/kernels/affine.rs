//! Dot products of MLX affine-quantized weight rows (4 and 8 bits) with input rows held in an
//! int16 form.
//!
//! For a group of weights `w = scale·q + bias`, `Σ w·x = scale·Σ q·x + bias·Σ x`. An input
//! row is prepared once for all weight rows ([`prepare_input`]): cut into blocks of
//! [`BLOCK_LEN`] values stored as int16 codes `round(x / s)`, with one step `s = max|x| / 32767`
//! for the two blocks of each span of [`SPAN_LEN`] values (relative error at most 2⁻¹⁶ of the
//! span's largest value), plus the exact sums `Σ x` of every block and of every span of 64 and
//! 128 values (the group sizes that use them). A weight row then costs only integer
//! multiply-adds of its codes with the input codes, exact in int32 (`vpdpwssd` on AVX-512
//! VNNI, two blocks a step; `vpmaddwd` on AVX2, one block a step), one conversion and two f32
//! multiplies per block for the step and the group's scale, and one short dot product of the
//! row's biases with the group sums. For groups of 64 on AVX-512 the span's one step is folded
//! into the group's scale instead (each row's scales times the spans' steps, sixteen groups at
//! a time), and a group costs one conversion and one multiply-add. The int32 block sums round
//! to f32 (2⁻²⁴ relative) when converted; blocks are summed in f32 lanes, several independent
//! accumulators wide.
//!
//! [`dot_affine_on`] runs one weight row against up to [`INPUTS_PER_PASS`] prepared input rows at
//! once: the row's codes are loaded and unpacked once for all of them. At decode (one input)
//! [`AffineDots::rows`] runs [`ROWS_PER_BLOCK`] weight rows together instead: on AVX-512 the input's
//! codes are loaded once for all of them, and the codes of the next rows are prefetched
//! while these are multiplied (four rows read side by side defeat the hardware prefetcher's
//! one sequential stream). Its outputs equal [`AffineDots::row`]'s, bit for bit, and so do
//! those of [`super::decode::decode_rows`], which runs a whole range of rows in one call.
//!
//! The prepared form travels behind the input row itself: [`crate::kernels::matmul`] hands
//! every [`crate::kernels::WeightMatrix`] the row's `cols` values followed by the prepared tail. Rows
//! that read only `x[..cols]` (f32, bf16, and wrappers that forward `x`) are unaffected; a
//! quantized row recognizes the tail by its length and marker ([`prepared`]).
//!
//! The codes are stored in spans of [`SPAN_LEN`] values (two blocks; a last lone block is a
//! span of 32), each span evens first (`x₀, x₂, …`, then `x₁, x₃, …`): the order in which a
//! 16-bit lane of packed 8-bit codes (two codes a lane) or of zero-extended 4-bit code bytes
//! (two nibbles a lane) splits into a low and a high code, so both widths unpack with one
//! mask and one shift, and one 512-bit load of input codes matches two blocks of weights.
//! Each block's step is stored [`STEP_LANES`] times, once per int32 lane of the block's
//! products, so one load gives the per-lane steps of a block (AVX2) or two (AVX-512).

use super::cpu::{self, InstructionSet};
use super::layout::{QInput, BLOCK_LEN, INPUTS_PER_PASS, ROWS_PER_BLOCK, SPAN_LEN, STEP_LANES};
use super::portable;
#[cfg(target_arch = "x86_64")]
use super::x86::{avx2, avx512};

/// Whether the AVX-512 integer kernels can run on this CPU.
pub use super::cpu::has_avx512_vnni;

/// The largest int16 code an input value is scaled to.
const QMAX: f32 = 32767.0;
/// Marks the start of a prepared tail (a NaN bit pattern arithmetic does not produce).
const MARKER: u32 = 0x7fa1_6e57;

/// Where the parts of a prepared tail start, in f32 words after the marker.
struct Layout {
    /// Blocks of [`BLOCK_LEN`] values.
    blocks: usize,
    /// The step of each span of [`SPAN_LEN`] values (a last lone block is a span), once.
    spans: usize,
    /// Sums per block, then per 64 and per 128 values.
    sums: [usize; 3],
    /// The int16 codes (two a word).
    codes: usize,
    /// Words after the marker.
    end: usize,
}

impl Layout {
    /// The layout for rows of `cols` values (`None` when `cols` is not a positive multiple of
    /// [`BLOCK_LEN`]).
    fn new(cols: usize) -> Option<Layout> {
        if cols == 0 || !cols.is_multiple_of(BLOCK_LEN) {
            return None;
        }
        let blocks = cols / BLOCK_LEN;
        let s32 = STEP_LANES * blocks;
        let s64 = s32 + blocks;
        let s128 = s64 + blocks / 2;
        let spans = s128 + blocks / 4;
        let codes = spans + blocks.div_ceil(2);
        Some(Layout {
            blocks,
            spans,
            sums: [s32, s64, s128],
            codes,
            end: codes + cols / 2,
        })
    }
}

/// f32 words the prepared tail of a row of `cols` values takes (0 when `cols` is not a
/// positive multiple of [`BLOCK_LEN`]).
pub fn prepared_len(cols: usize) -> usize {
    Layout::new(cols).map_or(0, |l| 1 + l.end)
}

/// Whether every value of `x` is finite: without an early exit, so that the compiler
/// compares many lanes at once (a prepared row checks every input value, at each product).
pub(super) fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(true, |ok, v| ok & v.is_finite())
}

/// Writes `x` followed by its prepared tail into `out` (replacing its contents). Returns
/// `false`, with only `x` written, when `x.len()` is not a positive multiple of [`BLOCK_LEN`] or
/// a value is not finite (the exact path then keeps NaN and infinity as they are).
pub fn prepare_input(x: &[f32], out: &mut Vec<f32>) -> bool {
    out.clear();
    out.extend_from_slice(x);
    let len = prepared_len(x.len());
    if len == 0 {
        return false;
    }
    out.resize(x.len() + len, 0.0);
    // `write_prepared` checks every value is finite, and writes nothing when one is not.
    let ok = write_prepared(x, out);
    if !ok {
        out.truncate(x.len());
    }
    ok
}

/// Writes `x` and its prepared tail into `out` (`x.len() + prepared_len(x.len())` long, else
/// nothing is written). `false` when the row has no prepared form (see [`prepare_input`]).
pub(super) fn write_prepared(x: &[f32], out: &mut [f32]) -> bool {
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
    let (sums, rest) = rest.split_at_mut(l.spans - l.sums[0]);
    let (spans, codes) = rest.split_at_mut(l.codes - l.spans);
    // SAFETY: an f32 slice reinterpreted as twice as many i16 values: same memory, i16's
    // alignment (2) divides f32's (4), and every bit pattern is a valid i16.
    let codes: &mut [i16] =
        unsafe { std::slice::from_raw_parts_mut(codes.as_mut_ptr().cast::<i16>(), cols) };
    write_sums(&exact_block_sums(x), sums);
    for (s, (xs, qs)) in x
        .chunks(SPAN_LEN)
        .zip(codes.chunks_mut(SPAN_LEN))
        .enumerate()
    {
        let max = max_abs(xs);
        spans[s] = max / QMAX;
        let blocks = 2 * s..2 * s + xs.len() / BLOCK_LEN;
        steps[STEP_LANES * blocks.start..STEP_LANES * blocks.end].fill(max / QMAX);
        let inv = if max > 0.0 { QMAX / max } else { 0.0 };
        let (evens, odds) = qs.split_at_mut(xs.len() / 2);
        let halves = evens
            .chunks_exact_mut(BLOCK_LEN / 2)
            .zip(odds.chunks_exact_mut(BLOCK_LEN / 2));
        for (xb, (ev, od)) in xs.chunks_exact(BLOCK_LEN).zip(halves) {
            block_codes(xb, inv, ev, od);
        }
    }
    true
}

/// `Σ x` of each block of [`BLOCK_LEN`] values in f64, each block summed in order from its
/// first value (eight blocks side by side, so that their additions overlap).
pub(super) fn exact_block_sums(x: &[f32]) -> Vec<f64> {
    const SIDE: usize = 8;
    let mut exact = vec![0f64; x.len() / BLOCK_LEN];
    for (out, xs) in exact.chunks_mut(SIDE).zip(x.chunks(SIDE * BLOCK_LEN)) {
        let mut acc = [-0.0f64; SIDE];
        match <&[f32; SIDE * BLOCK_LEN]>::try_from(xs) {
            Ok(xs) => {
                for j in 0..BLOCK_LEN {
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a += f64::from(xs[k * BLOCK_LEN + j]);
                    }
                }
            }
            Err(_) => {
                for (a, xb) in acc.iter_mut().zip(xs.chunks_exact(BLOCK_LEN)) {
                    for &v in xb {
                        *a += f64::from(v);
                    }
                }
            }
        }
        out.copy_from_slice(&acc[..out.len()]);
    }
    exact
}

/// The largest `|v|` of `xs`.
pub(super) fn max_abs(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if cpu::has_avx512() {
        // SAFETY: AVX-512 F is present (checked just above).
        return unsafe { avx512::max_abs(xs) };
    }
    xs.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The int16 codes `round(x · inv)` of one block of [`BLOCK_LEN`] values: its even values into
/// `ev`, its odd ones into `od`.
pub(super) fn block_codes(xb: &[f32], inv: f32, ev: &mut [i16], od: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    if cpu::has_avx512()
        && xb.len() == BLOCK_LEN
        && ev.len() == BLOCK_LEN / 2
        && od.len() == ev.len()
    {
        // SAFETY: AVX-512 F and BW are present and the lengths are checked just above.
        return unsafe { avx512::block_codes(xb, inv, ev, od) };
    }
    block_codes_plain(xb, inv, ev, od);
}

/// [`block_codes`] value by value.
pub(super) fn block_codes_plain(xb: &[f32], inv: f32, ev: &mut [i16], od: &mut [i16]) {
    for ((e, o), pair) in ev.iter_mut().zip(od.iter_mut()).zip(xb.chunks_exact(2)) {
        *e = code(pair[0] * inv);
        *o = code(pair[1] * inv);
    }
}

/// `y` (|y| ≤ 32767 up to rounding) rounded to the nearest int16, ties to even: adding and
/// subtracting 1.5·2²³ leaves an integer in f32 (exact for |y| < 2²²); `as` saturates.
#[inline]
fn code(y: f32) -> i16 {
    const ROUND: f32 = 12_582_912.0;
    ((y + ROUND) - ROUND) as i16
}

/// The sums per block, per 64 and per 128 values (whole spans only) from the exact block
/// sums, each rounded once to f32.
pub(super) fn write_sums(exact: &[f64], out: &mut [f32]) {
    let nb = exact.len();
    let (s32, rest) = out.split_at_mut(nb);
    let (s64, s128) = rest.split_at_mut(nb / 2);
    for (o, &e) in s32.iter_mut().zip(exact) {
        *o = e as f32;
    }
    for (o, e) in s64.iter_mut().zip(exact.chunks_exact(2)) {
        *o = (e[0] + e[1]) as f32;
    }
    for (o, e) in s128.iter_mut().zip(exact.chunks_exact(4)) {
        *o = (e[0] + e[1] + e[2] + e[3]) as f32;
    }
}

/// The prepared form behind an input row of `cols` values, if `x` carries one.
pub fn prepared(x: &[f32], cols: usize) -> Option<QInput<'_>> {
    let l = Layout::new(cols)?;
    if x.len() != cols + 1 + l.end || x[cols].to_bits() != MARKER {
        return None;
    }
    let tail = &x[cols + 1..];
    let (steps, rest) = tail.split_at(l.sums[0]);
    let (sums, rest) = rest.split_at(l.spans - l.sums[0]);
    let (spans, codes) = rest.split_at(l.codes - l.spans);
    let (s32, rest) = sums.split_at(l.blocks);
    let (s64, s128) = rest.split_at(l.blocks / 2);
    // SAFETY: as in `write_prepared`: `codes` holds cols / 2 f32 words, i.e. cols i16 values.
    let codes: &[i16] = unsafe { std::slice::from_raw_parts(codes.as_ptr().cast::<i16>(), cols) };
    Some(QInput {
        steps,
        spans,
        sums: [s32, s64, s128],
        codes,
    })
}

/// `Σ w·x` for one row of MLX affine codes (`bits` 4 or 8, `group_size` 32, 64 or 128) with
/// the row's per-group `scales` and `biases`, against a prepared input of
/// `scales.len() * group_size` values. `None` for other bit widths or mismatched lengths.
pub fn dot_affine(
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    x: QInput<'_>,
) -> Option<f32> {
    let mut out = [0f32];
    dot_affine_on(
        InstructionSet::best(),
        bits,
        group_size,
        words,
        scales,
        biases,
        &[x],
        &mut out,
    )
    .then_some(out[0])
}

/// `out[k] = Σ w·xs[k]`: [`dot_affine`] of one weight row against several prepared input
/// rows (`out` as long as `xs`), [`INPUTS_PER_PASS`] at a time, on the given tier. `false` (writing
/// nothing) when this CPU lacks the tier, for other bit widths or group sizes, or for
/// mismatched lengths.
#[allow(clippy::too_many_arguments)]
pub fn dot_affine_on(
    tier: InstructionSet,
    bits: u8,
    group_size: usize,
    words: &[u32],
    scales: &[f32],
    biases: &[f32],
    xs: &[QInput<'_>],
    out: &mut [f32],
) -> bool {
    if out.len() != xs.len() {
        return false;
    }
    let kernels: Option<Vec<AffineDots<'_>>> = xs
        .chunks(INPUTS_PER_PASS)
        .map(|xs| AffineDots::new(tier, bits, group_size, xs))
        .collect();
    let Some(kernels) = kernels else {
        return false;
    };
    if !kernels.iter().all(|k| k.fits(words, scales, biases)) {
        return false;
    }
    for (k, out) in kernels.iter().zip(out.chunks_mut(INPUTS_PER_PASS)) {
        k.row(words, scales, biases, out);
    }
    true
}

/// The weight rows a kernel of prepared inputs takes: their bit width, group size and width.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowShape {
    pub(super) bits: u8,
    pub(super) group_size: usize,
    pub(super) cols: usize,
}

impl RowShape {
    /// `None` for other bit widths than 4 and 8, group sizes than 32, 64 and 128, or a width
    /// that is not a positive multiple of the group size.
    pub(super) fn new(bits: u8, group_size: usize, cols: usize) -> Option<RowShape> {
        let ok = matches!(bits, 4 | 8)
            && matches!(group_size, 32 | 64 | 128)
            && cols > 0
            && cols.is_multiple_of(group_size);
        ok.then_some(RowShape {
            bits,
            group_size,
            cols,
        })
    }

    /// Groups in a row.
    pub(super) fn groups(&self) -> usize {
        self.cols / self.group_size
    }

    /// Whether one weight row's codes, scales and biases are this shape.
    #[inline]
    pub(super) fn fits(&self, words: &[u32], scales: &[f32], biases: &[f32]) -> bool {
        scales.len() == self.groups()
            && biases.len() == self.groups()
            && words.len() * 32 == self.cols * usize::from(self.bits)
    }

    /// Whether [`ROWS_PER_BLOCK`] weight rows are this shape and `out` holds their products with `n`
    /// inputs.
    #[inline]
    pub(super) fn fits_rows(
        &self,
        words: [&[u32]; ROWS_PER_BLOCK],
        scales: [&[f32]; ROWS_PER_BLOCK],
        biases: [&[f32]; ROWS_PER_BLOCK],
        n: usize,
        out: &[f32],
    ) -> bool {
        (0..ROWS_PER_BLOCK).all(|r| self.fits(words[r], scales[r], biases[r]))
            && out.len() >= ROWS_PER_BLOCK * n
    }
}

/// Up to [`INPUTS_PER_PASS`] prepared inputs checked once against a bit width, group size and tier, for
/// [`dot_affine_on`] of many weight rows in turn ([`AffineDots::row`]).
#[derive(Clone, Copy)]
pub struct AffineDots<'a> {
    tier: InstructionSet,
    shape: RowShape,
    xs: [QInput<'a>; INPUTS_PER_PASS],
    n: usize,
}

impl<'a> AffineDots<'a> {
    /// The kernel for `xs` (1 to [`INPUTS_PER_PASS`] inputs of one width, each with the sums of
    /// `group_size` groups); `None` when this CPU lacks `tier`, for other widths or group
    /// sizes, or for inputs that disagree.
    pub fn new(
        tier: InstructionSet,
        bits: u8,
        group_size: usize,
        xs: &[QInput<'a>],
    ) -> Option<Self> {
        let cols = xs.first()?.codes.len();
        let shape = RowShape::new(bits, group_size, cols)?;
        let ok = tier.available()
            && xs.len() <= INPUTS_PER_PASS
            && xs.iter().all(|x| {
                x.codes.len() == cols
                    && x.steps.len() == STEP_LANES * cols / BLOCK_LEN
                    && x.spans.len() == (cols / BLOCK_LEN).div_ceil(2)
                    && x.group_sums(group_size)
                        .is_some_and(|s| s.len() == shape.groups())
            });
        if !ok {
            return None;
        }
        let mut all = [QInput::default(); INPUTS_PER_PASS];
        all[..xs.len()].copy_from_slice(xs);
        Some(AffineDots {
            tier,
            shape,
            xs: all,
            n: xs.len(),
        })
    }

    /// Whether one weight row's codes, scales and biases match the inputs' width.
    #[inline]
    pub fn fits(&self, words: &[u32], scales: &[f32], biases: &[f32]) -> bool {
        self.shape.fits(words, scales, biases)
    }

    /// `out[k] = Σ w·x_k` for one weight row (codes `words`, per-group `scales` and `biases`)
    /// and each input (`out` holds at least one value per input). `false`, writing nothing,
    /// when the row does not fit ([`AffineDots::fits`]).
    #[inline]
    pub fn row(&self, words: &[u32], scales: &[f32], biases: &[f32], out: &mut [f32]) -> bool {
        if !self.fits(words, scales, biases) || out.len() < self.n {
            return false;
        }
        let (xs, out) = (&self.xs[..self.n], &mut out[..self.n]);
        let (bits, gs) = (self.shape.bits, self.shape.group_size);
        match self.tier {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked in `new`); lengths checked
            // in `new` and `fits`.
            InstructionSet::Avx512Vnni => unsafe {
                avx512::dot_one_row(bits, gs, words, scales, biases, xs, out)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and FMA (checked in `new`); lengths checked in `new`
            // and `fits`.
            InstructionSet::Avx2Fma => unsafe {
                avx2::dot_affine(bits, gs, words, scales, biases, xs, out)
            },
            _ => portable::dot_affine(bits, gs, words, scales, biases, xs, out),
        }
        true
    }
}

/// Prepared inputs checked once ([`AffineDots`], or the int8 form's
/// [`super::affine8::Int8Dots`]), multiplied against weight rows in turn.
pub trait RowDots {
    /// Inputs (`n`).
    fn inputs(&self) -> usize;
    /// `out[k] = Σ w·x_k` for one weight row and each input; `false`, writing nothing, when
    /// the row does not fit.
    fn row(&self, words: &[u32], scales: &[f32], biases: &[f32], out: &mut [f32]) -> bool;
    /// `out[r · n + k] = Σ w_r·x_k` for [`ROWS_PER_BLOCK`] weight rows, `ahead` (the codes of the rows
    /// the next call takes) prefetched where that helps; `false`, writing nothing, when a row
    /// does not fit.
    fn rows(
        &self,
        words: [&[u32]; ROWS_PER_BLOCK],
        scales: [&[f32]; ROWS_PER_BLOCK],
        biases: [&[f32]; ROWS_PER_BLOCK],
        ahead: &[u32],
        out: &mut [f32],
    ) -> bool;
}

impl RowDots for AffineDots<'_> {
    fn inputs(&self) -> usize {
        self.n
    }
    fn row(&self, words: &[u32], scales: &[f32], biases: &[f32], out: &mut [f32]) -> bool {
        AffineDots::row(self, words, scales, biases, out)
    }
    fn rows(
        &self,
        words: [&[u32]; ROWS_PER_BLOCK],
        scales: [&[f32]; ROWS_PER_BLOCK],
        biases: [&[f32]; ROWS_PER_BLOCK],
        ahead: &[u32],
        out: &mut [f32],
    ) -> bool {
        AffineDots::rows(self, words, scales, biases, ahead, out)
    }
}

impl AffineDots<'_> {
    /// `out[r · n + k] = Σ w_r·x_k` for [`ROWS_PER_BLOCK`] weight rows (each as [`AffineDots::row`]
    /// takes it) and the `n` inputs (`out` holds at least `ROWS_PER_BLOCK · n` values). Against a single
    /// input on AVX-512, the input's codes are loaded once for all the rows, and `ahead` (the
    /// codes of the rows the next call takes, or nothing) is prefetched meanwhile; against
    /// more, two rows at a time share each input load; on other tiers one
    /// [`AffineDots::row`] each. `false`, writing nothing, when a row does not fit.
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
        if self.tier == InstructionSet::Avx512Vnni {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked in `new`); lengths checked
            // in `new` and `fits`.
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
            return true;
        }
        (0..ROWS_PER_BLOCK)
            .all(|r| self.row(words[r], scales[r], biases[r], &mut out[r * n..(r + 1) * n]))
    }
}
