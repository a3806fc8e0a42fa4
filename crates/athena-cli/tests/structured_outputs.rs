//! Structured outputs through `athena serve` on the random-weight fixture model: JSON schemas,
//! `json_object`, tool calls, with the official `openai` client and Python's `jsonschema`
//! (scripts/structured_outputs_test.py), and constrained sequences sharing decode steps with
//! free ones.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use support::{call, python_with, root, start_with};

#[test]
fn the_openai_client_gets_valid_json_and_tool_calls() {
    let Some(python) = python_with(
        "the_openai_client_gets_valid_json_and_tool_calls",
        "jsonschema, pydantic",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = support::long_context_model(dir.path());
    let server = start_with(&model, &[], &[], &[]);
    let out = Command::new(python)
        .arg(root().join("scripts/structured_outputs_test.py"))
        .arg(server.url())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the structured-output checks failed: {stdout}"
    );
}

fn metric(addr: &str, name: &str) -> f64 {
    let a = call(addr, "GET", "/metrics", &[], "");
    a.body()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {}", a.body()))
}

#[test]
fn constrained_and_free_sequences_share_decode_steps() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(&support::long_context_model(dir.path()), &[], &[], &[]);
    let addr = server.addr.clone();
    // A long free sequence that cannot end early (eos banned), streamed; once it runs, a
    // constrained request joins it.
    let free = r#"{"prompt":"hi","max_tokens":3000,"logit_bias":{"0":-100},"temperature":1,
        "seed":1,"stream":true}"#;
    let steps_before = metric(&addr, "athena_decode_steps_total");
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .unwrap();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{free}",
        free.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let schema = r#"{"type":"object","properties":{"a":{"type":"integer","minimum":0,"maximum":99},
        "b":{"enum":["x","yy"]}},"required":["a","b"],"additionalProperties":false}"#;
    let constrained = format!(
        r#"{{"messages":[{{"role":"user","content":"JSON"}}],"max_tokens":100,"n":4,"temperature":1,
        "response_format":{{"type":"json_schema","json_schema":{{"name":"t","schema":{schema}}}}}}}"#
    );
    let c = call(&addr, "POST", "/v1/chat/completions", &[], &constrained);
    assert_eq!(c.status, 200, "{}", c.text);
    let c: serde_json::Value = serde_json::from_str(c.body()).unwrap();
    for choice in c["choices"].as_array().unwrap() {
        assert_eq!(choice["finish_reason"], "stop", "{choice}");
        let v: serde_json::Value =
            serde_json::from_str(choice["message"]["content"].as_str().unwrap()).unwrap();
        assert!(
            v["a"].as_i64().is_some_and(|a| (0..=99).contains(&a)),
            "{v}"
        );
        assert!(["x", "yy"].contains(&v["b"].as_str().unwrap()), "{v}");
    }
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(
        rest.contains("[DONE]") && rest.contains("\"length\""),
        "{}",
        &rest[rest.len().saturating_sub(300)..]
    );
    // The free sequence's 2999 decode steps carried the constrained ones too: run apart, they
    // would have added steps of their own.
    let steps = metric(&addr, "athena_decode_steps_total") - steps_before;
    assert_eq!(
        steps, 2999.0,
        "the constrained sequences did not share the free one's steps"
    );
}

#[test]
fn refused_schemas_and_a_json_object_completion() {
    let server = start_with(&support::fixture(), &[], &[], &[]);
    let addr = &server.addr;
    let huge = format!(
        r#"{{"type":"object","description":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    for (schema, says) in [
        (r#"{"type":"nonsense"}"#.to_string(), "unsupported grammar"),
        (huge, "at most"),
    ] {
        let body = format!(
            r#"{{"prompt":"hi","max_tokens":4,"response_format":{{"type":"json_schema",
            "json_schema":{{"name":"t","schema":{schema}}}}}}}"#
        );
        let a = call(addr, "POST", "/v1/completions", &[], &body);
        assert_eq!(a.status, 400, "{}", a.text);
        let v: serde_json::Value = serde_json::from_str(a.body()).unwrap();
        assert_eq!(v["error"]["param"], "response_format", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
    }
    let body = r#"{"prompt":"{","max_tokens":200,"temperature":1,"seed":3,"n":4,
        "response_format":{"type":"json_object"}}"#;
    let a = call(addr, "POST", "/v1/completions", &[], body);
    assert_eq!(a.status, 200, "{}", a.text);
    let v: serde_json::Value = serde_json::from_str(a.body()).unwrap();
    for choice in v["choices"].as_array().unwrap() {
        if choice["finish_reason"] == "stop" {
            let text = choice["text"].as_str().unwrap();
            let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(parsed.is_object(), "{text}");
        }
    }
}
