//! CPU kernels for the weight-bound products of decoding and prefill: dot products of f32
//! activations with f32, bf16 or affine-quantized (4- and 8-bit) weight rows, and the row-wise
//! matrix product [`matmul`] built on them.
//!
//! Each kernel has an AVX2+FMA version, chosen at run time with `is_x86_feature_detected!`,
//! and a portable one; the tests hold both to a plain reference. Dot products keep eight-lane
//! f32 partial sums and fold them into an f64 total every [`FLUSH`] elements, so a long row
//! is summed as accurately as a short one.
//!
//! bf16 rows also have AVX-512 kernels, chosen the same way: the widening [`bf16_to_f32`]
//! and, when every input value is a bf16 (a model run in bf16: its activations are bf16
//! tensors widened to f32), [`matmul`]'s products of two or more input rows on AVX512_BF16's
//! `vdpbf16ps` (`bf16_pairs`): bf16 products are exact in f32, so those outputs differ from
//! [`matmul_exact`]'s in summation order only (f32 partial sums over sixteen lanes, without
//! the f64 folding).
//!
//! [`matmul`] computes `y = x · Wᵀ` one weight row at a time: a row is converted to f32 once
//! (dequantized or widened from bf16) into a buffer that stays in L1, then dotted with up to
//! four input rows at once; input rows are taken in tiles that stay in L2 while the row blocks
//! stream past, and row blocks run in parallel on the kernels' own [`pool`] (the calling
//! thread takes part, and idle workers spin briefly, so that the next product starts without
//! a wake-up). At one input row (decode) bf16 and f32 rows skip the buffer and are read
//! straight from the weights.
//!
//! [`matmul`] also hands 4- and 8-bit affine rows the inputs' int16 form ([`affine`]) at
//! every number of input rows (other rows up to [`GEMV_MAX_ROWS`]): they run integer dot
//! products instead of dequantizing, each row's codes unpacked once for up to
//! [`affine::MANY`] inputs, on AVX-512 VNNI where the CPU has it; [`matmul_exact`] keeps f32
//! activations throughout (the accuracy contract of [`crate::quant::QMatrix::matmul`]).
//!
//! [`matmul_many`] runs several decode-sized products (a step's routed experts) in one
//! parallel pass, each output equal to [`matmul`]'s. Against one input, 4- and 8-bit rows in
//! groups of 64 run a task's whole range in one call ([`decode`]), their scales and biases
//! read as stored (f32, bf16 or f16).

pub mod affine;
pub mod affine8;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_float;
#[cfg(target_arch = "x86_64")]
mod avx512_int8;
#[cfg(target_arch = "x86_64")]
mod avx512_panel;
pub mod bandwidth;
#[cfg(target_arch = "x86_64")]
mod bf16_pairs;
pub mod decode;
mod grouped;
pub mod panel;
pub mod pool;
mod portable;
mod widen;

pub use grouped::{matmul_many, Product};
pub use widen::{widen_bf16, widen_f16};

use std::ops::Range;

use half::bf16;

/// `v` rounded to the nearest bf16 (ties to even), as f32: [`bf16::from_f32`]'s result, NaN
/// kept quiet, written without branches so that loops over slices vectorize.
#[inline]
pub fn round_bf16(v: f32) -> f32 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    f32::from_bits(if nan {
        (b | 0x0040_0000) & 0xffff_0000
    } else {
        rounded
    })
}

/// Elements summed in f32 lanes before the partial sums are folded into f64.
pub(crate) const FLUSH: usize = 256;
/// Bytes of input rows per tile: small enough to stay in a core's L2 cache.
const TILE_BYTES: usize = 256 * 1024;
/// Products below this many multiply-adds run on the calling thread (a router's 64 × 2048
/// runs on the pool: a call costs a few microseconds, the product tens).
const PAR_MIN_WORK: usize = 1 << 16;
/// Up to this many input rows, [`matmul`] hands every kind of row the inputs' prepared forms
/// (decode); past it only rows that read them ([`Rows::reads_prepared`]) get them, on CPUs
/// with a SIMD tier of the integer kernels, and other rows reuse each converted weight row
/// ([`matmul_exact`]).
pub const GEMV_MAX_ROWS: usize = 4;

