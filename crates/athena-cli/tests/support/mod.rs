//! What the server tests share: the real `athena serve` on a fixture model, raw HTTP over a
//! socket, the Pythons that have the official `openai` and `mem0ai` clients, and fresh
//! PostgreSQL databases for the memory bank.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture() -> PathBuf {
    model_dir("base")
}

/// The fixture model `fixtures/models/NAME`.
pub fn model_dir(name: &str) -> PathBuf {
    root().join("fixtures/models").join(name)
}

/// Runs the `athena` binary with `args` to its end.
pub fn athena(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_athena"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A finished command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running server; killed on drop if still alive.
pub struct Server {
    pub child: Child,
    /// `host:port`.
    pub addr: String,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `athena serve` on `model` (candle, port 0) with `extra` flags, run through `wrapper` (a
/// command and its arguments, such as `prlimit --as=N`) when one is given.
pub fn start_with(model: &Path, extra: &[&str], wrapper: &[&str], env: &[(&str, &str)]) -> Server {
    let bin = env!("CARGO_BIN_EXE_athena");
    let mut cmd = match wrapper.split_first() {
        Some((w, args)) => {
            let mut c = Command::new(w);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["serve", "--model", model.to_str().expect("utf-8")])
        .args(["--port", "0", "--use-mlx", "false"])
        .args(extra)
        .env_remove("ATHENA_API_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("the binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its address");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Server { child, addr }
}

pub fn start(extra: &[&str]) -> Server {
    start_with(&fixture(), extra, &[], &[])
}

/// An HTTP answer: its status and its whole text (head and body).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("")
    }

    /// The value of header `name` (lower case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split_once("\r\n\r\n").map_or("", |x| x.0);
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body with a chunked transfer encoding undone.
    pub fn decoded_body(&self) -> String {
        if self.header("transfer-encoding") != Some("chunked") {
            return self.body().to_string();
        }
        let mut rest = self.body();
        let mut out = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` on a fresh
/// connection, and reads the answer to its end.
pub fn exchange(addr: &str, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).expect("sends");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer { status, text }
}

/// A request with the usual headers (`host` is the server's address, a JSON content type)
/// plus `extra` header lines.
pub fn call(addr: &str, method: &str, path: &str, extra: &[&str], body: &str) -> Answer {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json");
    for h in extra {
        head.push_str("\r\n");
        head.push_str(h);
    }
    exchange(addr, &head, body.as_bytes())
}

/// A Python with the `openai` package: `ATHENA_SERVER_PYTHON`, else the project's venv. Outside
/// CI a missing one returns `None` after a loud message; in CI (`CI` set) it panics.
pub fn python(test: &str) -> Option<PathBuf> {
    python_with(test, "openai")
}

/// A Python that can import `module` (and `openai`), found as [`python`] finds one.
pub fn python_with(test: &str, module: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("ATHENA_SERVER_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/athena/venv-server/bin/python")),
        );
    let found = candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", &format!("import openai, {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("CI must run {test}: no Python with `openai` and `{module}` (see .ci/run)");
        }
        eprintln!(
            "\n**************** SKIPPED: {test} ****************\n\
             no Python with the `openai` and `{module}` packages: set ATHENA_SERVER_PYTHON or run\n\
             python3 -m venv ~/.cache/athena/venv-server && \
             ~/.cache/athena/venv-server/bin/pip install openai==3.51.0 jsonschema==4.26.0\n"
        );
    }
    found
}

/// The mem0 client's pinned version (.ci/run installs it).
pub const MEM0_PIN: &str = "2.2.1";

/// A Python with the official `mem0ai` client at [`MEM0_PIN`]: `ATHENA_MEM0_PYTHON`, else the
/// project's venv. Outside CI a missing one returns `None` after a loud message; in CI (`CI`
/// set) it panics.
pub fn mem0_python(test: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("ATHENA_MEM0_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/athena/venv-mem0/bin/python")),
        );
    let check = format!(
        "import importlib.metadata as m, sys; \
         sys.exit(m.version('mem0ai') != '{MEM0_PIN}')"
    );
    let found = candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", &check])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("CI must run {test}: no Python with mem0ai=={MEM0_PIN} (see .ci/run)");
        }
        eprintln!(
            "\n**************** SKIPPED: {test} ****************\n\
             no Python with mem0ai=={MEM0_PIN}: set ATHENA_MEM0_PYTHON or run\n\
             python3 -m venv ~/.cache/athena/venv-mem0 && \
             ~/.cache/athena/venv-mem0/bin/pip install mem0ai=={MEM0_PIN}\n"
        );
    }
    found
}

/// A fresh, empty PostgreSQL database on the server in `ATHENA_TEST_PG_URL`, as a URL; `None`
/// (with the reason printed) when the variable is unset, a panic under CI.
pub fn fresh_pg_database(test: &str) -> Option<String> {
    let server = match std::env::var("ATHENA_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI must run {test}: ATHENA_TEST_PG_URL is unset (start a server with \
                     `eval \"$(scripts/pg-test-server.sh start)\"`)"
                );
            }
            eprintln!(
                "\n**************** SKIPPED: {test} ****************\n\
                 ATHENA_TEST_PG_URL is unset: start a server with \
                 `eval \"$(scripts/pg-test-server.sh start)\"`\n"
            );
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("athena_cli_{}_{nanos}", std::process::id());
    let mut client =
        postgres::Client::connect(&server, postgres::NoTls).expect("connect to the server");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a database");
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    Some(format!("{base}/{name}"))
}

/// A copy of the fixture model in `dir/model` with a 4096-token context (the real OLMoE's),
/// for requests longer than the fixture's 256 tokens.
pub fn long_context_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["max_position_embeddings"] = 4096.into();
    std::fs::write(&path, config.to_string()).unwrap();
    model
}
