//! `athena serve` against hostile or careless clients, over real sockets: the API key, the
//! Host and content-type checks, unknown models, slow and idle connections, huge texts and
//! costly requests.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{call, python, start, start_with};

const CHAT: &str = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;

/// The official client with the right key works; with a wrong one it raises
/// `AuthenticationError` (401).
const OPENAI_WITH_KEYS: &str = r#"
import sys, openai
base = sys.argv[1] + "/v1"
good = openai.OpenAI(base_url=base, api_key="sk-right", max_retries=0, timeout=60)
model = good.models.list().data[0].id
r = good.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
assert r.choices[0].finish_reason in ("stop", "length"), r
bad = openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0, timeout=60)
try:
    bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e
    assert e.body["code"] == "invalid_api_key", e.body
    assert e.body["type"] == "invalid_request_error", e.body
print("ok")
"#;

#[test]
fn the_api_key_is_asked_everywhere_but_health() {
    let server = start_with(
        &support::fixture(),
        &[],
        &[],
        &[("ATHENA_API_KEY", "sk-right")],
    );
    let addr = &server.addr;
    let health = call(addr, "GET", "/health", &[], "");
    assert_eq!(health.status, 200, "{}", health.text);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/no/such/route"),
    ] {
        let a = call(addr, method, path, &[], CHAT);
        assert_eq!(a.status, 401, "{method} {path}: {}", a.text);
        let v: serde_json::Value = serde_json::from_str(a.body()).expect("JSON error");
        assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let wrong = call(
        addr,
        "GET",
        "/v1/models",
        &["authorization: Bearer sk-wrong"],
        "",
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    for scheme in ["Bearer", "Token"] {
        let auth = format!("authorization: {scheme} sk-right");
        let a = call(addr, "POST", "/v1/chat/completions", &[&auth], CHAT);
        assert_eq!(a.status, 200, "{scheme}: {}", a.text);
    }

    let Some(python) = python("the_api_key_is_asked_everywhere_but_health (openai client)") else {
        return;
    };
    let out = Command::new(python)
        .args(["-c", OPENAI_WITH_KEYS, &server.url()])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cross_site_posts_and_foreign_hosts_are_refused() {
    let server = start(&[]);
    let addr = &server.addr.clone();
    // A page's form or simple fetch can send text/plain without a preflight.
    let head =
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: text/plain");
    let plain = support::exchange(addr, &head, CHAT.as_bytes());
    assert_eq!(plain.status, 415, "{}", plain.text);
    assert!(
        plain.body().contains("unsupported_media_type"),
        "{}",
        plain.text
    );
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}");
    assert_eq!(support::exchange(addr, &head, CHAT.as_bytes()).status, 415);
    // DNS rebinding: the browser sends the attacker's name as Host.
    let port = addr.rsplit_once(':').expect("host:port").1;
    let head = format!("GET /v1/models HTTP/1.1\r\nhost: rebound.example:{port}");
    let foreign = support::exchange(addr, &head, b"");
    assert_eq!(foreign.status, 421, "{}", foreign.text);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        addr.clone(),
    ] {
        let head = format!("GET /v1/models HTTP/1.1\r\nhost: {host}");
        assert_eq!(support::exchange(addr, &head, b"").status, 200, "{host}");
    }
    drop(server);
    let open = start(&["--allowed-hosts", "rebound.example"]);
    let head = format!("GET /v1/models HTTP/1.1\r\nhost: rebound.example:{port}");
    assert_eq!(support::exchange(&open.addr, &head, b"").status, 200);
}

