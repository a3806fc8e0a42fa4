//! The memory bank's store suite: every test runs on SQLite and on PostgreSQL (a real
//! server; skipped with a reason when ATHENA_TEST_PG_URL is unset, failed under CI).

mod memory_support;

use athena::memory::{
    Decider, EmbeddingIdentity, Event, EventKind, MemoryBank, MemoryError, Metadata, Scope,
    SearchOptions,
};
use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};
use memory_support::{embed, fresh, identity, Backend, Location, DIM};
use serde_json::json;

fn add(bank: &mut MemoryBank, facts: &[&str], scope: &Scope) -> Vec<Event> {
    add_meta(bank, facts, scope, &Metadata::new())
}

fn add_meta(bank: &mut MemoryBank, facts: &[&str], scope: &Scope, meta: &Metadata) -> Vec<Event> {
    let vectors: Vec<Vec<f32>> = facts.iter().map(|f| embed(f)).collect();
    bank.add_embedded(&identity(), facts, &vectors, scope, meta, None)
        .expect("add")
}

fn search(bank: &mut MemoryBank, query: &str, options: &SearchOptions) -> Vec<String> {
    bank.search_embedded(&identity(), query, &embed(query), options)
        .expect("search")
        .into_iter()
        .map(|h| h.record.text)
        .collect()
}

fn assert_sound(bank: &mut MemoryBank) {
    let report = bank.check().expect("check");
    assert!(report.is_ok(), "{report:?}");
}

fn random_head() -> MemoryActionHead {
    MemoryActionHead::new(ActionHeadConfig::default(), DIM, &candle_core::Device::Cpu)
        .expect("a head")
}

fn adds_lists_gets_and_searches(loc: Location) {
    let mut bank = loc.open();
    let alice = Scope::user("alice");
    let events = add(
        &mut bank,
        &[
            "Alice lives in Paris",
            "Alice likes green tea",
            "Alice works as a nurse",
        ],
        &alice,
    );
    assert!(events
        .iter()
        .all(|e| e.event == EventKind::Add && e.id.is_some()));
    let all = bank.get_all(&alice, 0, 100).expect("list");
    let texts: Vec<&str> = all.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Alice lives in Paris",
            "Alice likes green tea",
            "Alice works as a nurse"
        ]
    );
    let page = bank.get_all(&alice, 1, 1).expect("page");
    assert_eq!(page[0].text, "Alice likes green tea");
    let id = events[0].id.expect("id");
    let record = bank.get(id, None).expect("get");
    assert_eq!(record.text, "Alice lives in Paris");
    assert_eq!(record.id.get_version_num(), 7);
    assert_eq!(record.embedding, embed("Alice lives in Paris"));
    let hits = search(
        &mut bank,
        "where does she live? Paris",
        &SearchOptions::new(alice.clone()),
    );
    assert_eq!(hits[0], "Alice lives in Paris");
    let history = bank.history(id, None).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].event, EventKind::Add);
    assert_eq!(
        history[0].new_memory.as_deref(),
        Some("Alice lives in Paris")
    );
    assert_eq!(bank.identity().expect("identity"), Some(identity()));
    assert_sound(&mut bank);
    // A second connection sees the same bank.
    let mut again = loc.open();
    assert_eq!(again.get_all(&alice, 0, 100).expect("list").len(), 3);
}

fn a_known_fact_is_a_noop(loc: Location) {
    let mut bank = loc.open();
    let bob = Scope::user("bob");
    let first = add(&mut bank, &["Bob has a cat"], &bob);
    let again = add(&mut bank, &["Bob has a cat", "Bob has a cat"], &bob);
    assert!(again
        .iter()
        .all(|e| e.event == EventKind::Noop && e.id == first[0].id));
    assert_eq!(bank.get_all(&bob, 0, 100).expect("list").len(), 1);
    // Another scope may hold the same text.
    let carol = Scope::user("carol");
    assert_eq!(
        add(&mut bank, &["Bob has a cat"], &carol)[0].event,
        EventKind::Add
    );
    assert_sound(&mut bank);
}

