//! `y = x · Wᵀ` with bf16 weights and inputs whose values are all bf16 (a model run in
//! bf16: its activations are bf16 tensors widened to f32), on AVX512_BF16's `vdpbf16ps`.
//!
//! The inputs are packed to bf16 once per call. Weight rows are taken four at a time (read
//! in place when stored in bf16, else converted and packed, see [`WeightMatrix::bf16_row`]) against
//! four input rows at a time: sixteen accumulators of sixteen f32 lanes, each row value
//! loaded once per step for four products. Products of bf16 values are exact in f32, so
//! each output is the exact sum up to f32 rounding of the partial sums (sixteen lanes, each
//! summing `cols / 16` products); only the summation order differs from
//! [`super::matmul_exact`]. Input rows are taken in tiles that stay in L2 while the weight
//! rows stream past; chunks of output rows run in parallel on the kernel pool, each writing its
//! outputs input row by input row so that `y` is gathered with contiguous copies. The
//! packed inputs and the chunks' outputs live in per-thread buffers reused across calls (up to
//! [`KEEP_BYTES`] each).

use std::cell::Cell;

use half::bf16;

use super::cpu::{has_avx512, has_avx512_bf16};
use super::float::dot;
use super::matrix::WeightMatrix;
use super::pool::{self, keep_for_reuse, PAR_MIN_WORK};
use super::portable;
use super::x86::avx512_float as simd;

/// Weight rows per step of the micro-kernel.
const W_BLOCK: usize = 4;
/// Input rows per step of the micro-kernel.
const X_BLOCK: usize = 4;
/// Fewest input rows [`try_matmul`] takes: one row (decode) is bound by reading the weights,
/// which [`super::dot_bf16_wide`] does at the same speed without packing the input.
const MIN_ROWS: usize = 2;
/// Bytes of packed input rows per tile: small enough to stay in a core's L2 cache.
const TILE_BYTES: usize = 512 * 1024;

/// `y = x · Wᵀ` (`x` [m, cols] → `y` [m, rows], row-major) on `vdpbf16ps`, or `None` (having
/// computed nothing) where that does not apply: fewer than two input rows, rows that read
/// prepared inputs ([`WeightMatrix::reads_prepared`]), a CPU without AVX512_BF16, an input value
/// that is not a bf16, or a first weight row that is not. A later weight row that is not
/// bf16 is computed on the exact path ([`super::dot`]).
pub(super) fn try_matmul<W: WeightMatrix + ?Sized>(w: &W, x: &[f32], m: usize) -> Option<Vec<f32>> {
    let (rows, cols) = (w.rows(), w.cols());
    if m < MIN_ROWS || rows == 0 || cols == 0 || x.len() != m * cols {
        return None;
    }
    // Quantized rows run on the inputs' integer form instead.
    if w.reads_prepared() || !has_avx512_bf16() {
        return None;
    }
    let mut xb = PACKED.with(|c| c.take());
    let y = match pack_into(x, &mut xb) && first_row_is_bf16(w) {
        true => Some(run_chunks(w, m, |first_row, out| {
            block(w, x, &xb, m, first_row, out)
        })),
        false => None,
    };
    PACKED.with(|c| c.set(keep_for_reuse(xb, KEEP_BYTES)));
    y
}

/// Whether [`try_matmul`] runs this product (its checks, without computing anything).
pub(super) fn applies<W: WeightMatrix + ?Sized>(w: &W, x: &[f32], m: usize) -> bool {
    let (rows, cols) = (w.rows(), w.cols());
    m >= MIN_ROWS
        && rows > 0
        && cols > 0
        && x.len() == m * cols
        && !w.reads_prepared()
        && has_avx512_bf16()
        && x.iter().all(|v| v.to_bits() & 0xffff == 0)
        && first_row_is_bf16(w)
}

