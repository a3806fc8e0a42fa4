//! Search speed and recall of the memory bank at scale, on embeddings shaped as a language
//! model's are (a large shared direction, topics, and what is particular to each memory).
//!
//! ```sh
//! cargo run --release -p athena --example memory_search -- MEMORIES [QUERIES] [DIR]
//! ```
//!
//! Fills a SQLite bank in DIR (default: a temporary folder under /dev/shm, so that building
//! it is not bound by fsync) with MEMORIES memories of width 2048 in one scope, then runs
//! QUERIES searches (default 200) on a bank with its compact codes cached and on one without
//! a cache (exact search), and prints one JSON line: latency percentiles of both, recall@10
//! of the cached bank against exact search (hybrid ranking, and vectors alone), the time of
//! the first search (building the codes), and bytes per memory on disk and in the cache.

use std::time::Instant;

use athena::memory::{BankConfig, EmbeddingIdentity, MemoryBank, Metadata, Scope, SearchOptions};

const WIDTH: usize = 2048;
const NAMES: [&str; 12] = [
    "Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jia", "Kofi",
    "Lena",
];
const VERBS: [&str; 8] = [
    "likes", "visited", "owns", "studies", "cooks", "plays", "reads", "collects",
];
const THINGS: [&str; 16] = [
    "tea",
    "Paris",
    "a bicycle",
    "chemistry",
    "pasta",
    "the cello",
    "poetry",
    "stamps",
    "chess",
    "Lisbon",
    "a kayak",
    "history",
    "curry",
    "jazz",
    "novels",
    "maps",
];

/// xorshift64: deterministic values in [-0.5, 0.5).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().ok_or("give MEMORIES")?.parse()?;
    let queries: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let dir = match args.get(2) {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?,
    };
    let db = dir.path().join("bank.db");
    let db = db.to_str().ok_or("a path that is not UTF-8")?;

    let identity = EmbeddingIdentity {
        model: "synthetic".into(),
        hidden_size: WIDTH,
        pooling: "mean".into(),
    };
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let common: Vec<f32> = (0..WIDTH).map(|_| noise.next() * 4.0).collect();
    let topics: Vec<Vec<f32>> = (0..n / 20 + 1)
        .map(|_| (0..WIDTH).map(|_| noise.next()).collect())
        .collect();
    let embedding = |i: usize, noise: &mut Noise| -> Vec<f32> {
        let topic = &topics[(i * 7919) % topics.len()];
        (0..WIDTH)
            .map(|j| common[j] + topic[j] + 0.7 * noise.next())
            .collect()
    };
    let text = |i: usize| {
        format!(
            "{} {} {} (note {i})",
            NAMES[i % NAMES.len()],
            VERBS[(i / 12) % VERBS.len()],
            THINGS[(i / 96) % THINGS.len()]
        )
    };

    let scope = Scope::user("bench");
    let mut stored = Vec::with_capacity(n);
    {
        let mut bank = MemoryBank::open(db, BankConfig::default())?;
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let texts: Vec<String> = chunk.iter().map(|&i| text(i)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors: Vec<Vec<f32>> = chunk.iter().map(|&i| embedding(i, &mut noise)).collect();
            bank.add_embedded(&identity, &refs, &vectors, &scope, &Metadata::new(), None)?;
            stored.extend(vectors);
        }
        eprintln!(
            "filled {n} memories in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let file_bytes: u64 = ["bank.db", "bank.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();

    // Queries: a stored memory's embedding moved a little (a paraphrase), and two of its words.
    let mut picks = Noise(42);
    let work: Vec<(String, Vec<f32>)> = (0..queries)
        .map(|_| {
            let i = ((picks.next() + 0.5) * n as f32) as usize % n;
            let v: Vec<f32> = stored[i].iter().map(|x| x + 0.2 * picks.next()).collect();
            let words: Vec<String> = text(i).split(' ').take(2).map(str::to_string).collect();
            (words.join(" "), v)
        })
        .collect();
    drop(stored);

    type Run = (Vec<Vec<String>>, Vec<f64>);
    let run = |bank: &mut MemoryBank,
               text_weight: f32,
               count: usize|
     -> Result<Run, Box<dyn std::error::Error>> {
        bank.config_mut().retrieval.text_weight = text_weight;
        let mut results = Vec::new();
        let mut latencies = Vec::new();
        for (q, v) in &work[..count] {
            let started = Instant::now();
            let hits = bank.search_embedded(&identity, q, v, &SearchOptions::new(scope.clone()))?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            results.push(hits.into_iter().map(|h| h.record.id.to_string()).collect());
        }
        latencies.sort_by(f64::total_cmp);
        Ok((results, latencies))
    };
    // recall@10: of the exact search's hits, the share the cached bank returned too.
    let recall = |got: &[Vec<String>], truth: &[Vec<String>]| -> f64 {
        let found: usize = got
            .iter()
            .zip(truth)
            .map(|(g, t)| t.iter().filter(|id| g.contains(id)).count())
            .sum();
        let total: usize = truth.iter().map(Vec::len).sum();
        found as f64 / total.max(1) as f64
    };

    let mut cached = MemoryBank::open(db, BankConfig::default())?;
    let started = Instant::now();
    cached.search_embedded(
        &identity,
        &work[0].0,
        &work[0].1,
        &SearchOptions::new(scope.clone()),
    )?;
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    let (hybrid, hybrid_ms) = run(&mut cached, 1.0, queries)?;
    let (vector, vector_ms) = run(&mut cached, 0.0, queries)?;
    let mut exact = MemoryBank::open(
        db,
        BankConfig {
            index_bytes: 0,
            ..BankConfig::default()
        },
    )?;
    // Exact search reads every embedding per query: at large sizes, recall is measured on
    // the first queries only.
    let checked = queries.min(if n > 20_000 { 20 } else { queries });
    let (exact_hybrid, exact_ms) = run(&mut exact, 1.0, checked)?;
    let (exact_vector, _) = run(&mut exact, 0.0, checked)?;
    println!(
        "{}",
        serde_json::json!({
            "memories": n,
            "queries": queries,
            "recall_queries": checked,
            "first_search_ms": first_ms,
            "hybrid_p50_ms": percentile(&hybrid_ms, 0.5),
            "hybrid_p99_ms": percentile(&hybrid_ms, 0.99),
            "vector_p50_ms": percentile(&vector_ms, 0.5),
            "vector_p99_ms": percentile(&vector_ms, 0.99),
            "exact_hybrid_p50_ms": percentile(&exact_ms, 0.5),
            "recall_at_10_hybrid": recall(&hybrid, &exact_hybrid),
            "recall_at_10_vector": recall(&vector, &exact_vector),
            "file_bytes_per_memory": file_bytes as f64 / n as f64,
            "cache_bytes_per_memory": cached.cache_bytes() as f64 / n as f64,
        })
    );
    Ok(())
}