fn updates_re_embed_and_keep_history(loc: Location) {
    let mut bank = loc.open();
    let s = Scope::user("dan");
    let id = add(&mut bank, &["Dan lives in Oslo"], &s)[0]
        .id
        .expect("id");
    let e = bank
        .update_embedded(
            &identity(),
            id,
            None,
            "Dan lives in Lima",
            &embed("Dan lives in Lima"),
        )
        .expect("update");
    assert_eq!(e.event, EventKind::Update);
    assert_eq!(e.previous_memory.as_deref(), Some("Dan lives in Oslo"));
    let r = bank.get(id, None).expect("get");
    assert_eq!(r.text, "Dan lives in Lima");
    assert_eq!(r.embedding, embed("Dan lives in Lima"));
    assert!(r.updated_at >= r.created_at);
    assert_eq!(
        search(&mut bank, "Lima", &SearchOptions::new(s.clone()))[0],
        "Dan lives in Lima"
    );
    let h = bank.history(id, None).expect("history");
    let events: Vec<EventKind> = h.iter().map(|r| r.event).collect();
    assert_eq!(events, [EventKind::Add, EventKind::Update]);
    assert_eq!(h[1].old_memory.as_deref(), Some("Dan lives in Oslo"));
    assert_sound(&mut bank);
}

fn deletes_leave_history_and_no_dangling_rows(loc: Location) {
    let mut bank = loc.open();
    let s = Scope::user("eve");
    let ids: Vec<_> = add(&mut bank, &["Eve plays chess", "Eve owns a bike"], &s)
        .iter()
        .map(|e| e.id.expect("id"))
        .collect();
    assert_eq!(
        bank.delete(ids[0], None).expect("delete").event,
        EventKind::Delete
    );
    assert!(matches!(
        bank.get(ids[0], None),
        Err(MemoryError::UnknownId { .. })
    ));
    assert!(matches!(
        bank.delete(ids[0], None),
        Err(MemoryError::UnknownId { .. })
    ));
    let h = bank.history(ids[0], None).expect("history");
    assert_eq!(h.last().map(|r| r.event), Some(EventKind::Delete));
    assert_sound(&mut bank);
    let unknown = uuid::Uuid::now_v7();
    assert!(matches!(
        bank.history(unknown, None),
        Err(MemoryError::UnknownId { .. })
    ));
    assert!(matches!(
        bank.update_embedded(&identity(), unknown, None, "x", &embed("x")),
        Err(MemoryError::UnknownId { .. })
    ));
}

fn delete_all_and_reset(loc: Location) {
    let mut bank = loc.open();
    let (a, b) = (Scope::user("a"), Scope::user("b"));
    add(&mut bank, &["one fact", "two facts"], &a);
    add(&mut bank, &["three facts"], &b);
    assert_eq!(bank.delete_all(&a).expect("delete_all"), 2);
    assert!(bank.get_all(&a, 0, 10).expect("list").is_empty());
    assert_eq!(bank.get_all(&b, 0, 10).expect("list").len(), 1);
    assert_sound(&mut bank);
    bank.reset().expect("reset");
    assert!(bank.get_all(&b, 0, 10).expect("list").is_empty());
    assert_eq!(bank.identity().expect("identity"), None);
    assert_sound(&mut bank);
}

fn scopes_filter_by_the_ids_given(loc: Location) {
    let mut bank = loc.open();
    let alice = Scope::user("alice");
    let alice_bot = Scope {
        agent_id: Some("bot".into()),
        ..alice.clone()
    };
    let bot = Scope {
        agent_id: Some("bot".into()),
        ..Scope::default()
    };
    add(&mut bank, &["plain alice fact"], &alice);
    let id = add(&mut bank, &["alice with the bot"], &alice_bot)[0]
        .id
        .expect("id");
    assert_eq!(bank.get_all(&alice, 0, 10).expect("list").len(), 2);
    assert_eq!(bank.get_all(&alice_bot, 0, 10).expect("list").len(), 1);
    assert_eq!(bank.get_all(&bot, 0, 10).expect("list").len(), 1);
    assert!(bank.get(id, Some(&Scope::user("mallory"))).is_err());
    assert!(bank.delete(id, Some(&Scope::user("mallory"))).is_err());
    assert!(bank.get(id, Some(&bot)).is_ok());
}

