//! Several independent products `yᵢ = xᵢ · Wᵢᵀ` in one parallel pass: the routed experts of
//! a decode step, each with its own few input rows.
//!
//! [`matmul`] would run each product as its own parallel section, so a
//! decode step pays a fork and join, and the idle time of its least busy thread, per expert
//! and projection. [`matmul_many`] prepares every input once, cuts all the products' weight
//! rows into tasks and runs them together. Each output is computed exactly as `matmul`
//! computes it (the same [`WeightMatrix::dot_rows`] calls on the same prepared inputs), so the
//! grouping changes the schedule, not the values. Products past decode size, and those
//! `matmul` runs on bf16 × bf16 products, go through `matmul` one by one.

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::bf16_pairs;
use super::cpu::InstructionSet;
use super::layout::ROWS_PER_BLOCK;
use super::matmul::{matmul, prepared_block, scatter, Preparation, GEMV_MAX_ROWS};
use super::matrix::WeightMatrix;
use super::pool::{self, PAR_MIN_WORK};

/// One product of [`matmul_many`]: `x` holds `m` rows of `w.cols()` values.
pub struct Product<'a> {
    /// The weight rows.
    pub w: &'a dyn WeightMatrix,
    /// [m, cols] row-major.
    pub x: &'a [f32],
    /// Input rows.
    pub m: usize,
}

/// Tasks per thread of the shared pass.
const TASKS_PER_THREAD: usize = 4;
/// Fewest weight rows in a task.
const MIN_TASK_ROWS: usize = 16;
/// Prepared values below which the inputs are prepared on the calling thread.
const PAR_MIN_PREPARE: usize = 1 << 16;

