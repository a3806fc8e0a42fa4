//! The server's stateless `/v1/memory/actions` says so when its action head was never
//! trained.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn an_untrained_head_is_flagged_in_the_response() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/base");
    let mut child = Command::new(env!("CARGO_BIN_EXE_athena"))
        .args([
            "serve",
            "--model",
            model.to_str().expect("utf-8"),
            "--port",
            "0",
        ])
        .args(["--use-mlx", "false"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server prints its address");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .expect("an address")
        .trim_end_matches('/')
        .to_string();
    let body = r#"{"fact":"The user moved to Rome.","memories":[{"id":"m1","text":"The user lives in Paris."}]}"#;
    let mut s = TcpStream::connect(&addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        s,
        "POST /v1/memory/actions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""head_trained":false"#), "{out}");
    assert!(out.contains("athena train-head"), "{out}");
}
