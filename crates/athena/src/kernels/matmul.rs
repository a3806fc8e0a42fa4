//! `y = x · Wᵀ` for any [`WeightMatrix`]: the exact f32 path ([`matmul_exact`]), the path on
//! prepared integer inputs for quantized rows, and the bf16 × bf16 path (`bf16_pairs`), with
//! the work cut into tasks on the kernels' [`pool`].

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::bf16_pairs;
use super::cpu::{has_avx512_vnni, InstructionSet};
use super::float::{dot, dot2x4};
use super::layout::{InputForm, INPUTS_PER_PASS};
use super::matrix::WeightMatrix;
use super::pool::{self, keep_for_reuse, PAR_MIN_WORK};
use super::{affine, affine8, panel};

/// Bytes of input rows per tile: small enough to stay in a core's L2 cache.
const TILE_BYTES: usize = 256 * 1024;
/// Up to this many input rows, [`matmul`] hands every kind of row the inputs' prepared forms
/// (decode); past it only rows that read them ([`WeightMatrix::reads_prepared`]) get them, on CPUs
/// with a SIMD tier of the integer kernels, and other rows reuse each converted weight row
/// ([`matmul_exact`]).
pub const GEMV_MAX_ROWS: usize = 4;

/// `y = x · Wᵀ`: `x` [m, cols] row-major → `y` [m, rows] row-major. The caller has checked
/// `x.len() == m * w.cols()`. Quantized 4- and 8-bit rows ([`WeightMatrix::reads_prepared`])
/// multiply the inputs' int16 forms at every number of input rows where the CPU has a SIMD
/// tier of the integer kernels (up to [`GEMV_MAX_ROWS`] otherwise; relative error about
/// 2⁻¹⁶ of each block's largest input, see [`affine`]), each weight row against up to
/// [`INPUTS_PER_PASS`] inputs at once; up to [`GEMV_MAX_ROWS`] input rows, bf16 rows sum in
/// another order ([`dot_bf16_wide`]); other products are [`matmul_exact`]'s. Where the CPU
/// has AVX512_BF16, two or more input rows whose values are all bf16 against bf16 rows (or
/// f32 rows holding bf16 values) run on `vdpbf16ps` first (`bf16_pairs`): exact products,
/// f32 sums in another order.
pub fn matmul<W: WeightMatrix + ?Sized>(w: &W, x: &[f32], m: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(y) = bf16_pairs::try_matmul(w, x, m) {
        return y;
    }
    let cols = w.cols();
    // Past decode sizes the portable integer kernel is slower than dequantizing.
    let simd = InstructionSet::best() != InstructionSet::Portable;
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
pub(super) struct Preparation {
    pub form: InputForm,
    pub len: usize,
    pub write: fn(&[f32], &mut [f32]) -> bool,
}

impl Preparation {
    /// The form `w` asks for ([`WeightMatrix::input_form`]), int16 where the CPU lacks the int8
    /// kernels or the width has no int8 form.
    pub(super) fn of<W: WeightMatrix + ?Sized>(w: &W) -> Preparation {
        let cols = w.cols();
        let int8 = w.reads_prepared()
            && w.input_form() == InputForm::Int8
            && has_avx512_vnni()
            && affine8::prepared_len(cols) > 0;
        match int8 {
            true => Preparation {
                form: InputForm::Int8,
                len: affine8::prepared_len(cols),
                write: affine8::write_prepared,
            },
            false => Preparation {
                form: InputForm::Int16,
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
/// [`INPUTS_PER_PASS`].
fn run_prepared<W: WeightMatrix + ?Sized>(w: &W, xp: &[f32], m: usize) -> Vec<f32> {
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
        false => (tasks / row_tasks).clamp(1, m.div_ceil(INPUTS_PER_PASS)),
    };
    let rows_per = rows.div_ceil(row_tasks);
    let inputs_per = m.div_ceil(input_tasks).next_multiple_of(INPUTS_PER_PASS);
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
pub(super) fn scatter(
    out: &[f32],
    rows: Range<usize>,
    first_input: usize,
    m: usize,
    y: &mut [f32],
) {
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
pub fn matmul_exact<W: WeightMatrix + ?Sized>(w: &W, x: &[f32], m: usize) -> Vec<f32> {
    run(w, m, |first_row, out| match m {
        1 => gemv_exact(w, x, first_row, out),
        _ => pairs_block(w, x, m, first_row, out),
    })
}

/// Runs `block(first_row, out)` over the output rows (in parallel for large products) and
/// returns `y` [m, rows] from the blocks' [rows, m] layout.
fn run<W: WeightMatrix + ?Sized>(
    w: &W,
    m: usize,
    block: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
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
/// [`WeightMatrix::dot_rows`].
pub(super) fn prepared_block<W: WeightMatrix + ?Sized>(
    w: &W,
    inputs: &[&[f32]],
    rows: Range<usize>,
) -> Vec<f32> {
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
fn pairs_block<W: WeightMatrix + ?Sized>(
    w: &W,
    x: &[f32],
    m: usize,
    first_row: usize,
    out: &mut [f32],
) {
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

/// Output rows `first_row..` for one input row into `out`, one [`WeightMatrix::dot`] each.
fn gemv_exact<W: WeightMatrix + ?Sized>(w: &W, x: &[f32], first_row: usize, out: &mut [f32]) {
    let mut buf = vec![0f32; w.cols()];
    for (r, y) in out.iter_mut().enumerate() {
        *y = w.dot(first_row + r, x, &mut buf);
    }
}
