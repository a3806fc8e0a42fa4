//! Hybrid retrieval: cosine similarity over the embeddings (read from a scope's compact codes,
//! `codes.rs`, or exactly from the store) fused with the store's full-text ranking (SQLite
//! FTS5's BM25, PostgreSQL's `ts_rank`) by reciprocal-rank fusion,
//! `score = Σ weight_i / (k + rank_i)` over the rankings a memory appears in.

use std::collections::HashMap;

use uuid::Uuid;

/// How the two rankings are fused.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalConfig {
    /// Weight of the cosine-similarity ranking. Default: `1.0`.
    pub vector_weight: f32,
    /// Weight of the full-text ranking. Default: `1.0`; `0.0` is vector search alone.
    pub text_weight: f32,
    /// The `k` of reciprocal-rank fusion: larger values flatten the difference between the
    /// first ranks. Default: `60.0`, the common choice.
    pub rrf_k: f32,
    /// How many memories each ranking contributes before fusion (at least `top_k`).
    /// Default: `100`.
    pub depth: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            vector_weight: 1.0,
            text_weight: 1.0,
            rrf_k: 60.0,
            depth: 100,
        }
    }
}

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of `v` with an already normalised `unit` (0 for a zero `v`).
pub fn cosine(unit: &[f32], v: &[f32]) -> f32 {
    let (mut dot, mut norm) = (0.0f32, 0.0f32);
    for (x, y) in unit.iter().zip(v) {
        dot += x * y;
        norm += y * y;
    }
    if norm > 0.0 {
        dot / norm.sqrt()
    } else {
        0.0
    }
}

/// Fuses a vector ranking and a text ranking (both best first) by weighted reciprocal-rank
/// fusion; best first, ties by id.
pub fn fuse(vector: &[(Uuid, f32)], text: &[Uuid], config: &RetrievalConfig) -> Vec<(Uuid, f32)> {
    let mut scores: HashMap<Uuid, f32> = HashMap::new();
    for (rank, (id, _)) in vector.iter().enumerate() {
        *scores.entry(*id).or_default() +=
            config.vector_weight / (config.rrf_k + rank as f32 + 1.0);
    }
    for (rank, id) in text.iter().enumerate() {
        *scores.entry(*id).or_default() += config.text_weight / (config.rrf_k + rank as f32 + 1.0);
    }
    let mut fused: Vec<(Uuid, f32)> = scores.into_iter().collect();
    keep_best(&mut fused, usize::MAX);
    fused
}

/// Keeps the `depth` highest-scoring of `scored`, best first, ties by id (so the order is
/// stable).
pub fn keep_best(scored: &mut Vec<(Uuid, f32)>, depth: usize) {
    let cmp = |a: &(Uuid, f32), b: &(Uuid, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if depth > 0 && scored.len() > depth {
        scored.select_nth_unstable_by(depth - 1, cmp);
    }
    scored.truncate(depth);
    scored.sort_by(cmp);
}

/// Most terms a full-text query keeps.
pub const MAX_QUERY_TERMS: usize = 64;

/// English function words, left out of full-text queries: nearly every memory holds them, so
/// they add little to a ranking and make the store score every memory of the scope.
pub const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has",
    "have", "he", "her", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me",
    "my", "no", "not", "of", "on", "or", "our", "she", "so", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "to", "us", "was", "we", "were", "what",
    "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// The words of a query for full-text search: runs of letters and digits, lower-cased,
/// deduplicated, without [`STOP_WORDS`], at most [`MAX_QUERY_TERMS`]. No query syntax of
/// either store survives, so any text is a safe query.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let w = word.to_lowercase();
        if STOP_WORDS.contains(&w.as_str()) {
            continue;
        }
        if !terms.contains(&w) {
            terms.push(w);
            if terms.len() == MAX_QUERY_TERMS {
                break;
            }
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn fusion_rewards_agreement_and_follows_the_weights() {
        let vector = [(id(1), 0.9), (id(2), 0.8), (id(3), 0.1)];
        let text = [id(2)];
        let fused = fuse(&vector, &text, &RetrievalConfig::default());
        assert_eq!(fused[0].0, id(2)); // found by both beats first in one
        let vector_only = RetrievalConfig {
            text_weight: 0.0,
            ..RetrievalConfig::default()
        };
        let fused = fuse(&vector, &text, &vector_only);
        let order: Vec<Uuid> = fused.iter().map(|f| f.0).collect();
        assert_eq!(order, [id(1), id(2), id(3)]);
    }

    #[test]
    fn query_terms_drop_syntax() {
        assert_eq!(
            query_terms(r#"Where "does" alice* live? OR NEAR(alice) -- 'x'"#),
            ["alice", "live", "near", "x"]
        );
        assert!(query_terms("!!! ***").is_empty());
    }
}