/// Whether the AVX2+FMA kernels can run on this CPU (checked once, then cached by std).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 float kernels can run on this CPU: AVX-512 F, BW and VL.
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the bf16 × bf16 kernels can run: [`has_avx512`] and AVX512_BF16 (`vdpbf16ps`).
#[inline]
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512() && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction set the kernels use on this machine, for reports.
pub fn isa() -> &'static str {
    if has_avx512_bf16() && has_avx2_fma() {
        "avx512+bf16"
    } else if has_avx512() && has_avx2_fma() {
        "avx512"
    } else if has_avx2_fma() {
        "avx2+fma"
    } else {
        "portable"
    }
}

/// `Σ a·b` over two slices of equal length (the shorter length otherwise).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); lengths are equal.
        return unsafe { avx2::dot(a, b) };
    }
    portable::dot(a, b)
}

/// `y += a·x` over the common length.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); lengths are equal.
        return unsafe { avx2::axpy(a, x, y) };
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * *x;
    }
}

/// `[Σ w·x₀, Σ w·x₁, Σ w·x₂, Σ w·x₃]`: one weight row against four input rows, each read
/// once per step. Every `x` must be at least as long as `w`.
#[inline]
pub fn dot4(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    let n = x.iter().fold(w.len(), |n, x| n.min(x.len()));
    let w = &w[..n];
    let x = x.map(|x| &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; every slice has length n.
        return unsafe { avx2::dot4(w, x) };
    }
    x.map(|x| portable::dot(w, x))
}

/// `[[Σ w₀·x₀, …, Σ w₀·x₃], [Σ w₁·x₀, …]]`: two weight rows against four input rows, each
/// input value loaded once for both rows. Every slice must be at least as long as `w[0]`.
/// Each pair is summed in [`dot`]'s order, so it equals `dot` of that pair bit for bit.
#[inline]
pub fn dot2x4(w: [&[f32]; 2], x: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = x
        .iter()
        .fold(w[0].len().min(w[1].len()), |n, x| n.min(x.len()));
    let w = w.map(|w| &w[..n]);
    let x = x.map(|x| &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; every slice has length n.
        return unsafe { avx2::dot2x4(w, x) };
    }
    portable::dot2x4(w, x)
}

/// `Σ w·x` with `w` in bf16, widened exactly to f32 on the fly.
#[inline]
pub fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; lengths are equal.
        return unsafe { avx2::dot_bf16(w, x) };
    }
    portable::dot_bf16(w, x)
}

/// [`dot_bf16`] summed in another order, with more loads in flight (decode, where one row
/// is read once and the order need not match [`dot4`]'s). AVX2's eight-lane accumulators
/// already read the row at memory bandwidth (sixteen-lane AVX-512 ones are no faster).
#[inline]
pub fn dot_bf16_wide(w: &[bf16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; lengths are equal.
        return unsafe { avx2::dot_bf16_wide(w, x) };
    }
    portable::dot_bf16(w, x)
}

/// Widens bf16 values to f32 (exact) into `out` (as many as both hold).
#[inline]
pub fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
    let n = src.len().min(out.len());
    let (src, out) = (&src[..n], &mut out[..n]);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512 F/BW/VL are present (checked above); lengths are equal.
        unsafe { avx512_float::bf16_to_f32(src, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 is present; lengths are equal.
        unsafe { avx2::bf16_to_f32(src, out) };
        return;
    }
    for (o, s) in out.iter_mut().zip(src) {
        *o = s.to_f32();
    }
}

/// One group of MLX affine codes to weights: `out[i] = scale · code[i] + bias`, with the codes
/// of `words` packed 8 bits (4 a word) or 4 bits (8 a word, low nibble first). `out.len()`
/// codes are written; it must be a multiple of 8 and `words` must hold them. Returns `false`
/// (writing nothing) for other bit widths, which the caller unpacks itself.
#[inline]
pub fn dequantize_group(bits: u8, words: &[u32], scale: f32, bias: f32, out: &mut [f32]) -> bool {
    let per_word = match bits {
        4 => 8,
        8 => 4,
        _ => return false,
    };
    if !out.len().is_multiple_of(8) || words.len() * per_word < out.len() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present; `words` holds `out.len()` codes (checked above).
        unsafe {
            match bits {
                4 => avx2::dequantize_q4(words, scale, bias, out),
                _ => avx2::dequantize_q8(words, scale, bias, out),
            }
        }
        return true;
    }
    portable::dequantize(bits, words, scale, bias, out);
    true
}

