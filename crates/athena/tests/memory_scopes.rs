//! Scopes never leak: random memories of several users, then every search, list, get, update
//! and delete through one user's scope touches only that user's memories (SQLite and
//! PostgreSQL).

mod memory_support;

use athena::memory::{MemoryBank, Metadata, Scope, SearchOptions};
use memory_support::{embed, fresh, identity, Backend};
use proptest::prelude::*;

const USERS: [&str; 3] = ["ann", "ben", "cal"];
const WORDS: [&str; 8] = [
    "tea", "paris", "cat", "blue", "chess", "rome", "dog", "green",
];

fn fact() -> impl Strategy<Value = (usize, String)> {
    (
        0..USERS.len(),
        proptest::collection::vec(0..WORDS.len(), 1..4),
    )
        .prop_map(|(u, ws)| {
            let words: Vec<&str> = ws.iter().map(|&w| WORDS[w]).collect();
            (u, words.join(" "))
        })
}

fn check_isolation(bank: &mut MemoryBank, facts: &[(usize, String)], probe: usize) {
    bank.reset().expect("reset");
    for (u, text) in facts {
        bank.add_embedded(
            &identity(),
            &[text],
            &[embed(text)],
            &Scope::user(USERS[*u]),
            &Metadata::new(),
            None,
        )
        .expect("add");
    }
    let everyone: Vec<_> = USERS
        .iter()
        .flat_map(|u| bank.get_all(&Scope::user(*u), 0, 1000).expect("list"))
        .collect();
    for (u, user) in USERS.iter().enumerate() {
        let scope = Scope::user(*user);
        let own = bank.get_all(&scope, 0, 1000).expect("list");
        assert!(own.iter().all(|r| r.scope == scope));
        let expected: std::collections::BTreeSet<&str> = facts
            .iter()
            .filter(|(fu, _)| *fu == u)
            .map(|(_, t)| t.as_str())
            .collect();
        let got: std::collections::BTreeSet<&str> = own.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(got, expected);
        let query = WORDS[probe % WORDS.len()];
        let mut options = SearchOptions::new(scope.clone());
        options.top_k = 100;
        let hits = bank
            .search_embedded(&identity(), query, &embed(query), &options)
            .expect("search");
        assert!(hits.iter().all(|h| h.record.scope == scope));
        assert_eq!(hits.len(), own.len());
    }
    // Another user's memory is unknown through this scope, for every operation.
    let probe_user = Scope::user(USERS[probe % USERS.len()]);
    for record in everyone.iter().filter(|r| r.scope != probe_user) {
        assert!(bank.get(record.id, Some(&probe_user)).is_err());
        assert!(bank
            .update_embedded(
                &identity(),
                record.id,
                Some(&probe_user),
                "stolen",
                &embed("stolen")
            )
            .is_err());
        assert!(bank.delete(record.id, Some(&probe_user)).is_err());
        let same = bank.get(record.id, None).expect("still there");
        assert_eq!(same.text, record.text);
    }
    let before: usize = everyone.iter().filter(|r| r.scope != probe_user).count();
    bank.delete_all(&probe_user).expect("delete_all");
    let after: usize = USERS
        .iter()
        .map(|u| bank.get_all(&Scope::user(*u), 0, 1000).expect("list").len())
        .sum();
    assert_eq!(after, before);
    assert!(bank.check().expect("check").is_ok());
}

fn run(backend: Backend, cases: u32) {
    let Some(loc) = fresh(backend) else { return };
    let bank = std::cell::RefCell::new(loc.open());
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    proptest!(config, |(facts in proptest::collection::vec(fact(), 0..24), probe in 0usize..100)| {
        check_isolation(&mut bank.borrow_mut(), &facts, probe);
    });
}

#[test]
fn scopes_never_leak_sqlite() {
    run(Backend::Sqlite, 48);
}

#[test]
fn scopes_never_leak_postgres() {
    run(Backend::Postgres, 24);
}
