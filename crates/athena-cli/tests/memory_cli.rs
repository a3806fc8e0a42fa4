//! `athena memory` end to end on the shipped fixture model: mem0's JSON shapes, bad input
//! (non-zero exit, a message naming the thing at fault, nothing written), two processes
//! adding to one scope.

use std::path::{Path, PathBuf};
use std::process::Command;

use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};
use serde_json::Value;

mod support;
use support::{athena, model_dir};

fn model() -> String {
    model_dir("base").display().to_string()
}

fn ok_json(args: &[&str]) -> Value {
    let o = athena(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

fn fails(args: &[&str], needle: &str) {
    let o = athena(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
}

/// A head saved to disk, as `train-head` writes one (its weights are not what is tested).
fn head_dir(dir: &Path) -> PathBuf {
    let head = MemoryActionHead::new(ActionHeadConfig::default(), 64, &candle_core::Device::Cpu)
        .expect("a head");
    let path = dir.join("head");
    head.save(&path).expect("save");
    path
}

fn count(db: &str, user: &str) -> usize {
    let v = ok_json(&["memory", "list", "--db", db, "--user", user, "--json"]);
    v["results"].as_array().expect("results").len()
}

#[test]
fn the_walkthrough_prints_mem0_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("m.db").display().to_string();
    let m = model();
    let base = [
        "--db",
        db.as_str(),
        "--model",
        m.as_str(),
        "--user",
        "alice",
        "--use-mlx",
        "false",
    ];
    let add = |extra: &[&str]| {
        let mut args = vec!["memory", "add"];
        args.extend(base);
        args.extend(extra);
        ok_json(&args)
    };
    let v = add(&[
        "--no-infer",
        "--fact",
        "Alice lives in Paris",
        "--fact",
        "Alice likes tea",
        "--metadata",
        r#"{"source":"chat"}"#,
        "--json",
    ]);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        let mut keys: Vec<&str> = r
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        // The set of keys (their order depends on serde_json's features).
        keys.sort_unstable();
        assert_eq!(keys, ["event", "id", "memory", "previous_memory"]);
        assert_eq!(r["event"], "ADD");
    }
    let id = results[0]["id"].as_str().expect("id").to_string();
    let again = add(&["--no-infer", "--fact", "Alice likes tea", "--json"]);
    assert_eq!(again["results"][0]["event"], "NONE");

    let mut args = vec!["memory", "search"];
    args.extend(base);
    args.extend(["--query", "Where does Alice live? Paris", "--json"]);
    let v = ok_json(&args);
    let hit = &v["results"][0];
    let mut keys: Vec<&str> = hit
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    // The set of keys (their order depends on serde_json's features).
    keys.sort_unstable();
    assert_eq!(keys, ["id", "memory", "metadata", "score"]);
    assert_eq!(hit["memory"], "Alice lives in Paris");
    assert_eq!(hit["metadata"]["source"], "chat");

    let v = ok_json(&["memory", "list", "--db", &db, "--user", "alice", "--json"]);
    assert_eq!(v["results"].as_array().expect("results").len(), 2);
    assert_eq!(v["results"][0]["user_id"], "alice");

    let mut args = vec![
        "memory",
        "update",
        "--id",
        id.as_str(),
        "--text",
        "Alice lives in Rome",
    ];
    args.extend(base);
    ok_json(&[args.as_slice(), &["--json"]].concat());
    let v = ok_json(&["memory", "get", "--db", &db, "--id", &id, "--json"]);
    assert_eq!(v["memory"], "Alice lives in Rome");

    let v = ok_json(&["memory", "history", "--db", &db, "--id", &id, "--json"]);
    let rows = v["results"].as_array().expect("results");
    let mut keys: Vec<&str> = rows[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    // The set of keys (their order depends on serde_json's features).
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "event",
            "memory_id",
            "new_memory",
            "old_memory"
        ]
    );
    let events: Vec<&str> = rows
        .iter()
        .map(|r| r["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["ADD", "UPDATE"]);
    assert_eq!(rows[1]["old_memory"], "Alice lives in Paris");

    ok_json(&["memory", "delete", "--db", &db, "--id", &id, "--json"]);
    fails(
        &["memory", "get", "--db", &db, "--id", &id],
        "no memory with id",
    );
    let v = ok_json(&["memory", "check", "--db", &db, "--json"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["memories"], 1);
    fails(&["memory", "reset", "--db", &db], "--yes");
    ok_json(&["memory", "reset", "--db", &db, "--yes", "--json"]);
    assert_eq!(count(&db, "alice"), 0);
}

#[test]
fn inference_needs_a_trained_head_and_uses_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("m.db").display().to_string();
    let m = model();
    let base = [
        "memory",
        "add",
        "--db",
        db.as_str(),
        "--model",
        m.as_str(),
        "--user",
        "u",
        "--use-mlx",
        "false",
    ];
    fails(
        &[base.as_slice(), &["--fact", "a fact"]].concat(),
        "athena train-head",
    );
    fails(&[base.as_slice(), &["--fact", "a fact"]].concat(), "--head");
    assert!(!Path::new(&db).exists(), "a refused add wrote the bank");
    let head = head_dir(dir.path());
    let head = head.to_str().expect("utf-8");
    for fact in [
        "Bob likes tea",
        "Bob likes coffee",
        "Bob moved to Lima",
        "Bob likes tea",
    ] {
        let v = ok_json(&[base.as_slice(), &["--head", head, "--fact", fact, "--json"]].concat());
        let event = v["results"][0]["event"].as_str().expect("event");
        assert!(
            ["ADD", "UPDATE", "DELETE", "NONE"].contains(&event),
            "{event}"
        );
    }
    let v = ok_json(&["memory", "check", "--db", &db, "--json"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("m.db").display().to_string();
    let m = model();
    let add = |db: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "memory",
            "add",
            "--db",
            db,
            "--model",
            m.as_str(),
            "--use-mlx",
            "false",
            "--no-infer",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>, needle: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&refs, needle);
    };
    ok_json(
        &add(&db, &["--user", "u", "--fact", "kept", "--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    run(add(&db, &["--fact", "no scope"]), "user_id");
    run(
        add(&db, &["--user", "", "--fact", "blank user"]),
        "user_id is empty",
    );
    run(add(&db, &["--user", "u", "--fact", ""]), "fact 1: is empty");
    let big = "x".repeat(100_000);
    run(
        add(&db, &["--user", "u", "--fact", &big]),
        "more than the limit",
    );
    run(
        add(&db, &["--user", "u", "--fact", "f", "--metadata", "[1,2]"]),
        "JSON object",
    );
    run(
        add(&db, &["--user", "u", "--fact", "f", "--metadata", "{oops"]),
        "not JSON",
    );
    let other = model_dir("gqa_normtopk").display().to_string();
    run(
        vec![
            "memory",
            "add",
            "--db",
            &db,
            "--model",
            &other,
            "--use-mlx",
            "false",
            "--no-infer",
            "--user",
            "u",
            "--fact",
            "other model",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "the bank holds embeddings of model",
    );
    let unknown = "01900000-0000-7000-8000-000000000000";
    fails(
        &["memory", "get", "--db", &db, "--id", unknown],
        "no memory with id",
    );
    fails(
        &["memory", "delete", "--db", &db, "--id", unknown],
        "no memory with id",
    );
    fails(
        &["memory", "history", "--db", &db, "--id", unknown],
        "no memory with id",
    );
    fails(
        &["memory", "get", "--db", &db, "--id", "not-a-uuid"],
        "invalid id",
    );
    assert_eq!(count(&db, "u"), 1);
    // A 1 MB message in an import file is refused before anything is written.
    let file = dir.path().join("big.jsonl");
    let line = serde_json::json!({"user_id": "u", "role": "user", "content": "y".repeat(1 << 20)});
    std::fs::write(&file, format!("{line}\n")).expect("write");
    fails(
        &[
            "memory",
            "import",
            "--db",
            &db,
            "--model",
            &m,
            "--no-infer",
            file.to_str().expect("utf-8"),
        ],
        "big.jsonl:1",
    );
    assert_eq!(count(&db, "u"), 1);
    // Files that are not banks.
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x5a; 4096]).expect("write");
    let c = corrupt.to_str().expect("utf-8");
    fails(
        &["memory", "list", "--db", c, "--user", "u"],
        "not a readable memory bank",
    );
    fails(&["memory", "check", "--db", c], "corrupt.db");
    assert_eq!(std::fs::read(&corrupt).expect("read"), vec![0x5a; 4096]);
    let foreign = dir.path().join("foreign.db");
    foreign_sqlite(&foreign);
    fails(
        &[
            "memory",
            "list",
            "--db",
            foreign.to_str().expect("utf-8"),
            "--user",
            "u",
        ],
        "not an athena memory bank",
    );
    fails(
        &[
            "memory",
            "check",
            "--db",
            dir.path().join("none.db").to_str().expect("utf-8"),
        ],
        "no such memory bank",
    );
}

/// A SQLite database of something else.
fn foreign_sqlite(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .expect("schema");
}

#[test]
fn two_processes_adding_the_same_facts_serialize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("m.db").display().to_string();
    let m = model();
    let facts: Vec<String> = (0..12).map(|i| format!("shared fact number {i}")).collect();
    let mut children = Vec::new();
    for _ in 0..2 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_athena"));
        cmd.args([
            "memory",
            "add",
            "--db",
            &db,
            "--model",
            &m,
            "--use-mlx",
            "false",
            "--no-infer",
            "--user",
            "shared",
            "--json",
        ]);
        for f in &facts {
            cmd.args(["--fact", f]);
        }
        children.push(
            cmd.stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn"),
        );
    }
    let mut adds = 0;
    for child in children {
        let o = child.wait_with_output().expect("wait");
        assert!(o.status.success());
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        adds += v["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter(|r| r["event"] == "ADD")
            .count();
    }
    assert_eq!(adds, facts.len(), "each fact is added exactly once");
    assert_eq!(count(&db, "shared"), facts.len());
    let v = ok_json(&["memory", "check", "--db", &db, "--json"]);
    assert_eq!(v["ok"], true);
}