/// A weight matrix [rows, cols] that [`matmul`] reads one row at a time.
pub trait Rows: Sync {
    /// Rows (output features).
    fn rows(&self) -> usize;
    /// Columns (input features).
    fn cols(&self) -> usize;
    /// Row `r` (in range) in f32: written into `buf` (`cols` long) or borrowed from `self`.
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32];
    /// `Σ row_r · x` for one input row; by default through [`Rows::row`]. `x` holds the
    /// row's `cols` values, possibly followed by its prepared int16 form
    /// ([`affine::prepared`]), which quantized rows use; `buf` is `cols` long scratch.
    /// Wrappers pass `x` on unchanged.
    fn dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        dot(self.row(r, buf), x)
    }
    /// `out[(r - rows.start) · n + k] = Σ row_r · xs[k]` for weight rows `rows` (in range)
    /// and `n = xs.len()` input rows, each as [`Rows::dot`] takes it (`out` holds
    /// `rows.len() · n` values, any `n`); by default one [`Rows::dot`] each. Quantized rows
    /// check the prepared inputs once and unpack each row's codes once for up to
    /// [`affine::MANY`] of them, or, for many prepared inputs, once for all of them
    /// ([`panel`]). Wrappers forward it.
    fn dot_rows(&self, rows: Range<usize>, xs: &[&[f32]], out: &mut [f32], buf: &mut [f32]) {
        let n = xs.len().max(1);
        for (r, out) in rows.zip(out.chunks_exact_mut(n)) {
            for (o, x) in out.iter_mut().zip(xs) {
                *o = self.dot(r, x, buf);
            }
        }
    }
    /// Whether [`Rows::dot`] and [`Rows::dot_many`] run on prepared inputs (4- and 8-bit
    /// affine rows): [`matmul`] then hands them prepared inputs at every size. `false` by
    /// default; wrappers forward it.
    fn reads_prepared(&self) -> bool {
        false
    }
    /// The prepared form [`matmul`] hands rows that read prepared inputs: int16 by default;
    /// int8 for a quantized matrix that opted into it (used where the CPU has AVX-512 VNNI).
    /// Wrappers forward it.
    fn input_form(&self) -> affine8::InputForm {
        affine8::InputForm::Int16
    }
    /// Row `r` (in range) borrowed in bf16 when the rows are stored so; `None` by default.
    /// The bf16 × bf16 products of [`matmul`] read such rows in place (others are converted
    /// to bf16 where exact); wrappers that pass rows on unchanged forward it.
    fn bf16_row(&self, _r: usize) -> Option<&[bf16]> {
        None
    }
}

/// f32 rows stored row-major.
pub struct F32Rows<'a> {
    /// [rows, cols], row-major.
    pub data: &'a [f32],
    /// Columns.
    pub cols: usize,
}

impl Rows for F32Rows<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn row<'a>(&'a self, r: usize, _buf: &'a mut [f32]) -> &'a [f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// bf16 rows stored row-major (bf16 weights with f32 activations, as llama.cpp computes them).
pub struct Bf16Rows<'a> {
    /// [rows, cols], row-major.
    pub data: &'a [bf16],
    /// Columns.
    pub cols: usize,
}

impl Rows for Bf16Rows<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        bf16_to_f32(&self.data[r * self.cols..(r + 1) * self.cols], buf);
        buf
    }
    fn dot(&self, r: usize, x: &[f32], _buf: &mut [f32]) -> f32 {
        let w = &self.data[r * self.cols..(r + 1) * self.cols];
        // A prepared input comes from `matmul`, which does not promise `dot4`'s order.
        match x.len() > self.cols {
            true => dot_bf16_wide(w, x),
            false => dot_bf16(w, x),
        }
    }
    fn bf16_row(&self, r: usize) -> Option<&[bf16]> {
        self.data.get(r * self.cols..(r + 1) * self.cols)
    }
}

