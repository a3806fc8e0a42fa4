//! What the memory bank's tests share: banks on each backend (a fresh SQLite file, a fresh
//! PostgreSQL database on the server in ATHENA_TEST_PG_URL) and word-hash embeddings.
#![allow(dead_code)]

use athena::memory::{BankConfig, EmbeddingIdentity, MemoryBank};

/// The identity of [`embed`]'s vectors.
pub fn identity() -> EmbeddingIdentity {
    EmbeddingIdentity {
        model: "word-hash".into(),
        hidden_size: DIM,
        pooling: "mean".into(),
    }
}

/// Width of [`embed`]'s vectors.
pub const DIM: usize = 32;

/// A bag-of-words vector: texts that share words are similar.
pub fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.01f32; DIM];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = word.to_lowercase().bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        v[h as usize % DIM] += 1.0;
    }
    v
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a fresh bank lives; the temporary folder (SQLite) lives as long as this.
pub struct Location {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Location {
    pub fn open(&self) -> MemoryBank {
        MemoryBank::open(&self.url, BankConfig::default()).expect("open the bank")
    }
}

/// The PostgreSQL server's URL, or `None` (with the reason printed) when there is none;
/// under CI a missing server fails the test instead.
pub fn pg_url() -> Option<String> {
    match std::env::var("ATHENA_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but ATHENA_TEST_PG_URL is not: start a server with \
                     `eval \"$(scripts/pg-test-server.sh start)\"`"
                );
            }
            eprintln!(
                "skipped: ATHENA_TEST_PG_URL is unset (start a server with \
                 `eval \"$(scripts/pg-test-server.sh start)\"`)"
            );
            None
        }
    }
}

/// A fresh, empty bank location on `backend`; `None` when PostgreSQL is not available.
pub fn fresh(backend: Backend) -> Option<Location> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = dir.path().join("memory.db").display().to_string();
            Some(Location {
                url,
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let server = pg_url()?;
            let name = format!("athena_t_{}", uuid::Uuid::now_v7().simple());
            let mut client =
                postgres::Client::connect(&server, postgres::NoTls).expect("connect to the server");
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create a database");
            let (base, _) = server.rsplit_once('/').expect("a URL with a database");
            Some(Location {
                url: format!("{base}/{name}"),
                _dir: None,
            })
        }
    }
}