/// `[x₀ · W₀ᵀ, x₁ · W₁ᵀ, …]`, each `[m, rows]` row-major and equal to
/// [`matmul`]`(w, x, m)`. The caller has checked `x.len() == m * w.cols()`.
pub fn matmul_many(products: &[Product<'_>]) -> Vec<Vec<f32>> {
    let mut ys: Vec<Vec<f32>> = products
        .iter()
        .map(|p| vec![0f32; p.m * p.w.rows()])
        .collect();
    // (product, offset of its prepared rows in `xp`, length of each, how they are prepared)
    // for the products run together: decode-sized ones, and any number of input rows against
    // rows that read prepared inputs (quantized experts at prefill), as `matmul` would run
    // them. The others run through `matmul` one by one.
    let simd = InstructionSet::best() != InstructionSet::Portable;
    let mut shared: Vec<(usize, usize, usize)> = Vec::new();
    let mut preps: Vec<Preparation> = Vec::new();
    // Per entry of `shared`, the earlier entry whose prepared rows it reads (the same input
    // rows prepared the same way: a decode step's experts all read the token's row).
    let mut same_as: Vec<Option<usize>> = Vec::new();
    let mut at = 0;
    for (i, p) in products.iter().enumerate() {
        let prep = Preparation::of(p.w);
        let sized = p.m <= GEMV_MAX_ROWS || (simd && p.w.reads_prepared());
        if p.m > 0 && sized && prep.len > 0 && p.w.rows() > 0 && !bf16_products(p) {
            let len = p.w.cols() + prep.len;
            let earlier = shared.iter().zip(&preps).position(|(&(j, _, l), q)| {
                l == len && q.form == prep.form && same_bits(products[j].x, p.x)
            });
            match earlier {
                Some(e) => shared.push((i, shared[e].1, len)),
                None => {
                    shared.push((i, at, len));
                    at += p.m * len;
                }
            }
            same_as.push(earlier);
            preps.push(prep);
        } else {
            ys[i] = matmul(p.w, p.x, p.m);
        }
    }
    let mut xp = vec![0f32; at];
    // Each product's rows prepared (in parallel past decode sizes); one that has no prepared
    // form (a value that is not finite) runs through `matmul` instead.
    let prepared: Vec<bool> = {
        let mut parts = Vec::with_capacity(shared.len());
        let mut rest = xp.as_mut_slice();
        let owners = shared.iter().zip(&preps).zip(&same_as);
        for ((&(i, _, len), &prep), _) in owners.filter(|(_, e)| e.is_none()) {
            let (part, tail) = rest.split_at_mut(products[i].m * len);
            parts.push((i, len, prep, part));
            rest = tail;
        }
        let prepare = |(i, len, prep, part): (usize, usize, Preparation, &mut [f32])| {
            let p = &products[i];
            p.x.chunks_exact(p.w.cols())
                .zip(part.chunks_exact_mut(len))
                .all(|(x, out)| (prep.write)(x, out))
        };
        match at < PAR_MIN_PREPARE || pool::threads() == 1 {
            true => parts.into_iter().map(prepare).collect(),
            false => pool::map_owned(parts, prepare),
        }
    };
    let mut owned = prepared.into_iter();
    let mut prepared: Vec<bool> = Vec::with_capacity(shared.len());
    for e in &same_as {
        let ok = match *e {
            Some(e) => prepared[e],
            None => owned.next().unwrap_or(false),
        };
        prepared.push(ok);
    }
    let mut kept = Vec::with_capacity(shared.len());
    for (s, ok) in shared.into_iter().zip(prepared) {
        match ok {
            true => kept.push(s),
            false => ys[s.0] = matmul(products[s.0].w, products[s.0].x, products[s.0].m),
        }
    }
    let shared = kept;
    if shared.is_empty() {
        return ys;
    }
    let inputs: Vec<Vec<&[f32]>> = shared
        .iter()
        .map(|&(i, at, len)| xp[at..at + products[i].m * len].chunks_exact(len).collect())
        .collect();
    let tasks = tasks(products, &shared);
    let block = |&(s, ref rows): &(usize, Range<usize>)| {
        let w = products[shared[s].0].w;
        prepared_block(w, &inputs[s], rows.clone())
    };
    let work: usize = shared
        .iter()
        .map(|&(i, ..)| products[i].m * products[i].w.rows() * products[i].w.cols())
        .sum();
    let outs: Vec<Vec<f32>> = match work < PAR_MIN_WORK || pool::threads() == 1 {
        true => tasks.iter().map(block).collect(),
        false => pool::map(tasks.len(), |k| block(&tasks[k])),
    };
    for ((s, rows), out) in tasks.into_iter().zip(outs) {
        let i = shared[s].0;
        scatter(&out, rows, 0, products[i].m, &mut ys[i]);
    }
    ys
}

/// Whether two inputs hold the same values, bit for bit (so that one prepared copy serves
/// both exactly).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    std::ptr::eq(a, b)
        || (a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()))
}

/// Whether [`matmul`] runs this product on bf16 × bf16 products rather than on
/// prepared inputs.
fn bf16_products(p: &Product<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bf16_pairs::applies(p.w, p.x, p.m)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The shared pass's tasks: (index into `shared`, weight rows), every product's rows cut
/// into blocks of one size, whole multiples of [`ROWS_PER_BLOCK`].
fn tasks(products: &[Product<'_>], shared: &[(usize, usize, usize)]) -> Vec<(usize, Range<usize>)> {
    let total: usize = shared.iter().map(|&(i, ..)| products[i].w.rows()).sum();
    let want = pool::threads() * TASKS_PER_THREAD;
    let per = total
        .div_ceil(want.max(1))
        .max(MIN_TASK_ROWS)
        .next_multiple_of(ROWS_PER_BLOCK);
    shared
        .iter()
        .enumerate()
        .flat_map(|(s, &(i, ..))| {
            let rows = products[i].w.rows();
            (0..rows.div_ceil(per)).map(move |b| (s, b * per..((b + 1) * per).min(rows)))
        })
        .collect()
}