#[test]
fn an_unknown_model_is_404_model_not_found() {
    let model = support::fixture();
    let server = start(&["--served-model-name", "athena-test"]);
    let addr = &server.addr;
    let path = model.to_str().expect("utf-8");
    for (route, body) in [
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"model":"MODEL"}"#,
        ),
        (
            "/v1/completions",
            r#"{"prompt":"hi","max_tokens":2,"model":"MODEL"}"#,
        ),
        ("/v1/embeddings", r#"{"input":"hi","model":"MODEL"}"#),
    ] {
        let unknown = call(addr, "POST", route, &[], &body.replace("MODEL", "gpt-4o"));
        assert_eq!(unknown.status, 404, "{route}: {}", unknown.text);
        let v: serde_json::Value = serde_json::from_str(unknown.body()).expect("JSON error");
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");
        assert_eq!(v["error"]["param"], "model", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        // The served name, and the model's path it was loaded from, are the model.
        for name in ["athena-test", path] {
            let ok = call(addr, "POST", route, &[], &body.replace("MODEL", name));
            assert_eq!(ok.status, 200, "{route} as {name}: {}", ok.text);
        }
        let unnamed = body.replace(r#","model":"MODEL""#, "");
        assert_eq!(
            call(addr, "POST", route, &[], &unnamed).status,
            200,
            "{route}"
        );
    }
}

#[test]
fn fields_that_would_change_the_output_are_400s_naming_them() {
    let server = start(&[]);
    let addr = &server.addr;
    for (route, extra, field) in [
        (
            "/v1/chat/completions",
            r#""top_logprobs":2"#,
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            r#""functions":[{"name":"f"}]"#,
            "functions",
        ),
        (
            "/v1/chat/completions",
            r#""audio":{"voice":"alloy"}"#,
            "audio",
        ),
        ("/v1/completions", r#""suffix":"the end""#, "suffix"),
        ("/v1/completions", r#""best_of":3"#, "best_of"),
        ("/v1/completions", r#""tools":[]"#, "tools"),
    ] {
        let body = if route == "/v1/completions" {
            format!(r#"{{"prompt":"hi","max_tokens":2,{extra}}}"#)
        } else {
            format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"max_tokens":2,{extra}}}"#)
        };
        let a = call(addr, "POST", route, &[], &body);
        assert_eq!(a.status, 400, "{route} {extra}: {}", a.text);
        let v: serde_json::Value = serde_json::from_str(a.body()).expect("JSON error");
        assert_eq!(v["error"]["param"], field, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(field),
            "{v}"
        );
    }
}

/// Writes `bytes` one at a time, `gap` apart, until the server closes the connection (or
/// answers); returns how long that took and what it answered.
fn trickle(
    addr: &str,
    head: &[u8],
    bytes: &[u8],
    gap: Duration,
    give_up: Duration,
) -> (Duration, String) {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s.write_all(head).expect("sends the head");
    let start = Instant::now();
    let mut answer = Vec::new();
    for &b in bytes.iter().cycle() {
        assert!(start.elapsed() < give_up, "still open after {give_up:?}");
        if s.write_all(&[b]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.read_to_end(&mut answer);
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        std::thread::sleep(gap);
    }
    (
        start.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[test]
fn headers_sent_a_byte_at_a_time_are_cut_off() {
    let server = start(&["--header-read-timeout", "1", "--keep-alive-timeout", "60"]);
    let (took, _) = trickle(
        &server.addr,
        b"GET /health HTTP/1.1\r\n",
        b"x-slow: aaaaaaaa\r\n",
        Duration::from_millis(50),
        Duration::from_secs(20),
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "cut off after {took:?}; the header timeout is 1 s"
    );
    assert_eq!(call(&server.addr, "GET", "/health", &[], "").status, 200);
}

#[test]
fn a_slow_body_is_cut_off_with_408() {
    let server = start(&["--body-read-timeout", "1"]);
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: 100000\r\n\r\n",
        server.addr
    );
    let (took, answer) = trickle(
        &server.addr,
        head.as_bytes(),
        b"{\"input\": \"",
        Duration::from_millis(50),
        Duration::from_secs(20),
    );
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer:?} after {took:?}"
    );
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
}

#[test]
fn idle_connections_do_not_stop_health() {
    let server = start(&[]);
    // 300 connections that never send a byte, under the default bound of 512.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&server.addr).expect("connects"))
        .collect();
    for _ in 0..5 {
        let start = Instant::now();
        let health = call(&server.addr, "GET", "/health", &[], "");
        assert_eq!(health.status, 200, "{}", health.text);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    drop(idle);

    // At the bound, sockets with no request in flight are closed to make room: a new client
    // is served, however many sit idle.
    let bounded = start(&["--max-connections", "20", "--keep-alive-timeout", "600"]);
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&bounded.addr).expect("connects"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let health = call(&bounded.addr, "GET", "/health", &[], "");
        assert_eq!(health.status, 200, "{}", health.text);
    }
    // The idle sockets were closed by the server (a read sees the end of the stream).
    let closed = held
        .iter_mut()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .filter(|&closed| closed)
        .count();
    assert!(closed >= 1, "no idle connection was closed");

    // Past the bound, with every connection in a request (a body still arriving), a new one
    // is answered 503 at once.
    let bounded = start(&["--max-connections", "2"]);
    let busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&bounded.addr).expect("connects");
            write!(
                s,
                "POST /v1/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"prompt\"",
                bounded.addr
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let refused = call(&bounded.addr, "GET", "/health", &[], "");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(busy);
}

#[test]
fn health_answers_while_clients_send_megabyte_chats() {
    let server = start(&[]);
    let addr = server.addr.clone();
    let text = "lorem ipsum dolor sit amet ".repeat(1_000_000 / 27);
    let body =
        serde_json::json!({"messages": [{"role": "user", "content": text}], "max_tokens": 2})
            .to_string();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| call(&addr, "POST", "/v1/chat/completions", &[], &body).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    while !senders.iter().all(|t| t.is_finished()) {
        let start = Instant::now();
        let health = call(&addr, "GET", "/health", &[], "");
        assert_eq!(health.status, 200, "{}", health.text);
        slowest = slowest.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in senders {
        // Far more tokens than the context: refused by its length, before any tokenizing.
        assert!(t.join().unwrap().iter().all(|&s| s == 400));
    }
    assert!(slowest < Duration::from_secs(2), "/health took {slowest:?}");
    let big = call(&addr, "POST", "/v1/chat/completions", &[], &body);
    assert!(big.body().contains("bytes"), "{}", big.text);
}

#[test]
fn many_long_texts_stay_within_memory_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::long_context_model(dir.path());
    // A token budget that admits two of the largest memory-actions requests at once.
    let mut server = start_with(
        &model,
        &["--token-budget", "400000"],
        &["prlimit", "--as=6000000000"],
        &[],
    );
    let texts: Vec<String> = (0..1024)
        .map(|i| {
            let mut t = format!("memory {i}: the user said ");
            while t.len() < 256 {
                t.push_str(&format!(
                    "{} ",
                    ["paris", "tea", "rome", "blue", "cats"][t.len() % 5]
                ));
            }
            t.truncate(256);
            t
        })
        .collect();
    let memories: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("m{i}"), "text": t}))
        .collect();
    // The largest requests the API takes, each answered in full within the address-space limit.
    let a = call(
        &server.addr,
        "POST",
        "/v1/embeddings",
        &[],
        &serde_json::json!({"input": texts[..256]}).to_string(),
    );
    assert_eq!(a.status, 200, "{}", &a.text[..a.text.len().min(500)]);
    let json = |a: &support::Answer| -> serde_json::Value {
        serde_json::from_str(&a.decoded_body()).expect("a JSON answer")
    };
    let data = json(&a)["data"].as_array().expect("data").clone();
    assert_eq!(data.len(), 256);
    assert!(data
        .iter()
        .all(|d| d["embedding"].as_array().map(Vec::len) == Some(64)));
    // Two requests of 1024 memories of 256 characters, together.
    let fact = serde_json::json!({"fact": "the user moved to rome", "memories": memories});
    let answers: Vec<support::Answer> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    call(
                        &server.addr,
                        "POST",
                        "/v1/memory/actions",
                        &[],
                        &fact.to_string(),
                    )
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for a in &answers {
        assert_eq!(a.status, 200, "{}", &a.text[..a.text.len().min(500)]);
        let target_probabilities = json(a)["action"]["target_probabilities"].clone();
        assert_eq!(
            target_probabilities.as_object().map(|m| m.len()),
            Some(1024),
            "{}",
            &a.text[..a.text.len().min(500)]
        );
    }
    assert!(server.alive(), "the server died");
    // One input past the limit is the caller's mistake, named as such.
    let a = call(
        &server.addr,
        "POST",
        "/v1/embeddings",
        &[],
        &serde_json::json!({"input": texts}).to_string(),
    );
    assert_eq!(a.status, 400, "{}", &a.text[..a.text.len().min(500)]);
    assert!(a.body().contains("256"), "{}", a.text);
    assert_eq!(call(&server.addr, "GET", "/health", &[], "").status, 200);
    // A request that alone costs more than the whole budget is refused up front.
    drop(server);
    let small = start(&["--token-budget", "100"]);
    let costly = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":200}"#;
    let a = call(&small.addr, "POST", "/v1/chat/completions", &[], costly);
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.body().contains("request_too_large"), "{}", a.text);
    let cheap = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    assert_eq!(
        call(&small.addr, "POST", "/v1/chat/completions", &[], cheap).status,
        200
    );
}

