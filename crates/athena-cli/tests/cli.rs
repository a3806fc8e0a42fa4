//! The `athena` binary end to end on the committed fixtures.

use std::process::Command;

use candle_core::{Device, Tensor};

mod support;
use support::{athena, model_dir, stderr};

#[test]
fn logits_writes_the_reference_logits_as_npy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let model = model_dir("gqa_normtopk");
    let reference =
        candle_core::safetensors::load(model.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<i64> = reference["ids_a"].to_vec1().unwrap();
    let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let o = athena(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        &ids,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = Tensor::read_npy(&out).unwrap();
    let want = &reference["logits_a"];
    assert_eq!(got.dims(), want.dims());
    let d: f32 = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(d <= 1e-4, "max |Δlogit| {d}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // `athena info | true`: the reader is gone before the first line is written (closed
    // before the child starts, so no scheduling lets a write in first).
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_athena"))
        .args(["info", "--model", model_dir("base").to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    // Ended by SIGPIPE, as `cat` or `grep` would be.
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?} {e}", o.status);
}

#[test]
fn info_reports_architecture_parameters_and_bytes() {
    let o = athena(&[
        "info",
        "--model",
        model_dir("sharded_f16").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "OlmoeForCausalLM");
    assert_eq!(v["dtype"], "float16");
    assert_eq!(v["files"], 3);
    assert!(v["params_active_per_token"].as_u64().unwrap() < v["params_total"].as_u64().unwrap());
    // f16 storage: two bytes per parameter.
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        2 * v["params_total"].as_u64().unwrap()
    );
}

#[test]
fn bench_prints_one_json_line_with_the_figures() {
    let base = model_dir("base");
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--model",
            base.to_str().unwrap(),
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "4",
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = athena(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let stdout = String::from_utf8(o.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1);
        serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap()
    };
    let v = bench(&[]);
    for key in ["prefill_tok_s", "decode_tok_s", "load_s", "peak_rss_mb"] {
        assert!(v[key].as_f64().is_some(), "{key} missing in {v}");
    }
    // A warm-up pass runs first unless asked not to, and the report says which.
    assert_eq!(v["warmup"], true);
    let v = bench(&["--no-warmup"]);
    assert_eq!(v["warmup"], false);
    assert!(v["prefill_tok_s"].as_f64().is_some_and(|t| t > 0.0));
}

#[test]
fn generate_streams_text_and_stops_at_max_tokens() {
    let o = athena(&[
        "generate",
        "--model",
        model_dir("base").to_str().unwrap(),
        "--prompt",
        "The agent",
        "--max-tokens",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("5 generated"), "{}", stderr(&o));
    let chat = athena(&[
        "generate",
        "--model",
        model_dir("base").to_str().unwrap(),
        "--prompt",
        "Hi",
        "--chat",
        "--max-tokens",
        "3",
        "--temperature",
        "0.7",
        "--seed",
        "1",
    ]);
    assert!(chat.status.success(), "{}", stderr(&chat));
}

#[test]
fn generate_keeps_to_a_json_schema_or_a_lark_grammar() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["ok", "n"], "additionalProperties": false}"#,
    )
    .unwrap();
    let base = model_dir("base");
    for seed in ["1", "2", "3"] {
        let o = athena(&[
            "generate",
            "--model",
            base.to_str().unwrap(),
            "--prompt",
            "JSON:",
            "--temperature",
            "1",
            "--seed",
            seed,
            "--json-schema",
            schema.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
        assert!(v["ok"].is_boolean(), "{text}");
        assert!((1..=9).contains(&v["n"].as_i64().unwrap()), "{text}");
    }
    let grammar = dir.path().join("g.lark");
    std::fs::write(&grammar, "start: \"yes\" | \"no\"\n").unwrap();
    let o = athena(&[
        "generate",
        "--model",
        base.to_str().unwrap(),
        "--prompt",
        "?",
        "--temperature",
        "1",
        "--grammar",
        grammar.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(["yes", "no"].contains(&text.trim()), "{text}");
    std::fs::write(&schema, r#"{"type": "nonsense"}"#).unwrap();
    let o = athena(&[
        "generate",
        "--model",
        base.to_str().unwrap(),
        "--prompt",
        "?",
        "--json-schema",
        schema.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unsupported grammar"), "{}", stderr(&o));
}

/// A copy of fixture `name` in a temporary directory, `chat_template` replaced by `template`.
fn fixture_with_chat_template(name: &str, template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.path().join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["chat_template"] = serde_json::Value::from(template);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    dir
}

#[test]
fn a_chat_template_whose_values_double_fails_at_the_template_limit() {
    let probe = "{% set ns = namespace(s='aaaaaaaaaaaaaaaa') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
    let model = fixture_with_chat_template("base", probe);
    let o = athena(&[
        "generate",
        "--model",
        model.path().to_str().unwrap(),
        "--prompt",
        "Hi",
        "--chat",
        "--max-tokens",
        "3",
    ]);
    // An error exit naming the file and the limit, not an abort.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tokenizer_config.json"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("exceed the template limit"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_input_fails_with_a_message_naming_what_is_wrong() {
    let base = model_dir("base");
    let base = base.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npy");
    let out = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "logits", "--model", base, "--ids", "1,99999", "--output", out,
            ],
            "99999",
        ),
        (vec!["bench", "--model", base, "--batch", "0"], "--batch"),
        (vec!["bench", "--model", base, "--batch", "5000"], "--batch"),
        (
            vec![
                "logits",
                "--model",
                "/no/such/model",
                "--ids",
                "1",
                "--output",
                out,
            ],
            "/no/such/model",
        ),
        (
            vec![
                "logits",
                "--model",
                base,
                "--ids",
                "1",
                "--output",
                "/no/such/dir/x.npy",
            ],
            "/no/such/dir",
        ),
        (
            vec![
                "generate",
                "--model",
                base,
                "--prompt",
                "x",
                "--temperature=-1",
            ],
            "temperature",
        ),
        (
            vec![
                "generate", "--model", base, "--prompt", "x", "--top-p", "1.5",
            ],
            "top_p",
        ),
        (
            vec!["bench", "--model", base, "--prompt-tokens", "4000"],
            "context",
        ),
        (
            vec!["bench", "--model", base, "--int8-activations=yes"],
            "--int8-activations",
        ),
    ] {
        let o = athena(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: `{needle}` not in: {e}");
        assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
    }
    // A file that is not there is named once, with the system's reason once.
    let o = athena(&[
        "act",
        "--model",
        base,
        "--fact",
        "x",
        "--memories",
        "/no/such/memories.jsonl",
    ]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert_eq!(e.matches("/no/such/memories.jsonl").count(), 1, "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
}

#[test]
fn load_reports_the_backend_and_every_attempt_as_json() {
    let base = model_dir("base");
    let o = athena(&["load", "--model", base.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attempts"][0]["backend"], "mlx");
    if v["attempts"][0]["outcome"] == "skipped" {
        // A build without the MLX backend: candle, with the action head.
        assert_eq!(
            v["attempts"][0]["reason"],
            "not compiled in (build with --features mlx)"
        );
        assert_eq!(v["backend"], "candle");
        assert_eq!(v["action_head"], true);
        assert_eq!(v["attempts"][1]["outcome"], "loaded");
    } else {
        // Built with MLX: it is tried first and loads, without an action head.
        assert_eq!(v["attempts"][0]["outcome"], "loaded");
        assert_eq!(v["backend"], "mlx");
        assert_eq!(v["action_head"], false);
    }

    let o = athena(&[
        "load",
        "--model",
        base.to_str().unwrap(),
        "--use-mlx",
        "false",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attempts"][0]["reason"], "disabled by use_mlx=false");
    assert_eq!(v["backend"], "candle");
    assert_eq!(v["action_head"], true);

    // A config file, overridden by flags.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("athena.toml");
    std::fs::write(
        &cfg,
        format!(
            "model_name = {:?}\nuse_mlx = false\n",
            base.to_str().unwrap()
        ),
    )
    .unwrap();
    let o = athena(&["load", "--config", cfg.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = athena(&["load", "--model", "/no/such/olmoe", "--json"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("error: No inference backend available (MLX and candle both unavailable)"),
        "{e}"
    );
    // A JSON consumer gets a line to parse on failure too.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["loaded"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("No inference backend available"),
        "{v}"
    );
}

#[test]
fn encode_prints_one_embedding_per_text() {
    let o = athena(&[
        "encode",
        "--model",
        model_dir("base").to_str().unwrap(),
        "--text",
        "hello",
        "--text",
        "the agent",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].as_array().unwrap().len(), 64);
}

#[test]
fn act_decides_with_the_head_and_refuses_bad_memories() {
    let dir = tempfile::tempdir().unwrap();
    let mem = dir.path().join("memories.jsonl");
    std::fs::write(&mem, "{\"id\": \"m1\", \"text\": \"The user lives in Paris.\"}\n\n{\"id\": \"m2\", \"text\": \"The user likes tea.\"}\n").unwrap();
    let base = model_dir("base");
    let args = [
        "act",
        "--model",
        base.to_str().unwrap(),
        "--use-mlx",
        "false",
        "--fact",
        "The user moved to Rome.",
        "--memories",
        mem.to_str().unwrap(),
        "--json",
    ];
    let o = athena(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(["ADD", "UPDATE", "DELETE", "NOOP"].contains(&v["op"].as_str().unwrap()));
    assert_eq!(v["probabilities"].as_object().unwrap().len(), 4);
    // Deterministic: the same seed gives the same decision.
    let again = athena(&args);
    assert_eq!(o.stdout, again.stdout);

    std::fs::write(
        &mem,
        "{\"id\": \"m1\", \"text\": \"a\"}\n{\"id\": \"m1\"}\n",
    )
    .unwrap();
    let o = athena(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("memories.jsonl") && e.contains("line 2"), "{e}");
}

#[test]
fn train_head_trains_saves_and_act_uses_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (n, seed, file) in [("120", "1", "train.jsonl"), ("40", "2", "eval.jsonl")] {
        let o = athena(&["synth-memory", "--n", n, "--seed", seed, "--out", &p(file)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let base = model_dir("base");
    let base = base.to_str().unwrap();
    let args = [
        "train-head",
        "--model",
        base,
        "--use-mlx",
        "false",
        "--train",
        &p("train.jsonl"),
        "--eval",
        &p("eval.jsonl"),
        "--out",
        &p("head"),
        "--mode",
        "sft",
        "--steps",
        "60",
        "--lr",
        "1e-2",
        "--json",
    ];
    let o = athena(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in ["eval_accuracy", "eval_reward", "steps", "seconds"] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    // Training on the synthetic task beats chance (25%) on held-out examples.
    assert!(v["eval_accuracy"].as_f64().unwrap() > v["initial_eval_accuracy"].as_f64().unwrap());
    let log = std::fs::read_to_string(dir.path().join("head/train_log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 60);
    let o = athena(&[
        "act",
        "--model",
        base,
        "--use-mlx",
        "false",
        "--head",
        &p("head"),
        "--fact",
        "Alice moved to Rome.",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A bad training line is refused with its number; a negative β too.
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"fact\": \"x\", \"memories\": [], \"label\": {\"op\": \"JUMP\"}}\n",
    )
    .unwrap();
    // (Into another directory: `head` now holds a finished head.)
    let other = p("other");
    let out_at = args.iter().position(|a| *a == "--out").unwrap() + 1;
    let mut bad = args.to_vec();
    bad[out_at] = &other;
    let train_at = bad.iter().position(|a| *a == "--train").unwrap() + 1;
    let bad_path = p("bad.jsonl");
    bad[train_at] = &bad_path;
    let o = athena(&bad);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("line 1") && stderr(&o).contains("JUMP"),
        "{}",
        stderr(&o)
    );
    let mut beta = args.to_vec();
    beta[out_at] = &other;
    let mode_at = beta.iter().position(|a| *a == "--mode").unwrap() + 1;
    beta[mode_at] = "grpo";
    beta.push("--beta=-1");
    let o = athena(&beta);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("beta"), "{}", stderr(&o));
}

#[test]
fn train_head_keeps_a_finished_head_unless_told_and_resumes_only_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (n, seed, file) in [("40", "1", "train.jsonl"), ("20", "2", "eval.jsonl")] {
        let o = athena(&["synth-memory", "--n", n, "--seed", seed, "--out", &p(file)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let base = model_dir("base");
    let (train, eval, out) = (p("train.jsonl"), p("eval.jsonl"), p("head"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train-head",
            "--model",
            base.to_str().unwrap(),
            "--use-mlx",
            "false",
            "--train",
            &train,
            "--eval",
            &eval,
            "--out",
            &out,
            "--mode",
            "sft",
            "--steps",
            "4",
            "--eval-every",
            "0",
        ];
        args.extend_from_slice(extra);
        athena(&args)
    };

    // Resuming before any checkpoint was written fails, saying so once.
    let o = run(&["--resume"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no checkpoint"), "{e}");
    assert_eq!(e.matches("checkpoint.safetensors").count(), 1, "{e}");

    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let weights = dir.path().join("head/head.safetensors");
    let trained = std::fs::read(&weights).unwrap();

    // A second run into the finished head is refused, and leaves it as it was ...
    let o = run(&["--seed", "9"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--overwrite") && e.contains("already holds"),
        "{e}"
    );
    assert_eq!(std::fs::read(&weights).unwrap(), trained);

    // ... unless told to replace it.
    let o = run(&["--seed", "9", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(&weights).unwrap(), trained);
}
