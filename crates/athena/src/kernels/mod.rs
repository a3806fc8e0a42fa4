//! CPU kernels for the weight-bound products of decoding and prefill: dot products of f32
//! activations with f32, bf16 or affine-quantized (4- and 8-bit) weight rows, and the row-wise
//! matrix product [`matmul`] built on them.
//!
//! Each kernel has an AVX2+FMA version, chosen at run time with `is_x86_feature_detected!`,
//! and a portable one; the tests hold both to a plain reference. Dot products keep eight-lane
//! f32 partial sums and fold them into an f64 total every [`FLUSH`] elements, so a long row
//! is summed as accurately as a short one.
//!
//! [`matmul`] computes `y = x · Wᵀ` one weight row at a time: a row is converted to f32 once
//! (dequantized or widened from bf16) into a buffer that stays in L1, then dotted with up to
//! four input rows at once; input rows are taken in tiles that stay in L2 while the row blocks
//! stream past, and row blocks run in parallel on rayon's pool. At one input row (decode)
//! bf16 and f32 rows skip the buffer and are read straight from the weights.
//!
//! At decode sizes (up to [`GEMV_MAX_ROWS`] input rows) [`matmul`] also hands each row the
//! input's int16 form ([`affine`]), on which 4- and 8-bit affine rows run integer dot products
//! instead of dequantizing; [`matmul_exact`] keeps f32 activations throughout (the accuracy
//! contract of [`crate::quant::QMatrix::matmul`]).

pub mod affine;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod bandwidth;
mod portable;

use half::bf16;
use rayon::prelude::*;

/// Elements summed in f32 lanes before the partial sums are folded into f64.
pub(crate) const FLUSH: usize = 256;
/// Bytes of input rows per tile: small enough to stay in a core's L2 cache.
const TILE_BYTES: usize = 256 * 1024;
/// Products below this many multiply-adds run on the calling thread.
const PAR_MIN_WORK: usize = 1 << 18;
/// Up to this many input rows, [`matmul`] runs one dot product per weight row and input row
/// on the inputs' prepared forms (decode); more rows reuse each converted weight row.
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

/// The instruction set the kernels use on this machine, for reports.
pub fn isa() -> &'static str {
    if has_avx2_fma() {
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
/// is read once and the order need not match [`dot4`]'s).
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
    if out.len() % 8 != 0 || words.len() * per_word < out.len() {
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
}

/// `y = x · Wᵀ`: `x` [m, cols] row-major → `y` [m, rows] row-major. The caller has checked
/// `x.len() == m * w.cols()`. Up to [`GEMV_MAX_ROWS`] input rows, quantized 4- and 8-bit rows
/// multiply the inputs' int16 forms (relative error about 2⁻¹⁶ of each block's largest
/// input, see [`affine`]) and bf16 rows sum in another order ([`dot_bf16_wide`]); larger
/// products are [`matmul_exact`]'s.
pub fn matmul<W: Rows + ?Sized>(w: &W, x: &[f32], m: usize) -> Vec<f32> {
    let cols = w.cols();
    if (1..=GEMV_MAX_ROWS).contains(&m) && affine::prepared_len(cols) > 0 {
        let len = cols + affine::prepared_len(cols);
        let mut xp = Vec::with_capacity(m * len);
        let mut one = Vec::with_capacity(len);
        for xi in x.chunks_exact(cols).take(m) {
            if !affine::prepare_input(xi, &mut one) {
                return matmul_exact(w, x, m);
            }
            xp.extend_from_slice(&one);
        }
        return run(w, m, |first_row, out| {
            gemv_block(w, &xp, len, m, first_row, out)
        });
    }
    matmul_exact(w, x, m)
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
    let threads = rayon::current_num_threads();
    if work < PAR_MIN_WORK || threads == 1 {
        block(0, &mut yt);
    } else {
        let rows_per = rows.div_ceil(threads * 8).max(1);
        yt.par_chunks_mut(rows_per * m)
            .enumerate()
            .for_each(|(b, out)| block(b * rows_per, out));
    }
    if m == 1 {
        return yt;
    }
    // yt is [rows, m]; y is [m, rows].
    let mut y = vec![0f32; m * rows];
    for (r, col) in yt.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            y[i * rows + r] = v;
        }
    }
    y
}

/// Output rows `first_row..` into `out` ([row, m]), one [`Rows::dot`] per weight row and
/// input row; `xp` holds the `m` inputs with their prepared forms, `len` values each.
fn gemv_block<W: Rows + ?Sized>(
    w: &W,
    xp: &[f32],
    len: usize,
    m: usize,
    first_row: usize,
    out: &mut [f32],
) {
    let mut buf = vec![0f32; w.cols()];
    for (r, y_row) in out.chunks_exact_mut(m).enumerate() {
        for (y, xi) in y_row.iter_mut().zip(xp.chunks_exact(len)) {
            *y = w.dot(first_row + r, xi, &mut buf);
        }
    }
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
mod tests;
