//! The checkpoint's header does not grow with the steps, its history reads back, and a
//! history that is not the checkpoint's is refused.

use candle_core::Device;

use super::*;
use crate::train::optim::AdamWParams;

fn head() -> MemoryActionHead {
    let config = ActionHeadConfig {
        proj_dim: 4,
        ..ActionHeadConfig::default()
    };
    MemoryActionHead::new(config, 6, &Device::Cpu).unwrap()
}

/// A log of step `step`; learning rates that JSON carries exactly.
fn log(step: usize) -> StepLog {
    StepLog {
        step,
        loss: 0.1 * step as f32,
        accuracy: 0.5,
        lr: 0.25,
        eval_accuracy: step.is_multiple_of(3).then_some(0.75),
        ..StepLog::empty()
    }
}

/// Takes `progress` forward to `step`, an epoch ending every 4 steps.
fn advance(progress: &mut Progress, step: usize) {
    while progress.step < step {
        progress.step += 1;
        progress.history.push(log(progress.step));
        if progress.step.is_multiple_of(4) {
            progress.epoch += 1;
            progress.epochs.push(EpochLog {
                epoch: progress.epoch,
                end_step: progress.step,
                seconds: 0.5,
                encode_seconds: 0.25,
                encoded_texts: 3,
                speedup_vs_first: None,
            });
        }
        progress.cursor = progress.step % progress.order.len();
        progress.rng = progress
            .rng
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(1);
        progress.order.rotate_left(1);
    }
}

fn header_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

#[test]
fn the_header_size_is_the_same_at_every_step_and_the_run_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let head = head();
    let opt = AdamW::new(sorted_vars(&head), AdamWParams::default()).unwrap();
    let cfg = TrainConfig::default();
    let mut progress = Progress::start(10, 7, 0.125, 100);
    let mut writer = Writer::new(dir.path());
    let mut sizes = Vec::new();
    for step in [1, 2, 9, 10, 64, 100] {
        advance(&mut progress, step);
        writer.write(&head, &opt, None, &cfg, &progress).unwrap();
        sizes.push(header_len(writer.path()));
        let back = Checkpoint::read(writer.path()).unwrap();
        assert_eq!(back.progress, progress);
        assert_eq!(back.adam_t, opt.t());
    }
    assert!(sizes.iter().all(|&s| s == sizes[0]), "{sizes:?}");
    let lines = std::fs::read_to_string(dir.path().join(HISTORY_FILE)).unwrap();
    assert_eq!(lines.lines().count(), 100);

    // A new writer (a resumed process) rewrites the history whole; lines after the
    // checkpoint's, as a crash between the two files leaves, are ignored.
    let mut resumed = Writer::new(dir.path());
    resumed.write(&head, &opt, None, &cfg, &progress).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(HISTORY_FILE))
        .unwrap();
    writeln!(file, "{}", serde_json::to_string(&log(101)).unwrap()).unwrap();
    assert_eq!(Checkpoint::read(writer.path()).unwrap().progress, progress);
}

#[test]
fn a_history_that_is_not_the_checkpoints_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let head = head();
    let opt = AdamW::new(sorted_vars(&head), AdamWParams::default()).unwrap();
    let cfg = TrainConfig::default();
    let mut progress = Progress::start(10, 7, 0.125, 100);
    advance(&mut progress, 5);
    let mut writer = Writer::new(dir.path());
    writer.write(&head, &opt, None, &cfg, &progress).unwrap();
    let history = dir.path().join(HISTORY_FILE);
    let text = std::fs::read_to_string(&history).unwrap();
    std::fs::write(&history, text.replace("\"step\":2", "\"step\":3")).unwrap();
    let err = Checkpoint::read(writer.path()).err().unwrap().to_string();
    assert!(err.contains(HISTORY_FILE), "{err}");
    std::fs::write(&history, &text[..text.len() / 2]).unwrap();
    let err = Checkpoint::read(writer.path()).err().unwrap().to_string();
    assert!(err.contains("shorter"), "{err}");
}

#[test]
fn a_missing_checkpoint_says_none_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::read(&dir.path().join(CHECKPOINT_FILE))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("no checkpoint"), "{err}");
}