fn search_filters_and_threshold(loc: Location) {
    let mut bank = loc.open();
    let s = Scope::user("fay");
    let mut work = Metadata::new();
    work.insert("topic".into(), json!("work"));
    add_meta(&mut bank, &["Fay codes in Rust at work"], &s, &work);
    add(&mut bank, &["Fay codes in Rust at home"], &s);
    let mut options = SearchOptions::new(s.clone());
    options.filters = work.clone();
    assert_eq!(
        search(&mut bank, "Rust", &options),
        ["Fay codes in Rust at work"]
    );
    let mut options = SearchOptions::new(s.clone());
    options.threshold = Some(0.999_999);
    assert!(search(&mut bank, "nothing alike", &options).is_empty());
    options.threshold = None;
    options.top_k = 1;
    assert_eq!(search(&mut bank, "home", &options).len(), 1);
    options.top_k = 0;
    assert!(matches!(
        bank.search_embedded(&identity(), "q", &embed("q"), &options),
        Err(MemoryError::Invalid { field: "top_k", .. })
    ));
    // Keyword retrieval finds a word that the vectors do not single out.
    let hits = search(&mut bank, "home", &SearchOptions::new(s));
    assert_eq!(hits[0], "Fay codes in Rust at home");
}

fn refuses_another_model_and_bad_input_writing_nothing(loc: Location) {
    let mut bank = loc.open();
    let s = Scope::user("gus");
    add(&mut bank, &["Gus sails"], &s);
    let other = EmbeddingIdentity {
        model: "another".into(),
        ..identity()
    };
    let err = bank
        .add_embedded(&other, &["x"], &[embed("x")], &s, &Metadata::new(), None)
        .expect_err("another model");
    assert!(matches!(err, MemoryError::OtherModel { .. }), "{err}");
    assert!(err.to_string().contains("word-hash") && err.to_string().contains("another"));
    let wide = EmbeddingIdentity {
        hidden_size: DIM + 1,
        ..identity()
    };
    let err = bank
        .add_embedded(
            &wide,
            &["x"],
            &[vec![0.5; DIM + 1]],
            &s,
            &Metadata::new(),
            None,
        )
        .expect_err("another size");
    assert!(matches!(err, MemoryError::OtherModel { .. }), "{err}");
    let big = "x".repeat(1 << 20);
    for (facts, scope) in [
        (vec![""], s.clone()),
        (vec!["  \n"], s.clone()),
        (vec![big.as_str()], s.clone()),
        (vec!["fine", ""], s.clone()),
        (vec!["fine"], Scope::default()),
        (vec!["fine"], Scope::user("")),
        (vec![], s.clone()),
    ] {
        let vectors: Vec<Vec<f32>> = facts.iter().map(|f| embed(f)).collect();
        let err = bank
            .add_embedded(
                &identity(),
                &facts,
                &vectors,
                &scope,
                &Metadata::new(),
                None,
            )
            .expect_err("bad input");
        assert!(
            matches!(
                err,
                MemoryError::BadText { .. } | MemoryError::BadScope { .. }
            ),
            "{err}"
        );
    }
    assert_eq!(bank.get_all(&s, 0, 100).expect("list").len(), 1);
    assert_sound(&mut bank);
}

fn the_head_decides_within_one_transaction(loc: Location) {
    let mut bank = loc.open();
    let head = random_head();
    let decider = Decider {
        head: &head,
        head_hash: Some("abc"),
    };
    let s = Scope::user("hal");
    let facts: Vec<String> = (0..40)
        .map(|i| format!("Hal fact number {i} about {}", i % 7))
        .collect();
    let mut seen = 0;
    for f in &facts {
        let events = bank
            .add_embedded(
                &identity(),
                &[f],
                &[embed(f)],
                &s,
                &Metadata::new(),
                Some(decider),
            )
            .expect("add");
        seen += events.len();
        for e in events {
            if let (Some(id), EventKind::Add | EventKind::Update) = (e.id, e.event) {
                let h = bank.history(id, None).expect("history");
                let last = h.last().expect("a row");
                assert_eq!(last.head_hash.as_deref(), Some("abc"));
                assert!(last.probabilities.as_ref().is_some_and(|p| p.len() == 4));
                assert_eq!(last.fact.as_deref(), Some(f.as_str()));
            }
        }
        assert_sound(&mut bank);
    }
    assert_eq!(seen, facts.len());
}

