//! `/openapi.json` against the running server: the document parses, describes exactly the
//! routes the router answers, and real answers of every route (successes, streams and errors)
//! validate against the schemas it gives for their status and content type.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{json, Value};
use support::{call, start_with, Answer};

const KEY: &str = "sk-openapi";
const AUTH: &str = "authorization: Bearer sk-openapi";

/// Every route of the server: (method, path).
const ROUTES: [(&str, &str); 17] = [
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/v1/models"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/embeddings"),
    ("post", "/v1/memory/actions"),
    ("get", "/openapi.json"),
    ("get", "/v1/ping/"),
    ("post", "/v3/memories/add/"),
    ("post", "/v3/memories/"),
    ("post", "/v3/memories/search/"),
    ("get", "/v1/memories/{memory_id}/"),
    ("put", "/v1/memories/{memory_id}/"),
    ("delete", "/v1/memories/{memory_id}/"),
    ("delete", "/v1/memories/"),
    ("get", "/v1/memories/{memory_id}/history/"),
];

/// A request whose answer is a tool call.
const TOOL_CALL: &str = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":40,
    "seed":1,"tool_choice":"required","tools":[{"type":"function","function":{"name":"f",
    "parameters":{"type":"object","properties":{"a":{"type":"boolean"}},"required":["a"]}}}]}"#;

/// Validates each sample against the document: the status must be described for the
/// operation, the content type listed for that status, and a JSON body (or each JSON event of
/// a stream, against the named schema) valid under the schema.
const VALIDATE: &str = r##"
import json, sys
from jsonschema import Draft202012Validator
doc = json.load(open(sys.argv[1]))
samples = json.load(open(sys.argv[2]))
def resolve(node):
    while "$ref" in node and node["$ref"].startswith("#/components/responses/"):
        node = doc["components"]["responses"][node["$ref"].rsplit("/", 1)[1]]
    return node
def validator(schema):
    root = dict(schema)
    root["components"] = doc["components"]
    return Draft202012Validator(root)
failures = []
for s in samples:
    where = f'{s["method"].upper()} {s["path"]} -> {s["status"]}'
    op = doc["paths"][s["path"]][s["method"]]
    response = op["responses"].get(str(s["status"]))
    if response is None:
        failures.append(f"{where}: status not described")
        continue
    content = resolve(response).get("content", {})
    media = s["content_type"].split(";")[0].strip()
    listed = {k.split(";")[0].strip(): v for k, v in content.items()}
    if media not in listed:
        failures.append(f"{where}: content type {media} not in {sorted(listed)}")
        continue
    if "events" in s:
        # Each event as an event parser reads it, against the stream's schema; its data, a
        # chunk, against the chunk's schema.
        stream = validator(listed[media]["schema"])
        for e in s["events"]:
            event = {"data": json.dumps(e)}
            errors = [x.message for x in stream.iter_errors(event)]
            if errors:
                failures.append(f"{where}: {errors[:3]} in the event {json.dumps(event)[:300]}")
        v = validator({"$ref": "#/components/schemas/" + s["event_schema"]})
        bodies = s["events"]
    elif media == "application/json":
        v = validator(listed[media]["schema"])
        bodies = [s["body"]]
    else:
        v = validator(listed[media]["schema"])
        bodies = [s["body_text"]]
    for b in bodies:
        errors = [e.message for e in v.iter_errors(b)]
        if errors:
            failures.append(f"{where}: {errors[:3]} in {json.dumps(b)[:300]}")
print(f"{len(samples)} samples")
if failures:
    sys.exit("\n".join(failures))
"##;

/// A sample for the validator: the answer to `method path`.
fn sample(method: &str, path: &str, a: &Answer) -> Value {
    let content_type = a.header("content-type").unwrap_or("").to_string();
    let body = a.decoded_body();
    let mut s = json!({
        "method": method, "path": path, "status": a.status, "content_type": content_type,
    });
    if content_type.starts_with("text/event-stream") {
        let events: Vec<Value> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("each event is JSON"))
            .collect();
        assert!(!events.is_empty(), "{path}: no events in {body}");
        let schema = if path == "/v1/chat/completions" {
            "ChatCompletionChunk"
        } else {
            "Completion"
        };
        s["events"] = json!(events);
        s["event_schema"] = json!(schema);
    } else if content_type.starts_with("application/json") {
        s["body"] = serde_json::from_str(&body).expect("a JSON body");
    } else {
        s["body_text"] = json!(body);
    }
    s
}

