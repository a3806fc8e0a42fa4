//! The memory bank's inputs, on a SQLite bank in a scratch directory: scopes, metadata and
//! metadata filters as JSON text, fact and query texts, search options, ids, pages. Every call
//! succeeds or fails with an error; afterwards the bank passes its own integrity check. Each
//! input starts from a copy of one empty bank's file.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use athena::memory::{
    parse_metadata, BankConfig, EmbeddingIdentity, MemoryBank, Scope, SearchOptions,
};
use athena_fuzz::scratch;
use libfuzzer_sys::fuzz_target;

const DIM: usize = 4;

#[derive(Debug, Arbitrary)]
struct FuzzScope {
    user_id: Option<String>,
    agent_id: Option<String>,
    run_id: Option<String>,
}

impl FuzzScope {
    fn scope(&self) -> Scope {
        Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            run_id: self.run_id.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Add {
        scope: FuzzScope,
        facts: Vec<(String, [i8; DIM])>,
        metadata: String,
    },
    Search {
        scope: FuzzScope,
        query: String,
        vector: [i8; DIM],
        top_k: u16,
        threshold: Option<f32>,
        filters: String,
    },
    Update {
        pick: u8,
        scope: Option<FuzzScope>,
        text: String,
        vector: [i8; DIM],
    },
    Delete {
        pick: u8,
        scope: Option<FuzzScope>,
    },
    GetAll {
        scope: FuzzScope,
        offset: u64,
        limit: u64,
    },
    DeleteAll {
        scope: FuzzScope,
    },
    History {
        pick: u8,
    },
}

fn vector(v: &[i8; DIM]) -> Vec<f32> {
    v.iter().map(|&x| f32::from(x) / 16.0).collect()
}

/// A new, empty bank's file: each input starts from a copy of it, which opens without
/// creating the schema again.
static EMPTY_BANK: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let path = scratch("bank-template").join("bank.db");
    let bank = MemoryBank::open(path.to_str().expect("utf-8 path"), BankConfig::default())
        .expect("a new bank opens");
    drop(bank);
    std::fs::read(&path).expect("the new bank's file")
});

fuzz_target!(|ops: Vec<Op>| {
    let dir = scratch("bank");
    let config = BankConfig {
        max_text_bytes: 256,
        ..BankConfig::default()
    };
    let location = dir.join("bank.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", location.display()));
    }
    std::fs::write(&location, &*EMPTY_BANK).expect("copy the empty bank");
    let mut bank =
        MemoryBank::open(location.to_str().expect("utf-8 path"), config).expect("the bank opens");
    let identity = EmbeddingIdentity {
        model: "fuzz".into(),
        hidden_size: DIM,
        pooling: "mean".into(),
    };
    let mut ids = Vec::new();
    for op in ops.iter().take(32) {
        match op {
            Op::Add {
                scope,
                facts,
                metadata,
            } => {
                let Ok(metadata) = parse_metadata(metadata) else {
                    continue;
                };
                let texts: Vec<&str> = facts.iter().take(8).map(|(t, _)| t.as_str()).collect();
                let vectors: Vec<Vec<f32>> = facts.iter().take(8).map(|(_, v)| vector(v)).collect();
                if let Ok(events) =
                    bank.add_embedded(&identity, &texts, &vectors, &scope.scope(), &metadata, None)
                {
                    ids.extend(events.iter().filter_map(|e| e.id));
                }
            }
            Op::Search {
                scope,
                query,
                vector: v,
                top_k,
                threshold,
                filters,
            } => {
                let Ok(filters) = parse_metadata(filters) else {
                    continue;
                };
                let options = SearchOptions {
                    scope: scope.scope(),
                    top_k: usize::from(*top_k),
                    threshold: *threshold,
                    filters,
                };
                if let Ok(hits) = bank.search_embedded(&identity, query, &vector(v), &options) {
                    assert!(hits.len() <= options.top_k);
                    assert!(hits.iter().all(|h| options.scope.matches(&h.record.scope)));
                }
            }
            Op::Update {
                pick,
                scope,
                text,
                vector: v,
            } => {
                if let Some(&id) = ids.get(usize::from(*pick) % ids.len().max(1)) {
                    let scope = scope.as_ref().map(FuzzScope::scope);
                    let _ = bank.update_embedded(&identity, id, scope.as_ref(), text, &vector(v));
                }
            }
            Op::Delete { pick, scope } => {
                if let Some(&id) = ids.get(usize::from(*pick) % ids.len().max(1)) {
                    let scope = scope.as_ref().map(FuzzScope::scope);
                    let _ = bank.delete(id, scope.as_ref());
                }
            }
            Op::GetAll {
                scope,
                offset,
                limit,
            } => {
                if let Ok(records) = bank.get_all(&scope.scope(), *offset, *limit) {
                    assert!(records.len() as u64 <= *limit);
                }
            }
            Op::DeleteAll { scope } => {
                let _ = bank.delete_all(&scope.scope());
            }
            Op::History { pick } => {
                if let Some(&id) = ids.get(usize::from(*pick) % ids.len().max(1)) {
                    let _ = bank.history(id, None);
                }
            }
        }
    }
    let report = bank.check().expect("the integrity check runs");
    assert!(report.is_ok(), "{report:?}");
});