fn concurrent_adds_serialize(loc: Location) {
    let facts: Vec<String> = (0..15).map(|i| format!("shared fact {i}")).collect();
    let url = loc.url.clone();
    std::thread::scope(|threads| {
        for t in 0..4 {
            let (url, facts) = (url.clone(), facts.clone());
            threads.spawn(move || {
                let mut bank = MemoryBank::open(&url, Default::default()).expect("open");
                let head = random_head();
                let s = Scope::user("shared");
                for f in &facts {
                    let decider = (t % 2 == 1).then_some(Decider {
                        head: &head,
                        head_hash: None,
                    });
                    bank.add_embedded(
                        &identity(),
                        &[f],
                        &[embed(f)],
                        &s,
                        &Metadata::new(),
                        decider,
                    )
                    .expect("add");
                }
            });
        }
    });
    let mut bank = loc.open();
    let all = bank.get_all(&Scope::user("shared"), 0, 1000).expect("list");
    let mut texts: Vec<&str> = all.iter().map(|r| r.text.as_str()).collect();
    let n = texts.len();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), n, "a fact was added twice");
    assert_sound(&mut bank);
}

/// Search texts, best first, with every memory of the scope returned.
fn search_all(bank: &mut MemoryBank, query: &str, scope: &Scope) -> Vec<String> {
    let mut options = SearchOptions::new(scope.clone());
    options.top_k = athena::memory::MAX_TOP_K;
    let mut texts = search(bank, query, &options);
    texts.sort();
    texts
}

fn cached_search_sees_every_writer(loc: Location) {
    // Two banks over one store, as two processes would have: each caches the codes of the
    // scopes it searched, and must see the other's writes.
    let mut a = loc.open();
    let mut b = loc.open();
    let alice = Scope::user("alice");
    let facts: Vec<String> = (0..300)
        .map(|i| format!("Alice noted item {i} of list {}", i % 17))
        .collect();
    let refs: Vec<&str> = facts.iter().map(String::as_str).collect();
    add(&mut a, &refs, &alice);
    let top = |bank: &mut MemoryBank, q: &str| {
        search(bank, q, &SearchOptions::new(alice.clone()))
            .first()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        top(&mut a, "Alice noted item 7 of list 7"),
        "Alice noted item 7 of list 7"
    );
    assert_eq!(
        top(&mut b, "Alice noted item 9 of list 9"),
        "Alice noted item 9 of list 9"
    );
    // b's add reaches a's cached codes.
    let kiwi = "Alice adopted a parrot named Kiwi";
    let id = add(&mut b, &[kiwi], &alice)[0].id.expect("an id");
    assert_eq!(top(&mut a, "parrot named Kiwi"), kiwi);
    // a's own update and b's delete.
    let mango = "Alice adopted a parrot named Mango";
    a.update_embedded(&identity(), id, Some(&alice), mango, &embed(mango))
        .expect("update");
    assert_eq!(top(&mut a, "parrot named Mango"), mango);
    assert_eq!(top(&mut b, "parrot named Mango"), mango);
    b.delete(id, Some(&alice)).expect("delete");
    assert!(!search_all(&mut a, "parrot named Mango", &alice).contains(&mango.to_string()));
    assert_eq!(search_all(&mut a, "list", &alice).len(), 300);
    // A scope searched by neither bank yet, then a reset by one of them.
    let bob = Scope::user("bob");
    add(&mut a, &["Bob plays the cello"], &bob);
    assert_eq!(search_all(&mut b, "cello", &bob), ["Bob plays the cello"]);
    b.reset().expect("reset");
    assert!(search_all(&mut a, "list", &alice).is_empty());
    assert!(search_all(&mut a, "cello", &bob).is_empty());
    assert_sound(&mut a);
}