#[test]
fn a_request_past_its_timeout_stops_its_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::long_context_model(dir.path());
    let server = start_with(
        &model,
        &["--request-timeout", "1", "--token-budget", "1000000"],
        &[],
        &[],
    );
    // Many forward passes of long texts: far more than a second of work.
    let texts: Vec<String> = (0..256)
        .map(|i| format!("text {i}: {}", "paris tea rome blue cats ".repeat(60)))
        .collect();
    let body = serde_json::json!({ "input": texts }).to_string();
    let a = call(&server.addr, "POST", "/v1/embeddings", &[], &body);
    assert_eq!(a.status, 504, "{}", &a.text[..a.text.len().min(500)]);
    // The encoding stops at its next pass and gives its admission back.
    let gauge = |name: &str| -> Option<f64> {
        let m = call(&server.addr, "GET", "/metrics", &[], "");
        m.body()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let give_up = Instant::now() + Duration::from_secs(120);
    while gauge("athena_cancelled_work_total") != Some(1.0) {
        assert!(Instant::now() < give_up, "the encoding was never cancelled");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gauge("athena_admitted_tokens"), Some(0.0));
}

#[test]
fn metrics_are_scraped_after_a_request() {
    let server = start(&[]);
    let chat =
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"logit_bias":{"0":-100}}"#;
    assert_eq!(
        call(&server.addr, "POST", "/v1/chat/completions", &[], chat).status,
        200
    );
    let scraped = call(&server.addr, "GET", "/metrics", &[], "");
    assert_eq!(scraped.status, 200);
    let value = |series: &str| -> f64 {
        scraped
            .body()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{}", scraped.body()))
    };
    for series in [
        r#"athena_requests_total{route="/v1/chat/completions",status="200"}"#,
        r#"athena_request_duration_seconds_count{route="/v1/chat/completions",status="200"}"#,
        "athena_time_to_first_token_seconds_count",
        "athena_inter_token_latency_seconds_count",
        "athena_queue_time_seconds_count",
        "athena_prompt_tokens_total",
        "athena_generated_tokens_total",
    ] {
        assert!(value(series) > 0.0, "{series} is 0");
    }
    assert!(scraped
        .body()
        .contains("# TYPE athena_request_duration_seconds histogram"));
}
