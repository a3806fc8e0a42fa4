//! Scale-out: two `athena serve` processes on different ports sharing one PostgreSQL bank (the
//! real server CI starts; ATHENA_TEST_PG_URL). A memory added through one is found, updated
//! and deleted through the other, and concurrent adds through both lose nothing; both stop
//! cleanly on SIGTERM.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{call, start_with, Answer};

const KEY: &str = "scale-out-key";
const AUTH: &str = "authorization: Token scale-out-key";

fn body(a: &Answer) -> Value {
    serde_json::from_str(&a.decoded_body()).unwrap_or_else(|e| panic!("{e}: {}", a.text))
}

fn ok(a: Answer) -> Value {
    assert_eq!(a.status, 200, "{}", a.text);
    body(&a)
}

fn add(addr: &str, user: &str, text: &str) -> Value {
    let req = json!({"messages": [{"role": "user", "content": text}],
                     "filters": {"user_id": user}, "infer": false});
    ok(call(
        addr,
        "POST",
        "/v3/memories/add/",
        &[AUTH],
        &req.to_string(),
    ))
}

fn ids_of(addr: &str, user: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut page = 1;
    loop {
        let req = json!({"filters": {"user_id": user}}).to_string();
        let path = format!("/v3/memories/?page={page}&page_size=1000");
        let p = ok(call(addr, "POST", &path, &[AUTH], &req));
        for m in p["results"].as_array().expect("results") {
            ids.insert(m["id"].as_str().expect("an id").to_string());
        }
        if p["next"].is_null() {
            return ids;
        }
        page += 1;
    }
}

/// Stops `server` with SIGTERM and checks that it exits 0 within 20 s.
fn stop(server: &mut support::Server) {
    let pid = server.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server did not exit within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn two_servers_share_one_postgres_bank() {
    let Some(url) = support::fresh_pg_database("two_servers_share_one_postgres_bank") else {
        return;
    };
    let flags = ["--memory-db", url.as_str(), "--memory-connections", "3"];
    let env = [("ATHENA_API_KEY", KEY)];
    let one = start_with(&support::fixture(), &flags, &[], &env);
    let two = start_with(&support::fixture(), &flags, &[], &env);
    let (a, b) = (one.addr.as_str(), two.addr.as_str());
    assert_ne!(a, b);

    // Added through one, found through the other.
    let added = add(a, "carol", "Carol grows tomatoes on her balcony");
    let id = added["results"][0]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let mine = format!("/v1/memories/{id}/?user_id=carol");
    assert_eq!(
        ok(call(b, "GET", &mine, &[AUTH], ""))["memory"],
        "Carol grows tomatoes on her balcony"
    );
    let q = json!({"query": "what grows on the balcony", "filters": {"user_id": "carol"}});
    let hits = ok(call(
        b,
        "POST",
        "/v3/memories/search/",
        &[AUTH],
        &q.to_string(),
    ));
    assert_eq!(hits["results"][0]["id"], id.as_str(), "{hits}");
    // Updated through the other, seen by the first.
    let put = ok(call(
        b,
        "PUT",
        &mine,
        &[AUTH],
        r#"{"text": "Carol grows peppers on her balcony"}"#,
    ));
    assert_eq!(put["event"], "UPDATE", "{put}");
    assert_eq!(
        ok(call(a, "GET", &mine, &[AUTH], ""))["memory"],
        "Carol grows peppers on her balcony"
    );
    let hits = ok(call(
        a,
        "POST",
        "/v3/memories/search/",
        &[AUTH],
        &q.to_string(),
    ));
    assert_eq!(
        hits["results"][0]["memory"],
        "Carol grows peppers on her balcony"
    );
    // Deleted through the other: gone for the first, its history complete on both.
    ok(call(b, "DELETE", &mine, &[AUTH], ""));
    assert_eq!(call(a, "GET", &mine, &[AUTH], "").status, 404);
    let history_path = format!("/v1/memories/{id}/history/?user_id=carol");
    for addr in [a, b] {
        let history = ok(call(addr, "GET", &history_path, &[AUTH], ""));
        let events: Vec<&str> = history
            .as_array()
            .expect("a list")
            .iter()
            .map(|h| h["event"].as_str().expect("an event"))
            .collect();
        assert_eq!(events, ["ADD", "UPDATE", "DELETE"], "{history}");
    }

    // Concurrent adds through both servers, to two users: every id told is in the bank, and
    // nothing else is.
    const THREADS: usize = 4;
    const EACH: usize = 12;
    let told: Vec<(String, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2 * THREADS)
            .map(|t| {
                let addr = if t % 2 == 0 { a } else { b };
                s.spawn(move || {
                    let user = if t < THREADS { "dave" } else { "erin" };
                    (0..EACH)
                        .map(|i| {
                            let text = format!("fact {i} from worker {t} through {addr}");
                            let r = add(addr, user, &text);
                            assert_eq!(r["results"][0]["event"], "ADD", "{r}");
                            let id = r["results"][0]["id"].as_str().expect("an id");
                            (user.to_string(), id.to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker"))
            .collect()
    });
    assert_eq!(told.len(), 2 * THREADS * EACH);
    for user in ["dave", "erin"] {
        let want: BTreeSet<String> = told
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(want.len(), THREADS * EACH);
        assert_eq!(ids_of(a, user), want, "{user} through one");
        assert_eq!(ids_of(b, user), want, "{user} through the other");
    }
    // SIGTERM: both close their PostgreSQL connections and exit 0.
    for mut server in [one, two] {
        stop(&mut server);
    }
    let check = Command::new(env!("CARGO_BIN_EXE_athena"))
        .args(["memory", "check", "--db", &url])
        .output()
        .expect("athena memory check runs");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