fn cached_search_holds_what_exact_search_holds(loc: Location) {
    // A bank with codes cached, and one without any cache budget (exact search, reading the
    // store every time), return the same memories after every kind of write.
    let mut cached = loc.open();
    let mut exact = MemoryBank::open(
        &loc.url,
        athena::memory::BankConfig {
            index_bytes: 0,
            ..Default::default()
        },
    )
    .expect("open");
    let agent = Scope {
        agent_id: Some("a1".into()),
        ..Scope::default()
    };
    let scopes = [Scope::user("u1"), Scope::user("u2"), agent];
    let mut ids = Vec::new();
    for step in 0..120usize {
        let scope = &scopes[step % scopes.len()];
        let text = format!("fact {step} about topic {}", step % 7);
        match step % 5 {
            0..=2 => ids.push((
                add(&mut cached, &[&text], scope)[0].id.expect("id"),
                scope.clone(),
            )),
            3 if !ids.is_empty() => {
                let (id, s) = ids[step % ids.len()].clone();
                let new = format!("changed {step} topic {}", step % 3);
                cached
                    .update_embedded(&identity(), id, Some(&s), &new, &embed(&new))
                    .expect("update");
            }
            _ if !ids.is_empty() => {
                let (id, s) = ids.swap_remove(step % ids.len());
                cached.delete(id, Some(&s)).expect("delete");
            }
            _ => {}
        }
        for s in &scopes {
            for q in ["topic 3", "changed topic 1", "fact about"] {
                assert_eq!(
                    search_all(&mut cached, q, s),
                    search_all(&mut exact, q, s),
                    "step {step}, scope {s}, query {q}"
                );
            }
        }
    }
}

fn scoped_reads_and_edits_stay_in_their_scope(loc: Location) {
    let mut bank = loc.open();
    let kim = Scope::user("kim");
    let lee = Scope::user("lee");
    let ids: Vec<_> = add(&mut bank, &["Kim sails", "Kim paints", "Kim cooks"], &kim)
        .iter()
        .map(|e| e.id.expect("id"))
        .collect();
    add(&mut bank, &["Lee sails"], &lee);
    let (page, total) = bank.get_page(&kim, 1, 1).expect("page");
    assert_eq!((page[0].text.as_str(), total), ("Kim paints", 3));

    // Text and metadata change together; another scope changes nothing.
    let meta: Metadata = json!({"mood": "calm"}).as_object().expect("object").clone();
    let text = "Kim sails on weekends";
    let vector = embed(text);
    let edit = athena::memory::Edit {
        text: Some((&identity(), text, &vector)),
        metadata: Some(&meta),
    };
    assert!(matches!(
        bank.edit(ids[0], Some(&lee), &edit),
        Err(MemoryError::UnknownId { .. })
    ));
    let (event, after) = bank.edit(ids[0], Some(&kim), &edit).expect("edit");
    assert_eq!(event.event, EventKind::Update);
    assert_eq!((after.text.as_str(), &after.metadata), (text, &meta));
    // Metadata alone: merged, and no history row.
    let more: Metadata = json!({"city": "Oslo"}).as_object().expect("object").clone();
    let only_meta = athena::memory::Edit {
        text: None,
        metadata: Some(&more),
    };
    let (event, after) = bank.edit(ids[0], None, &only_meta).expect("edit");
    assert_eq!(event.event, EventKind::Update);
    assert_eq!(after.metadata.len(), 2);
    assert_eq!(
        bank.edit(ids[0], None, &only_meta).expect("edit").0.event,
        EventKind::Noop
    );
    assert_eq!(bank.history(ids[0], None).expect("history").len(), 2);

    // History follows the memory's scope, after its deletion too.
    bank.delete(ids[1], Some(&kim)).expect("delete");
    for id in [ids[0], ids[1]] {
        assert!(bank.history(id, Some(&kim)).is_ok());
        assert!(matches!(
            bank.history(id, Some(&lee)),
            Err(MemoryError::UnknownId { .. })
        ));
    }
    bank.delete_all(&kim).expect("delete all");
    assert_eq!(bank.history(ids[2], Some(&kim)).expect("history").len(), 2);
    assert!(bank.history(ids[2], Some(&lee)).is_err());
    bank.reset().expect("reset");
    assert!(bank.history(ids[1], None).is_err());
    assert_sound(&mut bank);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() {
                super::$name(super::fresh(super::Backend::Sqlite).expect("sqlite"));
            })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(loc) = super::fresh(super::Backend::Postgres) {
                    super::$name(loc);
                }
            })*
        }
    };
}

suite!(
    adds_lists_gets_and_searches,
    a_known_fact_is_a_noop,
    updates_re_embed_and_keep_history,
    deletes_leave_history_and_no_dangling_rows,
    delete_all_and_reset,
    scopes_filter_by_the_ids_given,
    search_filters_and_threshold,
    refuses_another_model_and_bad_input_writing_nothing,
    the_head_decides_within_one_transaction,
    concurrent_adds_serialize,
    cached_search_sees_every_writer,
    cached_search_holds_what_exact_search_holds,
    scoped_reads_and_edits_stay_in_their_scope,
);
