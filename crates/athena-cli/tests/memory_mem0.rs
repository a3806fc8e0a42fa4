//! `athena serve --memory-db` against the official mem0 client (pinned, from its venv), and
//! scopes over plain HTTP: one user never sees or changes another's memories.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{call, start_with, Answer};

const KEY: &str = "m0-secret";
const AUTH: &str = "authorization: Token m0-secret";

fn body(a: &Answer) -> Value {
    serde_json::from_str(&a.decoded_body()).unwrap_or_else(|e| panic!("{e}: {}", a.text))
}

fn memory_server(db: &str) -> support::Server {
    start_with(
        &support::fixture(),
        &["--memory-db", db],
        &[],
        &[("ATHENA_API_KEY", KEY)],
    )
}

#[test]
fn the_mem0_client_adds_searches_updates_and_deletes() {
    let Some(python) = support::mem0_python("the_mem0_client_adds_searches_updates_and_deletes")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("memory.db");
    let server = memory_server(db.to_str().expect("utf-8"));
    let script = support::root().join("crates/athena-cli/tests/support/mem0_client.py");
    let out = Command::new(python)
        .arg(&script)
        .args([&server.url(), KEY])
        .env("MEM0_TELEMETRY", "false")
        .env("MEM0_DIR", dir.path().join("mem0"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `method path` as `user` (a query parameter), with a JSON body.
fn as_user(addr: &str, user: &str, method: &str, path: &str, body: &str) -> Answer {
    let sep = if path.contains('?') { '&' } else { '?' };
    call(
        addr,
        method,
        &format!("{path}{sep}user_id={user}"),
        &[AUTH],
        body,
    )
}

#[test]
fn memories_never_cross_scopes_over_http() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("memory.db");
    let server = memory_server(db.to_str().expect("utf-8"));
    let addr = &server.addr;
    let add = |user: &str, text: &str| -> String {
        let req = json!({"messages": [{"role": "user", "content": text}],
                         "filters": {"user_id": user}, "infer": false});
        let a = call(addr, "POST", "/v3/memories/add/", &[AUTH], &req.to_string());
        assert_eq!(a.status, 200, "{}", a.text);
        body(&a)["results"][0]["id"]
            .as_str()
            .expect("an id")
            .to_string()
    };
    let alice = add("alice", "Alice keeps bees");
    let bob = add("bob", "Bob keeps bees too");

    // By id, another scope's memory is unknown: 404, as for an id that does not exist.
    let mine = format!("/v1/memories/{alice}/");
    for (method, path, body) in [
        ("GET", mine.clone(), ""),
        ("PUT", mine.clone(), r#"{"text": "Bob owns Alice's bees"}"#),
        ("PUT", mine.clone(), r#"{"metadata": {"owner": "bob"}}"#),
        ("DELETE", mine.clone(), ""),
        ("GET", format!("{mine}history/"), ""),
    ] {
        let a = as_user(addr, "bob", method, &path, body);
        assert_eq!(a.status, 404, "bob {method} {path}: {}", a.text);
        assert_eq!(body_code(&a), "memory_not_found", "{}", a.text);
    }
    // Listing and searching stay in the caller's scope, whatever the query.
    for user in ["alice", "bob"] {
        let filters = json!({"filters": {"user_id": user}}).to_string();
        let page = body(&call(addr, "POST", "/v3/memories/", &[AUTH], &filters));
        assert_eq!(page["count"], 1, "{page}");
        assert_eq!(page["results"][0]["user_id"], user, "{page}");
        let q = json!({"query": "who keeps bees", "filters": {"user_id": user}});
        let hits = body(&call(
            addr,
            "POST",
            "/v3/memories/search/",
            &[AUTH],
            &q.to_string(),
        ));
        let users: Vec<&Value> = hits["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| &h["user_id"])
            .collect();
        assert_eq!(users, [user], "{hits}");
    }
    // A query pinned to bob cannot name alice in the body.
    let a = as_user(
        addr,
        "bob",
        "POST",
        "/v3/memories/",
        r#"{"filters": {"user_id": "alice"}}"#,
    );
    assert_eq!(a.status, 400, "{}", a.text);
    // No scope at all: 400 on every route that touches memories.
    let none = [
        ("GET", mine.clone(), ""),
        ("GET", format!("{mine}history/"), ""),
        ("DELETE", mine.clone(), ""),
        ("DELETE", "/v1/memories/".to_string(), ""),
        ("POST", "/v3/memories/".to_string(), "{}"),
        (
            "POST",
            "/v3/memories/search/".to_string(),
            r#"{"query": "bees"}"#,
        ),
        (
            "POST",
            "/v3/memories/add/".to_string(),
            r#"{"messages": [{"role": "user", "content": "x"}], "infer": false}"#,
        ),
    ];
    for (method, path, body) in none {
        let a = call(addr, method, &path, &[AUTH], body);
        assert_eq!(a.status, 400, "{method} {path}: {}", a.text);
        assert!(a.body().contains("no scope"), "{}", a.text);
    }
    // Bob deleting all of his leaves alice's; alice's history stays hers after deletion.
    let a = as_user(addr, "bob", "DELETE", "/v1/memories/", "");
    assert_eq!(body(&a)["deleted"], 1, "{}", a.text);
    let a = as_user(addr, "alice", "DELETE", &mine, "");
    assert_eq!(a.status, 200, "{}", a.text);
    let history = format!("{mine}history/");
    assert_eq!(as_user(addr, "alice", "GET", &history, "").status, 200);
    assert_eq!(as_user(addr, "bob", "GET", &history, "").status, 404);
    let bobs = format!("/v1/memories/{bob}/history/");
    assert_eq!(as_user(addr, "alice", "GET", &bobs, "").status, 404);
}

fn body_code(a: &Answer) -> String {
    body(a)["error"]["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn without_a_bank_the_memory_routes_say_how_to_get_one() {
    let server = start_with(&support::fixture(), &[], &[], &[("ATHENA_API_KEY", KEY)]);
    let a = call(&server.addr, "GET", "/v1/ping/", &[AUTH], "");
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(body_code(&a), "memory_disabled");
    assert!(a.body().contains("--memory-db"), "{}", a.text);
}