/// `y = x · Wᵀ`: `x` [m, cols] row-major → `y` [m, rows] row-major. The caller has checked
/// `x.len() == m * w.cols()`. Quantized 4- and 8-bit rows ([`Rows::reads_prepared`])
/// multiply the inputs' int16 forms at every number of input rows where the CPU has a SIMD
/// tier of the integer kernels (up to [`GEMV_MAX_ROWS`] otherwise; relative error about
/// 2⁻¹⁶ of each block's largest input, see [`affine`]), each weight row against up to
/// [`affine::MANY`] inputs at once; up to [`GEMV_MAX_ROWS`] input rows, bf16 rows sum in
/// another order ([`dot_bf16_wide`]); other products are [`matmul_exact`]'s. Where the CPU
/// has AVX512_BF16, two or more input rows whose values are all bf16 against bf16 rows (or
/// f32 rows holding bf16 values) run on `vdpbf16ps` first (`bf16_pairs`): exact products,
/// f32 sums in another order.
pub fn matmul<W: Rows + ?Sized>(w: &W, x: &[f32], m: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(y) = bf16_pairs::try_matmul(w, x, m) {
        return y;
    }
    let cols = w.cols();
    // Past decode sizes the portable integer kernel is slower than dequantizing.
    let simd = affine::Tier::best() != affine::Tier::Portable;
    let wanted = m <= GEMV_MAX_ROWS || (simd && w.reads_prepared());
    let prep = Preparation::of(w);
    if m == 0 || !wanted || prep.len == 0 {
        return matmul_exact(w, x, m);
    }
    let mut xp = PREPARED.with(|c| c.take());
    let y = match prepare_rows(x, cols, m, prep, &mut xp) {
        true => run_prepared(w, &xp, m),
        false => matmul_exact(w, x, m),
    };
    PREPARED.with(|c| c.set(keep_for_reuse(xp, PREPARED_KEEP_BYTES)));
    y
}

/// Whether every value of `x` is finite: without an early exit, so that the compiler
/// compares many lanes at once (a prepared row checks every input value, at each product).
pub(crate) fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(true, |ok, v| ok & v.is_finite())
}

/// `buf` when it takes at most `max_bytes` (a per-thread buffer worth keeping for the next
/// call), else an empty vector, freeing it.
fn keep_for_reuse<T>(buf: Vec<T>, max_bytes: usize) -> Vec<T> {
    match buf.capacity() * std::mem::size_of::<T>() <= max_bytes {
        true => buf,
        false => Vec::new(),
    }
}

