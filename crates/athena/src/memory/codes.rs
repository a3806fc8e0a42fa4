//! The compact form vector search reads: for each memory of a scope, one bit per dimension
//! (the sign of the embedding minus the scope's mean) and the same difference in int16 with a
//! scale. A search ranks every memory by the Hamming distance of the bits, re-scores the best
//! few hundred on the int16 codes, and returns approximate cosine similarities; the bank
//! recomputes the exact similarity of the hits it returns from the stored f32 embeddings.
//!
//! Subtracting the mean matters: the hidden states of a language model share a large common
//! direction, and signs taken around zero would be nearly the same for every memory. The
//! ranking by `q·(v − mean)` is the ranking by `q·v`, since `q·mean` is the same for every
//! memory. The Hamming distance is SimSIMD's kernel.

use std::collections::HashMap;

use simsimd::BinarySimilarity;
use uuid::Uuid;

use super::retrieval::{keep_best, normalize};

/// How many memories a search re-scores on the int16 codes, for a ranking of `depth`.
pub fn rerank_count(depth: usize) -> usize {
    depth.saturating_mul(8).max(1024)
}

/// How many memories the mean is taken over when codes are built.
const MEAN_SAMPLE: usize = 1024;

/// The compact codes of the memories of one scope.
#[derive(Debug, Clone)]
pub struct ScopeCodes {
    dim: usize,
    /// The mean the codes are taken around, and how many memories it was taken over.
    mean: Vec<f32>,
    mean_over: usize,
    ids: Vec<Uuid>,
    position: HashMap<Uuid, usize>,
    /// `ceil(dim / 8)` bytes per memory.
    bits: Vec<u8>,
    /// `dim` int16 values per memory, and one scale each.
    residuals: Vec<i16>,
    scales: Vec<f32>,
}

impl ScopeCodes {
    /// Codes of `rows` (each of width `dim`), with the mean taken over the first
    /// [`MEAN_SAMPLE`] of them.
    #[cfg(test)]
    pub fn build(dim: usize, rows: impl IntoIterator<Item = (Uuid, Vec<f32>)>) -> Self {
        let mut builder = CodesBuilder::new(dim);
        for (id, v) in rows {
            builder.add(id, v);
        }
        builder.finish()
    }

    /// Bytes one memory takes in the codes (bits, int16 values, scale, id and its slot).
    pub fn bytes_per_memory(dim: usize) -> usize {
        dim.div_ceil(8)
            + dim * size_of::<i16>()
            + size_of::<f32>()
            + 2 * size_of::<Uuid>()
            + 2 * size_of::<usize>()
    }

    /// Bytes the codes take.
    pub fn bytes(&self) -> usize {
        self.ids.len() * Self::bytes_per_memory(self.dim) + self.dim * size_of::<f32>()
    }

    /// How many memories the codes hold.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the mean was taken over too few of the memories now held (the scope has more
    /// than doubled since, past the size where the bits are read): rebuilding gives a better
    /// mean and so better bits.
    pub fn wants_rebuild(&self, depth: usize) -> bool {
        let n = self.ids.len();
        n > rerank_count(depth) && n > 2 * self.mean_over && self.mean_over < MEAN_SAMPLE
    }

    /// Adds a memory, or replaces the codes of one already held; false (and nothing changed)
    /// for an embedding of another width.
    pub fn upsert(&mut self, id: Uuid, embedding: &[f32]) -> bool {
        if embedding.len() != self.dim {
            return false;
        }
        let mut unit = embedding.to_vec();
        normalize(&mut unit);
        let residual: Vec<f32> = unit.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        let bytes = self.dim.div_ceil(8);
        let (bits, values, scale) = encode(&residual, bytes);
        match self.position.get(&id) {
            Some(&i) => {
                self.bits[i * bytes..(i + 1) * bytes].copy_from_slice(&bits);
                self.residuals[i * self.dim..(i + 1) * self.dim].copy_from_slice(&values);
                self.scales[i] = scale;
            }
            None => {
                self.position.insert(id, self.ids.len());
                self.ids.push(id);
                self.bits.extend_from_slice(&bits);
                self.residuals.extend_from_slice(&values);
                self.scales.push(scale);
            }
        }
        true
    }

    /// Removes a memory (nothing happens for one not held).
    pub fn remove(&mut self, id: Uuid) {
        let Some(i) = self.position.remove(&id) else {
            return;
        };
        let last = self.ids.len() - 1;
        let bytes = self.dim.div_ceil(8);
        if i != last {
            let moved = self.ids[last];
            self.ids[i] = moved;
            self.position.insert(moved, i);
            self.bits
                .copy_within(last * bytes..(last + 1) * bytes, i * bytes);
            self.residuals
                .copy_within(last * self.dim..(last + 1) * self.dim, i * self.dim);
            self.scales[i] = self.scales[last];
        }
        self.ids.pop();
        self.bits.truncate(last * bytes);
        self.residuals.truncate(last * self.dim);
        self.scales.pop();
    }

