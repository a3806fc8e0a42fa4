//! The CPU kernel behind [`super::QMatrix::matmul`]: `y = x · Wᵀ` straight from the packed
//! codes.
//!
//! Per output row and group the codes are unpacked once into a small f32 buffer, then dotted
//! with every input row of the current tile; the group's affine map is applied to the dot
//! product afterwards, `scale · Σ x·q + bias · Σ x`, with `Σ x` per group computed once up
//! front. The dot over one group runs in f32; the sum over groups runs in f64, which costs
//! one add per group and keeps long rows as accurate as short ones. Input rows are taken in tiles that stay in cache while every output row of a block
//! streams past them, and blocks of output rows run in parallel on rayon's pool.

use rayon::prelude::*;

use super::scalars::Scalars;
use super::{pack, AffineParams};

/// A borrowed view of a [`super::QMatrix`]'s storage.
pub(super) struct Packed<'a> {
    pub rows: usize,
    pub cols: usize,
    pub params: AffineParams,
    /// u32 words per group.
    pub group_words: usize,
    /// [rows, cols * bits / 32].
    pub packed: &'a [u32],
    /// [rows, cols / group_size].
    pub scales: &'a Scalars,
    /// [rows, cols / group_size].
    pub biases: &'a Scalars,
}

/// Bytes of input rows per tile: small enough to stay in a core's L2 cache.
const TILE_BYTES: usize = 192 * 1024;
/// Products below this many multiply-adds run on the calling thread.
const PAR_MIN_WORK: usize = 1 << 20;
/// Lanes of the dot products' accumulators (independent sums the compiler can vectorize).
/// Group sizes are multiples of 32, so no remainder is left over.
const LANES: usize = 16;

/// `y = x · Wᵀ`, `x` [m, cols] → `y` [m, rows]. The caller has checked `x.len() == m * cols`
/// and that `m * rows` does not overflow.
pub(super) fn matmul(w: &Packed<'_>, x: &[f32], m: usize) -> Vec<f32> {
    let gs = w.params.group_size;
    // Σ x per group: x rows are whole numbers of groups, so [m, groups] row-major.
    let xsum: Vec<f64> = x
        .chunks_exact(gs)
        .map(|g| g.iter().map(|&v| f64::from(v)).sum())
        .collect();
    let mut yt = vec![0f32; w.rows * m];
    if m == 0 || w.rows == 0 {
        return yt;
    }
    let work = m.saturating_mul(w.rows).saturating_mul(w.cols);
    let threads = rayon::current_num_threads();
    if work < PAR_MIN_WORK || threads == 1 {
        rows_block(w, x, &xsum, m, 0, &mut yt);
    } else {
        let block = w.rows.div_ceil(threads * 4).max(1);
        yt.par_chunks_mut(block * m)
            .enumerate()
            .for_each(|(b, out)| rows_block(w, x, &xsum, m, b * block, out));
    }
    if m == 1 {
        return yt;
    }
    // yt is [rows, m]; y is [m, rows].
    let mut y = vec![0f32; m * w.rows];
    for (r, col) in yt.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            y[i * w.rows + r] = v;
        }
    }
    y
}

/// Output rows `first_row..first_row + out.len() / m` into `out`, laid out [row, m].
fn rows_block(
    w: &Packed<'_>,
    x: &[f32],
    xsum: &[f64],
    m: usize,
    first_row: usize,
    out: &mut [f32],
) {
    let gs = w.params.group_size;
    let groups = w.cols / gs;
    let row_words = groups * w.group_words;
    let tile = (TILE_BYTES / (w.cols * std::mem::size_of::<f32>())).clamp(1, m);
    let mut q = vec![0f32; gs];
    let mut acc = vec![0f64; tile];
    let (mut scale_buf, mut bias_buf) = (Vec::with_capacity(groups), Vec::with_capacity(groups));
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + tile).min(m);
        let x_tile = &x[i0 * w.cols..i1 * w.cols];
        let xsum_tile = &xsum[i0 * groups..i1 * groups];
        for (r, y_row) in out.chunks_exact_mut(m).enumerate() {
            let row = first_row + r;
            let (Some(words), Some(scales), Some(biases)) = (
                w.packed.chunks_exact(row_words).nth(row),
                w.scales.row_into(row, groups, &mut scale_buf),
                w.biases.row_into(row, groups, &mut bias_buf),
            ) else {
                continue;
            };
            let acc = &mut acc[..i1 - i0];
            acc.fill(0.0);
            for (g, ((words, &scale), &bias)) in words
                .chunks_exact(w.group_words)
                .zip(scales)
                .zip(biases)
                .enumerate()
            {
                pack::unpack(w.params.bits, words, &mut q);
                let (scale, bias) = (f64::from(scale), f64::from(bias));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x_group = &x_tile[i * w.cols + g * gs..i * w.cols + (g + 1) * gs];
                    *acc += scale * f64::from(dot(&q, x_group)) + bias * xsum_tile[i * groups + g];
                }
            }
            for (y, &acc) in y_row[i0..i1].iter_mut().zip(acc.iter()) {
                *y = acc as f32;
            }
        }
        i0 = i1;
    }
}

/// `Σ q·x` over one group, with `LANES` independent partial sums.
#[inline]
fn dot(q: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (q, x) in q.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        let lanes = |c: &[f32]| <&[f32; LANES]>::try_from(c).ok().copied();
        if let (Some(q), Some(x)) = (lanes(q), lanes(x)) {
            for ((acc, &q), &x) in acc.iter_mut().zip(&q).zip(&x) {
                *acc += q * x;
            }
        }
    }
    acc.iter().sum()
}