thread_local! {
    /// The prepared inputs of this thread's last [`matmul`], kept for the next one (a call
    /// that runs while another is in progress on the same thread takes an empty buffer).
    static PREPARED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// The scratch row of this thread's last [`prepared_block`], kept likewise.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest prepared-input buffer a thread keeps between [`matmul`] calls.
const PREPARED_KEEP_BYTES: usize = 8 << 20;

/// Input rows per task of [`prepare_rows`] when it runs in parallel.
const PREPARE_ROWS_PER_TASK: usize = 8;

/// How [`matmul`] prepares the input rows of a matrix: the tail's length (0 when the rows
/// have no prepared form) and what writes a row and its tail.
#[derive(Clone, Copy)]
pub(crate) struct Preparation {
    pub form: affine8::InputForm,
    pub len: usize,
    pub write: fn(&[f32], &mut [f32]) -> bool,
}

impl Preparation {
    /// The form `w` asks for ([`Rows::input_form`]), int16 where the CPU lacks the int8
    /// kernels or the width has no int8 form.
    pub(crate) fn of<W: Rows + ?Sized>(w: &W) -> Preparation {
        let cols = w.cols();
        let int8 = w.reads_prepared()
            && w.input_form() == affine8::InputForm::Int8
            && affine::has_avx512_vnni()
            && affine8::prepared_len(cols) > 0;
        match int8 {
            true => Preparation {
                form: affine8::InputForm::Int8,
                len: affine8::prepared_len(cols),
                write: affine8::write_prepared,
            },
            false => Preparation {
                form: affine8::InputForm::Int16,
                len: affine::prepared_len(cols),
                write: affine::write_prepared,
            },
        }
    }
}

/// Writes the `m` rows of `x` (`cols` each), every one followed by its prepared tail, into
/// `xp` (replacing its contents). `false` when a row has no prepared form.
fn prepare_rows(x: &[f32], cols: usize, m: usize, prep: Preparation, xp: &mut Vec<f32>) -> bool {
    let len = cols + prep.len;
    xp.clear();
    xp.resize(m * len, 0.0);
    let write = |out: &mut [f32], first: usize| {
        out.chunks_exact_mut(len)
            .zip(x.chunks_exact(cols).skip(first))
            .all(|(out, xi)| (prep.write)(xi, out))
    };
    // A decode step's row on this thread (no hand-off on the hot path); past two tasks' worth
    // of rows, in tasks on the pool.
    if m < 2 * PREPARE_ROWS_PER_TASK || pool::threads() == 1 {
        return write(xp, 0);
    }
    let ok = std::sync::atomic::AtomicBool::new(true);
    pool::for_each_chunk(xp, PREPARE_ROWS_PER_TASK * len, |c, out| {
        if !write(out, c * PREPARE_ROWS_PER_TASK) {
            ok.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    });
    ok.into_inner()
}

/// Weight rows per task below which [`run_prepared`] also splits the input rows.
const MIN_TASK_ROWS: usize = 32;

/// `y` [m, rows] for inputs prepared by [`prepare_rows`]: the products are cut into tasks of
/// weight rows × input rows, run in parallel for large products. Tasks take whole row
/// blocks while there are enough weight rows to keep every thread busy; with few weight rows
/// and many inputs (small matrices at prefill) they also split the inputs, in multiples of
/// [`affine::MANY`].
fn run_prepared<W: Rows + ?Sized>(w: &W, xp: &[f32], m: usize) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let len = xp.len() / m.max(1);
    let inputs: Vec<&[f32]> = xp.chunks_exact(len).take(m).collect();
    let mut y = vec![0f32; m * rows];
    if m == 0 || rows == 0 {
        return y;
    }
    let work = m.saturating_mul(rows).saturating_mul(cols);
    let threads = pool::threads();
    if work < PAR_MIN_WORK || threads == 1 {
        let out = prepared_block(w, &inputs, 0..rows);
        scatter(&out, 0..rows, 0, m, &mut y);
        return y;
    }
    // Many inputs against quantized rows: each task lays out its inputs once for all of its
    // rows (`panel`), so fewer, larger tasks.
    let panels = m >= panel::PANEL_MIN;
    let tasks = match panels {
        true => threads * 2,
        false => threads * 8,
    };
    let row_tasks = (rows / MIN_TASK_ROWS).clamp(1, tasks);
    // Past a panel's worth of inputs every task takes them all, so that each output comes
    // from the same kernel however the rows are cut (`matmul_many` runs them so too).
    let input_tasks = match panels {
        true => 1,
        false => (tasks / row_tasks).clamp(1, m.div_ceil(affine::MANY)),
    };
    let rows_per = rows.div_ceil(row_tasks);
    let inputs_per = m.div_ceil(input_tasks).next_multiple_of(affine::MANY);
    let input_blocks = m.div_ceil(inputs_per);
    let parts = pool::map(rows.div_ceil(rows_per) * input_blocks, |k| {
        let (r0, i0) = (k / input_blocks * rows_per, k % input_blocks * inputs_per);
        let (r1, i1) = ((r0 + rows_per).min(rows), (i0 + inputs_per).min(m));
        (r0, i0, prepared_block(w, &inputs[i0..i1], r0..r1))
    });
    for (r0, i0, out) in &parts {
        let n = (rows - r0).min(rows_per);
        scatter(out, *r0..r0 + n, *i0, m, &mut y);
    }
    y
}

/// Writes a task's outputs `out` ([weight row, input], weight rows `rows`, inputs from
/// `first_input`) into `y` [m, all rows].
fn scatter(out: &[f32], rows: Range<usize>, first_input: usize, m: usize, y: &mut [f32]) {
    let total = y.len() / m.max(1);
    let n = out.len() / rows.len().max(1);
    if n == 1 {
        let at = first_input * total;
        y[at + rows.start..at + rows.end].copy_from_slice(out);
        return;
    }
    // Input by input, so that the writes into `y` are contiguous (the task's outputs are
    // small enough to be read across).
    for i in 0..n {
        let at = (first_input + i) * total;
        for (k, o) in y[at + rows.start..at + rows.end].iter_mut().enumerate() {
            *o = out[k * n + i];
        }
    }
}

/// [`matmul`] with f32 activations throughout: each output differs from the exact product
/// by f32 rounding only, and one input row gives the same values as the same row of a batch,
/// bit for bit. Past one input row, weight rows are taken two at a time against four input
/// rows ([`dot2x4`]), which halves the input reads per multiply-add.
pub fn matmul_exact<W: Rows + ?Sized>(w: &W, x: &[f32], m: usize) -> Vec<f32> {
    run(w, m, |first_row, out| match m {
        1 => gemv_exact(w, x, first_row, out),
        _ => pairs_block(w, x, m, first_row, out),
    })
}

/// Runs `block(first_row, out)` over the output rows (in parallel for large products) and
/// returns `y` [m, rows] from the blocks' [rows, m] layout.
fn run<W: Rows + ?Sized>(w: &W, m: usize, block: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let mut yt = vec![0f32; rows * m];
    if m == 0 || rows == 0 {
        return yt;
    }
    let work = m.saturating_mul(rows).saturating_mul(cols);
    let threads = pool::threads();
    if work < PAR_MIN_WORK || threads == 1 {
        block(0, &mut yt);
    } else {
        let rows_per = rows.div_ceil(threads * 8).max(1);
        pool::for_each_chunk(&mut yt, rows_per * m, |b, out| block(b * rows_per, out));
    }
    if m == 1 {
        return yt;
    }
    // yt is [rows, m]; y is [m, rows], written row by row.
    let mut y = vec![0f32; m * rows];
    for (i, yi) in y.chunks_exact_mut(rows).enumerate() {
        for (o, col) in yi.iter_mut().zip(yt.chunks_exact(m)) {
            *o = col[i];
        }
    }
    y
}

/// The products of weight rows `rows` with the prepared `inputs`, [weight row, input], in one
/// [`Rows::dot_rows`].
fn prepared_block<W: Rows + ?Sized>(w: &W, inputs: &[&[f32]], rows: Range<usize>) -> Vec<f32> {
    let mut out = vec![0f32; rows.len() * inputs.len()];
    // A task's scratch row, kept by the thread for its next task rather than allocated and
    // zeroed for each (a decode step runs a few dozen tasks per product).
    let mut buf = SCRATCH.with(|c| c.take());
    buf.resize(w.cols(), 0.0);
    w.dot_rows(rows, inputs, &mut out, &mut buf);
    SCRATCH.with(|c| c.set(keep_for_reuse(buf, PREPARED_KEEP_BYTES)));
    out
}

/// Output rows `first_row..` into `out` ([row, m]): weight rows two at a time against four
/// input rows ([`dot2x4`]), input rows in tiles that stay in L2.
fn pairs_block<W: Rows + ?Sized>(w: &W, x: &[f32], m: usize, first_row: usize, out: &mut [f32]) {
    let cols = w.cols();
    let (mut buf0, mut buf1) = (vec![0f32; cols], vec![0f32; cols]);
    let tile = (TILE_BYTES / (cols * std::mem::size_of::<f32>()).max(1)).clamp(4, m.max(4));
    let out_rows = out.len() / m;
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + tile).min(m);
        let mut r = 0;
        while r < out_rows {
            let two = r + 1 < out_rows;
            let row0 = w.row(first_row + r, &mut buf0);
            let row1 = if two {
                w.row(first_row + r + 1, &mut buf1)
            } else {
                row0
            };
            let mut i = i0;
            while i + 4 <= i1 {
                let xr = |k: usize| &x[(i + k) * cols..(i + k + 1) * cols];
                let d = dot2x4([row0, row1], [xr(0), xr(1), xr(2), xr(3)]);
                out[r * m + i..r * m + i + 4].copy_from_slice(&d[0]);
                if two {
                    out[(r + 1) * m + i..(r + 1) * m + i + 4].copy_from_slice(&d[1]);
                }
                i += 4;
            }
            for k in i..i1 {
                let xk = &x[k * cols..(k + 1) * cols];
                out[r * m + k] = dot(row0, xk);
                if two {
                    out[(r + 1) * m + k] = dot(row1, xk);
                }
            }
            r += 2;
        }
        i0 = i1;
    }
}

/// Output rows `first_row..` for one input row into `out`, one [`Rows::dot`] each.
fn gemv_exact<W: Rows + ?Sized>(w: &W, x: &[f32], first_row: usize, out: &mut [f32]) {
    let mut buf = vec![0f32; w.cols()];
    for (r, y) in out.iter_mut().enumerate() {
        *y = w.dot(first_row + r, x, &mut buf);
    }
}

#[cfg(test)]
mod affine8_tests;
#[cfg(test)]
mod affine_tests;
#[cfg(all(test, target_arch = "x86_64"))]
mod bf16_tests;
#[cfg(test)]
mod tests;