    /// The `depth` memories most similar to `query`, best first (ties by id), with their
    /// approximate cosine similarity.
    pub fn search(&self, query: &[f32], depth: usize) -> Vec<(Uuid, f32)> {
        let n = self.ids.len();
        if n == 0 || depth == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut unit = query.to_vec();
        normalize(&mut unit);
        let base: f32 = unit.iter().zip(&self.mean).map(|(q, m)| q * m).sum();
        let bytes = self.dim.div_ceil(8);
        let rerank = rerank_count(depth);
        let candidates: Vec<usize> = if n <= rerank {
            (0..n).collect()
        } else {
            let centred: Vec<f32> = unit.iter().zip(&self.mean).map(|(q, m)| q - m).collect();
            let (query_bits, _, _) = encode(&centred, bytes);
            let mut by_bits: Vec<(u32, usize)> = (0..n)
                .map(|i| {
                    let row = &self.bits[i * bytes..(i + 1) * bytes];
                    let d = u8::hamming(&query_bits, row).unwrap_or(f64::MAX);
                    (d as u32, i)
                })
                .collect();
            by_bits.select_nth_unstable(rerank - 1);
            by_bits.truncate(rerank);
            by_bits.into_iter().map(|(_, i)| i).collect()
        };
        let mut scored: Vec<(Uuid, f32)> = candidates
            .into_iter()
            .map(|i| {
                let row = &self.residuals[i * self.dim..(i + 1) * self.dim];
                (self.ids[i], base + dot_f32_i16(&unit, row) * self.scales[i])
            })
            .collect();
        keep_best(&mut scored, depth);
        scored
    }
}

/// Builds [`ScopeCodes`] from memories that arrive one at a time: the first
/// [`MEAN_SAMPLE`] are held until the mean is known.
#[derive(Debug)]
pub struct CodesBuilder {
    dim: usize,
    sample: Vec<(Uuid, Vec<f32>)>,
    codes: Option<ScopeCodes>,
}

impl CodesBuilder {
    /// A builder of codes of width `dim`.
    pub fn new(dim: usize) -> Self {
        CodesBuilder {
            dim,
            sample: Vec::new(),
            codes: None,
        }
    }

    /// Adds a memory; false (and nothing added) for an embedding of another width.
    pub fn add(&mut self, id: Uuid, embedding: Vec<f32>) -> bool {
        if embedding.len() != self.dim {
            return false;
        }
        match &mut self.codes {
            Some(codes) => codes.upsert(id, &embedding),
            None => {
                self.sample.push((id, embedding));
                if self.sample.len() == MEAN_SAMPLE {
                    self.codes = Some(self.codes_of_sample());
                }
                true
            }
        }
    }

    /// The codes of every memory added.
    pub fn finish(mut self) -> ScopeCodes {
        match self.codes.take() {
            Some(codes) => codes,
            None => self.codes_of_sample(),
        }
    }

    fn codes_of_sample(&mut self) -> ScopeCodes {
        let sample = std::mem::take(&mut self.sample);
        let mut mean = vec![0.0f32; self.dim];
        for (_, v) in &sample {
            let mut unit = v.clone();
            normalize(&mut unit);
            mean.iter_mut().zip(&unit).for_each(|(m, x)| *m += x);
        }
        if !sample.is_empty() {
            mean.iter_mut().for_each(|m| *m /= sample.len() as f32);
        }
        let mut codes = ScopeCodes {
            dim: self.dim,
            mean,
            mean_over: sample.len(),
            ids: Vec::new(),
            position: HashMap::new(),
            bits: Vec::new(),
            residuals: Vec::new(),
            scales: Vec::new(),
        };
        for (id, v) in sample {
            codes.upsert(id, &v);
        }
        codes
    }
}