thread_local! {
    /// The packed inputs of this thread's last [`try_matmul`], kept for the next one (a call
    /// that runs while another is in progress on the same thread takes an empty buffer).
    static PACKED: Cell<Vec<bf16>> = const { Cell::new(Vec::new()) };
    /// The per-chunk outputs of this thread's last [`run_chunks`], kept likewise.
    static PARTS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Largest buffer, in bytes, that a thread keeps between calls.
const KEEP_BYTES: usize = 16 << 20;

/// `x` in bf16 into `out` (replacing its contents); `false` where some value is not a bf16.
fn pack_into(x: &[f32], out: &mut Vec<bf16>) -> bool {
    out.clear();
    out.resize(x.len(), bf16::ZERO);
    pack(x, out)
}

/// Runs `block(first_row, out)` over chunks of whole [`W_BLOCK`]s of output rows (in
/// parallel for large products), each chunk's `out` laid out [m, chunk rows], and gathers
/// `y` [m, rows] from them with contiguous copies.
fn run_chunks<W: WeightMatrix + ?Sized>(
    w: &W,
    m: usize,
    block: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let threads = pool::threads();
    let work = m.saturating_mul(rows).saturating_mul(cols);
    let chunk = match work < PAR_MIN_WORK || threads == 1 {
        true => rows,
        false => rows.div_ceil(threads * 8).next_multiple_of(W_BLOCK),
    };
    let mut parts = PARTS.with(|c| c.take());
    parts.clear();
    parts.resize(rows * m, 0.0);
    if chunk >= rows {
        block(0, &mut parts);
    } else {
        pool::for_each_chunk(&mut parts, chunk * m, |c, out| block(c * chunk, out));
    }
    let mut y = Vec::with_capacity(m * rows);
    for i in 0..m {
        for part in parts.chunks(chunk * m) {
            let n = part.len() / m;
            y.extend_from_slice(&part[i * n..(i + 1) * n]);
        }
    }
    PARTS.with(|c| c.set(keep_for_reuse(parts, KEEP_BYTES)));
    y
}

/// Whether row 0 of `w` holds bf16 values only.
fn first_row_is_bf16<W: WeightMatrix + ?Sized>(w: &W) -> bool {
    if w.bf16_row(0).is_some() {
        return true;
    }
    let cols = w.cols();
    let mut buf = vec![0f32; cols];
    let mut packed = vec![bf16::ZERO; cols];
    pack(w.row(0, &mut buf), &mut packed)
}

/// Writes `src` in bf16 into `out` (as many as both hold) and returns whether that is exact
/// (every value's low 16 bits zero); `false` without AVX-512.
pub(super) fn pack(src: &[f32], out: &mut [bf16]) -> bool {
    let n = src.len().min(out.len());
    if !has_avx512() {
        return false;
    }
    // SAFETY: AVX-512 F/BW/VL are present (checked above); both slices have length n.
    unsafe { simd::pack_bf16(&src[..n], &mut out[..n]) }
}

/// `out[j][k] = Σ w_j·x_k` over the shortest slice's length, on `vdpbf16ps` (see
/// [`simd::dot_pairs`]), or in plain f32 arithmetic without AVX512_BF16.
pub(super) fn dots<const R: usize, const C: usize>(
    w: [&[bf16]; R],
    x: [&[bf16]; C],
) -> [[f32; C]; R] {
    let n = w.iter().chain(&x).map(|s| s.len()).min().unwrap_or(0);
    if !has_avx512_bf16() {
        return w.map(|w| x.map(|x| portable::dot_bf16_pairs(&w[..n], &x[..n])));
    }
    // SAFETY: AVX-512 F/BW/VL and BF16 are present (checked above); every pointer is valid
    // for n reads.
    unsafe { simd::dot_pairs(w.map(|w| w.as_ptr()), x.map(|x| x.as_ptr()), n) }
}

/// Input rows per tile: a multiple of [`X_BLOCK`] whose packed rows fit [`TILE_BYTES`].
fn tile_rows(cols: usize, m: usize) -> usize {
    let fit = TILE_BYTES / (cols * std::mem::size_of::<bf16>()).max(1);
    (fit / X_BLOCK * X_BLOCK).clamp(X_BLOCK, m.next_multiple_of(X_BLOCK))
}

/// Output rows `first_row..` into `out` ([m, chunk rows]): weight rows [`W_BLOCK`] at a
/// time against the input rows of each tile, [`X_BLOCK`] at a time.
fn block<W: WeightMatrix + ?Sized>(
    w: &W,
    x: &[f32],
    xb: &[bf16],
    m: usize,
    first_row: usize,
    out: &mut [f32],
) {
    let cols = w.cols();
    let out_rows = out.len() / m;
    let mut buf = vec![0f32; cols];
    let mut packed = vec![bf16::ZERO; W_BLOCK * cols];
    let tile = tile_rows(cols, m);
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + tile).min(m);
        let mut r0 = 0;
        while r0 < out_rows {
            let n = W_BLOCK.min(out_rows - r0);
            let (wr, exact) = weight_rows(w, first_row + r0, n, &mut buf, &mut packed);
            let mut i = i0;
            while i < i1 {
                let group = Group {
                    w: wr,
                    exact,
                    n,
                    xb,
                    cols,
                    stride: out_rows,
                    r0,
                    i,
                };
                match i1 - i {
                    1 => group.run::<1>(out),
                    2 => group.run::<2>(out),
                    3 => group.run::<3>(out),
                    _ => group.run::<X_BLOCK>(out),
                }
                i += X_BLOCK;
            }
            for j in (0..n).filter(|&j| !exact[j]) {
                let row = w.row(first_row + r0 + j, &mut buf);
                for k in i0..i1 {
                    out[k * out_rows + r0 + j] = dot(row, &x[k * cols..(k + 1) * cols]);
                }
            }
            r0 += W_BLOCK;
        }
        i0 = i1;
    }
}

