//! `athena serve` end to end: the real binary on the fixture model, driven by the official
//! `openai` Python client (scripts/openai_server_test.py), then stopped with SIGTERM while a
//! stream is open.
//!
//! The Python side needs an interpreter with `openai` installed: `ATHENA_SERVER_PYTHON`, else
//! `$HOME/.cache/athena/venv-server/bin/python` (what `.ci/run` creates). Outside CI a missing
//! one skips the client test with a loud message; in CI (`CI` set) it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running server; killed on drop if still alive.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let model = root().join("fixtures/models/base");
    let mut child = Command::new(env!("CARGO_BIN_EXE_athena"))
        .args(["serve", "--model", model.to_str().unwrap(), "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its address");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

fn python() -> Option<PathBuf> {
    let candidates = std::env::var_os("ATHENA_SERVER_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/athena/venv-server/bin/python")),
        );
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import openai"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

#[test]
fn the_openai_client_drives_the_server() {
    let Some(python) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("CI must run the server test: no Python with `openai` (see .ci/run)");
        }
        eprintln!(
            "\n**************** SKIPPED: the_openai_client_drives_the_server ****************\n\
             no Python with the `openai` package: set ATHENA_SERVER_PYTHON or run\n\
             python3 -m venv ~/.cache/athena/venv-server && \
             ~/.cache/athena/venv-server/bin/pip install openai==3.51.0\n\
             ******************************************************************************\n"
        );
        return;
    };
    // The memory-action route needs the trainable candle path, whichever backend is built.
    let server = start(&["--use-mlx", "false"]);
    let out = Command::new(python)
        .arg(root().join("scripts/openai_server_test.py"))
        .arg(&server.url)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the client checks failed: {stdout}");
}

fn request(url: &str, method: &str, path: &str, body: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

fn response(url: &str, method: &str, path: &str, body: &str) -> String {
    let mut s = request(url, method, path, body);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn sigterm_drains_open_streams_and_exits_zero() {
    let mut server = start(&["--shutdown-grace", "2"]);
    let health = response(&server.url, "GET", "/health", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // A long stream that cannot end by itself within the test (eos banned, 16 choices).
    let body = r#"{"messages":[{"role":"user","content":"go"}],"max_tokens":240,"n":16,
        "stream":true,"logit_bias":{"0":-100}}"#;
    let mut stream = request(&server.url, "POST", "/v1/chat/completions", body);
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).expect("the stream starts");
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let pid = server.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let start = Instant::now();
    // The open stream runs to its end or is cancelled after the grace period; either way it
    // ends, and the process exits 0 within the bound.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server did not exit within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("[DONE]") || rest.contains("shutting down"),
        "the stream ended without [DONE] or a shutdown error: …{}",
        &rest[rest.len().saturating_sub(300)..]
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let server = start(&["--max-concurrency", "1", "--queue", "0"]);
    let body = r#"{"messages":[{"role":"user","content":"go"}],"max_tokens":240,
        "stream":true,"logit_bias":{"0":-100}}"#;
    let mut hold = request(&server.url, "POST", "/v1/chat/completions", body);
    let mut first = [0u8; 32];
    let _ = hold.read(&mut first).expect("the first stream starts");
    let busy = response(&server.url, "POST", "/v1/chat/completions", body);
    assert!(busy.starts_with("HTTP/1.1 429"), "{busy}");
    assert!(
        busy.to_ascii_lowercase().contains("retry-after: 1"),
        "{busy}"
    );
    assert!(busy.contains("rate_limit_error"), "{busy}");
}

/// The text of a non-streamed chat completion.
fn completion_text(raw: &str) -> String {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    json["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {raw}"))
        .to_string()
}

#[test]
fn concurrent_greedy_requests_equal_the_same_requests_one_at_a_time() {
    // The scheduler decodes concurrent requests in one batch on whichever backend is built
    // (MLX with `--features athena/mlx`): batched greedy text equals each request alone.
    let server = start(&[]);
    let body = |p: &str| {
        format!(
            r#"{{"messages":[{{"role":"user","content":"{p}"}}],"max_tokens":12,"temperature":0,"logit_bias":{{"0":-100}}}}"#
        )
    };
    let prompts = ["one", "a longer prompt than the two others", "three"];
    let ask = |p: &str| {
        completion_text(&response(
            &server.url,
            "POST",
            "/v1/chat/completions",
            &body(p),
        ))
    };
    let alone: Vec<String> = prompts.iter().map(|p| ask(p)).collect();
    assert!(alone.iter().all(|t| !t.is_empty()), "{alone:?}");
    let together: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = prompts.iter().map(|p| s.spawn(move || ask(p))).collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
}