/// `Σ a[j]·b[j]` over an f32 and an int16 vector of one width, in eight partial sums so that
/// the compiler can vectorise it.
fn dot_f32_i16(a: &[f32], b: &[i16]) -> f32 {
    let mut sums = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, &y)| x * f32::from(y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for k in 0..8 {
            sums[k] += x[k] * f32::from(y[k]);
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The sign bits of `v` (`bytes` bytes, low bit first), its int16 values and their scale
/// (`v ≈ values × scale`).
fn encode(v: &[f32], bytes: usize) -> (Vec<u8>, Vec<i16>, f32) {
    let mut bits = vec![0u8; bytes];
    for (j, x) in v.iter().enumerate() {
        if *x > 0.0 {
            bits[j / 8] |= 1 << (j % 8);
        }
    }
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 32767.0 } else { 1.0 };
    let inverse = 1.0 / scale;
    // Round half away from zero by a truncating conversion (one instruction, where `round`
    // is a library call on baseline x86-64); `as` saturates, and |x · inverse| ≤ 32767.
    let values = v
        .iter()
        .map(|x| {
            let y = x * inverse;
            (y + 0.5f32.copysign(y)) as i16
        })
        .collect();
    (bits, values, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A deterministic generator of values in [-0.5, 0.5).
    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        }
    }

    /// Vectors as embeddings are: a large direction they all share, one of `n / 20` topics,
    /// and what is particular to each.
    fn vectors(n: usize, dim: usize) -> Vec<Vec<f32>> {
        let mut next = uniform(0x9e37_79b9_7f4a_7c15);
        let common: Vec<f32> = (0..dim).map(|_| next() * 4.0).collect();
        let topics: Vec<Vec<f32>> = (0..n / 20 + 1)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let topic = &topics[(i * 7919) % topics.len()];
                (0..dim)
                    .map(|j| common[j] + topic[j] + 0.7 * next())
                    .collect()
            })
            .collect()
    }

    fn exact(query: &[f32], rows: &[Vec<f32>], depth: usize) -> Vec<usize> {
        let mut q = query.to_vec();
        normalize(&mut q);
        let mut scored: Vec<(f32, usize)> = rows
            .iter()
            .enumerate()
            .map(|(i, v)| (super::super::retrieval::cosine(&q, v), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(depth).map(|s| s.1).collect()
    }

    #[test]
    fn small_scopes_rank_as_exact_search_does() {
        let rows = vectors(200, 64);
        let codes = ScopeCodes::build(
            64,
            rows.iter()
                .enumerate()
                .map(|(i, v)| (id(i as u128), v.clone())),
        );
        for q in 0..20 {
            let query = &rows[q * 7];
            let found = codes.search(query, 5);
            assert_eq!(
                found[0].0,
                id((q * 7) as u128),
                "a memory is its own best match"
            );
            let truth = exact(query, &rows, 5);
            let hits = found
                .iter()
                .filter(|(i, _)| truth.contains(&(i.as_u128() as usize)))
                .count();
            assert!(hits >= 4, "query {q}: {hits} of 5");
            let mut unit = query.clone();
            normalize(&mut unit);
            assert!((found[0].1 - 1.0).abs() < 0.02, "similarity {}", found[0].1);
        }
    }

    #[test]
    fn large_scopes_read_the_bits_and_keep_recall() {
        let rows = vectors(3000, 256);
        let codes = ScopeCodes::build(
            256,
            rows.iter()
                .enumerate()
                .map(|(i, v)| (id(i as u128), v.clone())),
        );
        assert!(codes.len() > rerank_count(10));
        let mut recall = 0.0;
        for q in 0..30 {
            let query: Vec<f32> = rows[q * 97]
                .iter()
                .zip(&rows[q * 97 + 1])
                .map(|(a, b)| a + 0.3 * b)
                .collect();
            let found: Vec<usize> = codes
                .search(&query, 10)
                .iter()
                .map(|(i, _)| i.as_u128() as usize)
                .collect();
            let truth = exact(&query, &rows, 10);
            recall += truth.iter().filter(|t| found.contains(t)).count() as f64 / 10.0;
        }
        assert!(recall / 30.0 >= 0.9, "recall@10 {}", recall / 30.0);
    }

    #[test]
    fn upsert_and_remove_keep_the_slots_consistent() {
        let rows = vectors(50, 32);
        let mut codes = ScopeCodes::build(
            32,
            rows.iter()
                .enumerate()
                .map(|(i, v)| (id(i as u128), v.clone())),
        );
        codes.remove(id(3));
        codes.remove(id(49));
        codes.remove(id(1000)); // not held: nothing happens
        assert_eq!(codes.len(), 48);
        assert!(codes.search(&rows[3], 48).iter().all(|(i, _)| *i != id(3)));
        // Memory 10 takes memory 20's embedding: it now ranks first for that query (with 20).
        codes.upsert(id(10), &rows[20]);
        let top: Vec<Uuid> = codes
            .search(&rows[20], 2)
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert!(top.contains(&id(10)) && top.contains(&id(20)), "{top:?}");
        codes.upsert(id(100), &rows[3]);
        assert_eq!(codes.search(&rows[3], 1)[0].0, id(100));
        assert_eq!(codes.len(), 49);
    }
}