/// Rows `r0..r0 + n` (`n` ≤ [`W_BLOCK`]) of `w` in bf16, read in place or converted into
/// `packed` ([`W_BLOCK`] rows of scratch), and whether each is exact; rows past `n` repeat
/// the first (their products are not used).
fn weight_rows<'a, W: WeightMatrix + ?Sized>(
    w: &'a W,
    r0: usize,
    n: usize,
    buf: &mut [f32],
    packed: &'a mut [bf16],
) -> ([&'a [bf16]; W_BLOCK], [bool; W_BLOCK]) {
    let mut rows: [&[bf16]; W_BLOCK] = [&[]; W_BLOCK];
    let mut exact = [false; W_BLOCK];
    for (j, slot) in packed.chunks_exact_mut(w.cols().max(1)).take(n).enumerate() {
        match w.bf16_row(r0 + j) {
            Some(row) => {
                rows[j] = row;
                exact[j] = true;
            }
            None => {
                exact[j] = pack(w.row(r0 + j, buf), slot);
                rows[j] = slot;
            }
        }
    }
    for j in n..W_BLOCK {
        rows[j] = rows[0];
    }
    (rows, exact)
}

/// One step of [`block`]: its weight rows against the `C` input rows from `i`.
struct Group<'a> {
    /// The weight rows, `n` of them used.
    w: [&'a [bf16]; W_BLOCK],
    exact: [bool; W_BLOCK],
    n: usize,
    /// All packed input rows.
    xb: &'a [bf16],
    cols: usize,
    /// Row length of the output ([m, stride]).
    stride: usize,
    /// Output column of the first weight row.
    r0: usize,
    i: usize,
}

impl Group<'_> {
    /// Computes the products and stores those of exact weight rows into `out`.
    fn run<const C: usize>(&self, out: &mut [f32]) {
        let (cols, i) = (self.cols, self.i);
        let x: [&[bf16]; C] = std::array::from_fn(|k| &self.xb[(i + k) * cols..(i + k + 1) * cols]);
        let d = dots(self.w, x);
        for (j, d) in d.iter().enumerate().take(self.n) {
            if !self.exact[j] {
                continue;
            }
            for (k, &v) in d.iter().enumerate() {
                out[(i + k) * self.stride + self.r0 + j] = v;
            }
        }
    }
}