/// Answers of every memory route: successes in the order a client makes them, then errors.
fn memory_answers(addr: &str) -> Vec<(&'static str, &'static str, Answer)> {
    let scoped = |path: &str| format!("{path}?user_id=u1");
    let add = r#"{"messages":[{"role":"user","content":"likes tea"}],
        "filters":{"user_id":"u1"},"infer":false,"metadata":{"k":1}}"#;
    let added = call(addr, "POST", "/v3/memories/add/", &[AUTH], add);
    let v: Value = serde_json::from_str(&added.decoded_body()).expect("JSON");
    let id = v["results"][0]["id"].as_str().expect("an id").to_string();
    let one = format!("/v1/memories/{id}/");
    let by_id = "/v1/memories/{memory_id}/";
    let history = "/v1/memories/{memory_id}/history/";
    let filters = r#"{"filters":{"user_id":"u1"}}"#;
    let search = r#"{"query":"tea","filters":{"user_id":"u1"}}"#;
    let put = r#"{"text":"likes green tea","metadata":{"j":2}}"#;
    vec![
        (
            "get",
            "/v1/ping/",
            call(addr, "GET", "/v1/ping/", &[AUTH], ""),
        ),
        ("post", "/v3/memories/add/", added),
        (
            "post",
            "/v3/memories/",
            call(addr, "POST", "/v3/memories/", &[AUTH], filters),
        ),
        (
            "post",
            "/v3/memories/search/",
            call(addr, "POST", "/v3/memories/search/", &[AUTH], search),
        ),
        ("get", by_id, call(addr, "GET", &scoped(&one), &[AUTH], "")),
        ("put", by_id, call(addr, "PUT", &scoped(&one), &[AUTH], put)),
        (
            "get",
            history,
            call(addr, "GET", &scoped(&format!("{one}history/")), &[AUTH], ""),
        ),
        (
            "delete",
            by_id,
            call(addr, "DELETE", &scoped(&one), &[AUTH], ""),
        ),
        (
            "delete",
            "/v1/memories/",
            call(addr, "DELETE", &scoped("/v1/memories/"), &[AUTH], ""),
        ),
        // The errors: another scope's (or a deleted) memory, no scope, an unsupported
        // option, the wrong shape.
        ("get", by_id, call(addr, "GET", &scoped(&one), &[AUTH], "")),
        ("get", by_id, call(addr, "GET", &one, &[AUTH], "")),
        (
            "post",
            "/v3/memories/add/",
            call(
                addr,
                "POST",
                "/v3/memories/add/",
                &[AUTH],
                r#"{"messages":[]}"#,
            ),
        ),
        (
            "post",
            "/v3/memories/search/",
            call(
                addr,
                "POST",
                "/v3/memories/search/",
                &[AUTH],
                r#"{"query":1}"#,
            ),
        ),
    ]
}

