//! SIGKILL at random points during `athena memory add` and `import`, at least 50 times, on
//! the shipped fixture model: after every kill `athena memory check` passes (every memory has
//! its history, no history row points at nothing, the file opens).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use athena::models::action_head::{ActionHeadConfig, MemoryActionHead};

/// How many runs must be killed before they finish.
const KILLS: usize = 50;
/// Most runs tried to get there.
const MAX_ROUNDS: usize = 200;

fn model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models/base")
        .display()
        .to_string()
}

/// A small xorshift generator: the kill points vary run to run, and the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check(db: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_athena"))
        .args(["memory", "check", "--db", db, "--json"])
        .output()
        .expect("check runs");
    assert!(
        o.status.success(),
        "check failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn conversation(path: &Path, round: usize) {
    let mut lines = String::new();
    for i in 0..200 {
        let user = ["ann", "ben"][i % 2];
        let line = serde_json::json!({
            "user_id": user,
            "role": if i % 5 == 4 { "assistant" } else { "user" },
            "content": format!("{user} fact {} of round {round}: likes item {}", i / 2, i % 7),
        });
        lines.push_str(&format!("{line}\n"));
    }
    std::fs::write(path, lines).expect("write");
}

#[test]
fn sigkill_never_leaves_a_half_applied_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("m.db").display().to_string();
    let m = model();
    let head = dir.path().join("head");
    MemoryActionHead::new(ActionHeadConfig::default(), 64, &candle_core::Device::Cpu)
        .expect("head")
        .save(&head)
        .expect("save");
    let head = head.display().to_string();
    let seed = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("kill seed {seed}");
    let mut rng = Rng(seed);
    let command = |round: usize| {
        let file = dir.path().join(format!("conv{round}.jsonl"));
        conversation(&file, round);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_athena"));
        cmd.args(["memory"]);
        if round.is_multiple_of(2) {
            cmd.args(["import", file.to_str().expect("utf-8"), "--batch-size", "4"]);
        } else {
            cmd.args(["add", "--user", "ann"]);
            for i in 0..40 {
                cmd.args(["--fact", &format!("ann add fact {i} of round {round}")]);
            }
        }
        cmd.args(["--db", &db, "--model", &m, "--use-mlx", "false", "--json"]);
        if round % 4 < 2 {
            cmd.arg("--no-infer");
        } else {
            cmd.args(["--head", &head]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    };
    // How long an uninterrupted run takes: the kills fall anywhere within it.
    let started = Instant::now();
    assert!(command(MAX_ROUNDS).status().expect("runs").success());
    let full = started.elapsed().as_millis().max(20) as u64;
    check(&db);
    let (mut killed, mut rounds) = (0, 0);
    while killed < KILLS && rounds < MAX_ROUNDS {
        let mut child = command(rounds).spawn().expect("spawn");
        rounds += 1;
        std::thread::sleep(Duration::from_millis(rng.next() % full));
        // SAFETY: kill(2) on the child's own pid, which has not been waited for yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let status = child.wait().expect("wait");
        if !status.success() {
            killed += 1;
        }
        check(&db);
    }
    eprintln!("{killed} of {rounds} runs killed mid-way (an uninterrupted one takes {full} ms)");
    assert!(
        killed >= KILLS,
        "only {killed} of {rounds} runs were killed mid-way"
    );
}
