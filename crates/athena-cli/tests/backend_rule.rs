//! One backend rule for every command that runs the model: MLX first when `use_mlx` is set and
//! MLX is available, else candle; commands that need the action head ask for candle; the
//! stderr line and the `"backend"` field of `--json` say which backend ran and why.
//!
//! Which branch a test checks depends on the build: a build without `--features athena/mlx`
//! has MLX not compiled in; a build with it (and libmlx present) loads MLX. Each test asks
//! `athena load --json` which one this binary is, as `cli.rs` does.

use std::path::Path;
use std::process::Output;

mod support;
use support::{athena, model_dir, stderr};

fn base() -> String {
    model_dir("base").display().to_string()
}

/// Runs `args`, which must succeed, and returns stderr's backend line.
fn backend_line(args: &[&str]) -> (Output, String) {
    let o = athena(args);
    let e = stderr(&o);
    assert!(o.status.success(), "{args:?}: {e}");
    let line = e
        .lines()
        .find(|l| l.starts_with("backend "))
        .unwrap_or_else(|| panic!("{args:?}: no backend line in {e}"))
        .to_string();
    (o, line)
}

fn json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text.lines().last().expect("a JSON line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Whether this binary loads MLX by default (built with MLX and libmlx usable).
fn mlx_loads() -> bool {
    let o = athena(&["load", "--model", &base(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    match v["attempts"][0]["outcome"].as_str() {
        Some("loaded") => true,
        Some("skipped") => {
            assert_eq!(
                v["attempts"][0]["reason"],
                "not compiled in (build with --features mlx)"
            );
            false
        }
        other => panic!("unexpected MLX outcome {other:?}: {v}"),
    }
}

/// Each command that runs the model, with the flags it needs besides the load flags.
fn commands(out: &Path) -> Vec<Vec<String>> {
    let out = out.display().to_string();
    [
        vec!["generate", "--prompt", "hello", "--max-tokens", "2"],
        vec!["encode", "--text", "hello", "--json"],
        vec!["logits", "--ids", "1,2,3", "--output", &out],
        vec![
            "bench",
            "--prompt-tokens",
            "4",
            "--gen-tokens",
            "2",
            "--json",
        ],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .collect()
}

fn with(cmd: &[String], extra: &[&str]) -> Vec<String> {
    let mut v = cmd.to_vec();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn use_mlx_false_runs_every_command_on_candle_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let m = base();
    for cmd in commands(&dir.path().join("l.npy")) {
        let args = with(&cmd, &["--model", &m, "--use-mlx", "false"]);
        let (_, line) = backend_line(&strs(&args));
        assert!(
            line.starts_with(
                "backend candle (mlx skipped: disabled by use_mlx=false; candle loaded: loaded "
            ),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn the_default_follows_the_rule_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let m = base();
    let mlx = mlx_loads();
    for cmd in commands(&dir.path().join("l.npy")) {
        let args = with(&cmd, &["--model", &m]);
        let (o, line) = backend_line(&strs(&args));
        if mlx {
            assert!(
                line.starts_with("backend mlx (mlx loaded: loaded "),
                "{args:?}: {line}"
            );
        } else {
            assert!(
                line.starts_with(
                    "backend candle (mlx skipped: not compiled in (build with --features mlx); candle loaded: "
                ),
                "{args:?}: {line}"
            );
        }
        if cmd.iter().any(|a| a == "--json") {
            let want = if mlx { "mlx" } else { "candle" };
            assert_eq!(json(&o)["backend"], want, "{args:?}");
        }
    }
    // The logits file was written by whichever backend ran.
    assert!(dir.path().join("l.npy").exists());
}

#[test]
fn backend_names_one_engine_without_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.npy").display().to_string();
    let m = base();
    let mlx = mlx_loads();
    for cmd in ["logits", "bench"] {
        let mut args = vec![cmd, "--model", &m, "--backend", "candle"];
        if cmd == "logits" {
            args.extend(["--ids", "1,2", "--output", &out]);
        } else {
            args.extend(["--prompt-tokens", "4", "--gen-tokens", "1", "--json"]);
        }
        let (o, line) = backend_line(&args);
        assert!(
            line.starts_with("backend candle (mlx skipped: not asked for (backend candle); "),
            "{line}"
        );
        if cmd == "bench" {
            assert_eq!(json(&o)["backend"], "candle");
        }
        args[4] = "mlx";
        let o = athena(&args);
        let e = stderr(&o);
        if mlx {
            assert!(o.status.success(), "{e}");
            assert!(e.contains("backend mlx (mlx loaded: "), "{e}");
        } else {
            // Named but not compiled in: an error, not candle.
            assert!(!o.status.success(), "{e}");
            assert!(
                e.contains("mlx: not compiled in (build with --features mlx); candle: not asked for (backend mlx)"),
                "{e}"
            );
        }
    }
}

#[test]
fn commands_that_need_the_head_ask_for_candle_in_every_build() {
    let m = base();
    let (o, line) = backend_line(&["act", "--model", &m, "--fact", "x", "--json"]);
    assert!(
        line.starts_with(
            "backend candle (mlx skipped: the memory action head needs the trainable candle path; candle loaded: "
        ),
        "{line}"
    );
    let v = json(&o);
    assert_eq!(v["backend"], "candle");
    assert!(["ADD", "UPDATE", "DELETE", "NOOP"].contains(&v["op"].as_str().unwrap()));

    // `memory add` without inference needs no head: it follows the rule.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db").display().to_string();
    let (_, line) = backend_line(&[
        "memory",
        "add",
        "--db",
        &db,
        "--model",
        &m,
        "--user",
        "u",
        "--no-infer",
        "--fact",
        "x",
    ]);
    let want = if mlx_loads() {
        "backend mlx (mlx loaded: "
    } else {
        "backend candle (mlx skipped: not compiled in"
    };
    assert!(line.starts_with(want), "{line}");
}

#[test]
fn training_and_inferring_memories_ask_for_candle_in_every_build() {
    const HEAD_LINE: &str =
        "backend candle (mlx skipped: the memory action head needs the trainable candle path; candle loaded: ";
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    for (n, seed, file) in [("12", "1", "train.jsonl"), ("8", "2", "eval.jsonl")] {
        let o = athena(&["synth-memory", "--n", n, "--seed", seed, "--out", &p(file)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let m = base();
    let (o, line) = backend_line(&[
        "train-head",
        "--model",
        &m,
        "--train",
        &p("train.jsonl"),
        "--eval",
        &p("eval.jsonl"),
        "--out",
        &p("head"),
        "--mode",
        "sft",
        "--steps",
        "2",
        "--json",
    ]);
    assert!(line.starts_with(HEAD_LINE), "{line}");
    assert_eq!(json(&o)["steps"], 2);
    // `memory add` infers with the head it just trained: candle again.
    let db = p("m.db");
    let head = p("head");
    let (o, line) = backend_line(&[
        "memory",
        "add",
        "--db",
        &db,
        "--model",
        &m,
        "--user",
        "u",
        "--head",
        &head,
        "--fact",
        "Bob likes tea",
        "--json",
    ]);
    assert!(line.starts_with(HEAD_LINE), "{line}");
    assert_eq!(json(&o)["results"][0]["event"], "ADD");
}

#[test]
fn a_config_file_is_accepted_by_every_command_that_loads_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("athena.toml");
    std::fs::write(
        &cfg,
        format!(
            "model_name = {:?}\nuse_mlx = false\ndevice = \"cpu\"\n",
            base()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let mut all = commands(&dir.path().join("l.npy"));
    all.push(["act", "--fact", "x"].map(String::from).to_vec());
    for cmd in all {
        let args = with(&cmd, &["--config", &cfg]);
        let (o, line) = backend_line(&strs(&args));
        assert!(
            line.starts_with("backend candle (mlx skipped: disabled by use_mlx=false; "),
            "{args:?}: {line}"
        );
        if cmd[0] == "bench" {
            assert_eq!(json(&o)["device_requested"], "cpu");
            assert_eq!(json(&o)["device"], "cpu");
        }
    }
}

#[test]
fn the_default_device_is_auto() {
    let o = athena(&[
        "bench",
        "--model",
        &base(),
        "--use-mlx",
        "false",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Asked for: auto; where it ran: whatever auto resolved to in this build and machine.
    assert_eq!(json(&o)["device_requested"], "auto");
    let ran = json(&o)["device"].as_str().unwrap_or_default().to_string();
    assert!(["cpu", "cuda", "metal"].contains(&ran.as_str()), "{ran}");
    for cmd in [
        "generate", "encode", "logits", "bench", "act", "serve", "load",
    ] {
        let o = athena(&[cmd, "--help"]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            help.contains("default auto: CUDA if built in and present"),
            "{cmd}: {help}"
        );
    }
}

/// A checkpoint without `tokenizer.json` (as converters and the benchmark anchors write them)
/// runs on token ids: `bench` and `logits` work on it; what needs text names the missing file.
#[test]
fn a_checkpoint_without_a_tokenizer_runs_on_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(model_dir("base").join(name), dir.path().join(name)).unwrap();
    }
    let model = dir.path().display().to_string();
    let out = dir.path().join("logits.safetensors");
    let (o, _) = backend_line(&[
        "bench",
        "--model",
        &model,
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "2",
        "--json",
    ]);
    assert!(json(&o)["decode_tok_s"].as_f64().unwrap() > 0.0);
    let out_arg = out.display().to_string();
    backend_line(&[
        "logits", "--model", &model, "--ids", "1,2,3", "--output", &out_arg,
    ]);
    assert!(out.is_file());
    let o = athena(&["encode", "--model", &model, "--text", "hello", "--json"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("tokenizer.json") && e.contains("token ids only"),
        "{e}"
    );
}