#[test]
fn the_openapi_document_describes_every_route_and_its_answers() {
    let bank = tempfile::tempdir().expect("a temporary directory");
    let db = bank.path().join("memory.db");
    let server = start_with(
        &support::fixture(),
        &[
            "--max-body-bytes",
            "4096",
            "--memory-db",
            db.to_str().expect("utf-8"),
        ],
        &[],
        &[("ATHENA_API_KEY", KEY)],
    );
    let addr = &server.addr;
    let served = call(addr, "GET", "/openapi.json", &[AUTH], "");
    assert_eq!(served.status, 200, "{}", served.text);
    let doc: Value = serde_json::from_str(&served.decoded_body()).expect("the document parses");
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");

    // The document's operations are the router's routes: each answered, and no other.
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            item.keys()
                .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routes);
    for (method, path) in &documented {
        let a = call(addr, &method.to_uppercase(), path, &[AUTH], "{}");
        assert!(
            a.status != 404 || a.body().contains("model_not_found"),
            "{method} {path} is described but not routed: {}",
            a.text
        );
        assert_ne!(a.status, 405, "{method} {path}: {}", a.text);
        // The key is asked everywhere but /health, and the document says so.
        let security = &paths[path.as_str()][method.as_str()]["security"];
        assert_eq!(security.is_array(), path != "/health", "{method} {path}");
    }
    // The structured-output fields are described (flattened structs are `allOf` parts).
    let schemas = &doc["components"]["schemas"];
    let has = |name: &str, field: &str| {
        let s = &schemas[name];
        s["properties"][field].is_object()
            || s["allOf"]
                .as_array()
                .is_some_and(|parts| parts.iter().any(|p| p["properties"][field].is_object()))
    };
    for field in [
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    ] {
        assert!(has("ChatRequest", field), "ChatRequest.{field}");
    }
    assert!(has("CompletionRequest", "response_format"));
    assert!(has("AssistantMessage", "tool_calls"));
    let unknown = call(addr, "GET", "/v1/nothing", &[AUTH], "");
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    let chat = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#;
    let chat_stream = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"n":2,
        "stream":true,"stream_options":{"include_usage":true}}"#;
    let completion = r#"{"prompt":["hello","there"],"max_tokens":3}"#;
    let completion_stream = r#"{"prompt":"hello","max_tokens":3,"stream":true,
        "stream_options":{"include_usage":true}}"#;
    let actions = r#"{"fact":"likes tea","memories":[{"id":"m1","text":"likes coffee"}]}"#;
    let port = addr.rsplit_once(':').expect("host:port").1;
    let foreign_host =
        format!("GET /v1/models HTTP/1.1\r\nhost: elsewhere.example:{port}\r\n{AUTH}");
    let plain = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: text/plain\r\n{AUTH}"
    );
    let big = format!(r#"{{"input":"{}"}}"#, "a".repeat(8192));
    let mut answers = vec![
        ("get", "/health", call(addr, "GET", "/health", &[], "")),
        (
            "get",
            "/metrics",
            call(addr, "GET", "/metrics", &[AUTH], ""),
        ),
        (
            "get",
            "/v1/models",
            call(addr, "GET", "/v1/models", &[AUTH], ""),
        ),
        ("get", "/openapi.json", served),
    ];
    for (path, body) in [
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", chat_stream),
        ("/v1/completions", completion),
        ("/v1/completions", completion_stream),
        ("/v1/embeddings", r#"{"input":["a","b c"]}"#),
        (
            "/v1/embeddings",
            r#"{"input":"a","encoding_format":"base64"}"#,
        ),
        ("/v1/memory/actions", actions),
        // Structured outputs: JSON under a format, a tool call whole and streamed, a refused
        // schema.
        (
            "/v1/completions",
            r#"{"prompt":"{","max_tokens":60,"response_format":{"type":"json_object"}}"#,
        ),
        ("/v1/chat/completions", TOOL_CALL),
        (
            "/v1/chat/completions",
            &TOOL_CALL.replace("\"seed\"", "\"stream\":true,\"seed\""),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,
            "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"nope"}}}}"#,
        ),
        // The errors: no key, not JSON, the wrong shape, an invalid value, an unknown model,
        // a body too large.
        ("/v1/chat/completions", "{}"),
        ("/v1/completions", "{not json"),
        ("/v1/completions", r#"{"prompt": 5}"#),
        ("/v1/chat/completions", r#"{"messages":[],"max_tokens":1}"#),
        ("/v1/embeddings", r#"{"input":"a","model":"gpt-4o"}"#),
        ("/v1/embeddings", &big),
        ("/v1/memory/actions", r#"{"fact":""}"#),
    ] {
        let auth: &[&str] = if body == "{}" { &[] } else { &[AUTH] };
        answers.push(("post", path, call(addr, "POST", path, auth, body)));
    }
    answers.push((
        "get",
        "/v1/models",
        support::exchange(addr, &foreign_host, b""),
    ));
    answers.push((
        "post",
        "/v1/chat/completions",
        support::exchange(addr, &plain, chat.as_bytes()),
    ));
    answers.extend(memory_answers(addr));
    let statuses: BTreeSet<u16> = answers.iter().map(|(_, _, a)| a.status).collect();
    assert_eq!(
        statuses,
        BTreeSet::from([200, 400, 401, 404, 413, 415, 421, 422]),
        "{answers:#?}"
    );
    let samples: Vec<Value> = answers.iter().map(|(m, p, a)| sample(m, p, a)).collect();
    let tool_answers = samples
        .iter()
        .filter(|s| s["path"] == "/v1/chat/completions" && s["status"] == 200)
        .filter(|s| s.to_string().contains("\"tool_calls\":["))
        .count();
    assert_eq!(
        tool_answers, 2,
        "a tool call, whole and streamed: {samples:#?}"
    );

    let Some(python) = support::python_with(
        "the_openapi_document_describes_every_route_and_its_answers",
        "jsonschema",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let doc_path = dir.path().join("openapi.json");
    let samples_path = dir.path().join("samples.json");
    std::fs::write(&doc_path, doc.to_string()).expect("writes");
    std::fs::write(&samples_path, Value::from(samples).to_string()).expect("writes");
    let out = Command::new(python)
        .args(["-c", VALIDATE])
        .arg(&doc_path)
        .arg(&samples_path)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
