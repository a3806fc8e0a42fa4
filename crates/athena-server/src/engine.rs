//! The scheduler: one thread owns the model's [`SlotBatch`] and decodes every running
//! sequence together, one batched step at a time (continuous batching). Requests join between
//! steps, as soon as a slot is free, and those joining together are prefilled in one forward
//! pass (an idle scheduler first gathers a burst of requests for a few milliseconds); a sequence whose client has gone away is removed before
//! the next step; a finished one leaves at once.
//!
//! Each sequence's sampling, detokenizing and stop logic is the library's
//! [`SequenceGenerator`], the same state machine `athena generate` runs.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use athena::backend::{Slot, SlotBatch};
use athena::generate::{Constraint, FinishReason, GenerateParams, SequenceGenerator, Tokenizer};
use athena::models::olmoe::OlmoeModel;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

/// Prompt tokens prefilled together in one pass at most (a longer prompt still goes alone):
/// joining sequences share the pass over the weights, and the running ones wait for it.
const MAX_PREFILL_TOKENS: usize = 2048;

/// How long an idle scheduler keeps gathering after a request wakes it, while more keep
/// arriving: a burst of requests then starts in one prefill pass, instead of the first alone
/// and the rest in a second pass that the first waits through.
const BURST_GAP: Duration = Duration::from_millis(2);
/// The longest an idle scheduler gathers a burst before it starts.
const BURST_MAX: Duration = Duration::from_millis(10);

/// One sequence to generate: a prompt already checked against the context.
#[derive(Debug)]
pub struct Job {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Budget, sampling and stop strings.
    pub params: GenerateParams,
    /// Added to the logits of these token ids before sampling.
    pub logit_bias: Vec<(u32, f32)>,
    /// The grammar the output is kept to (`response_format`, `tools`), in its initial state.
    pub constraint: Option<Constraint>,
    /// The choice this sequence answers (`n` > 1 sends several jobs on one channel).
    pub index: u32,
    /// Where text and the end go; the job is dropped once the receiver is.
    pub events: UnboundedSender<Event>,
    /// When it was submitted (queue time and time to first token count from here).
    pub submitted: Instant,
}

/// What the scheduler tells a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text of choice `index` (never part of a character or of a stop string).
    Text {
        /// The choice.
        index: u32,
        /// The text.
        text: String,
    },
    /// Choice `index` is finished.
    Done {
        /// The choice.
        index: u32,
        /// Why it ended.
        finish_reason: FinishReason,
        /// Tokens in its prompt.
        prompt_tokens: usize,
        /// Tokens produced.
        completion_tokens: usize,
    },
    /// Choice `index` failed inside the engine.
    Failed {
        /// The choice.
        index: u32,
        /// Why.
        message: String,
    },
}

/// Counters the scheduler keeps, read by `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sequences holding a slot.
    pub running: AtomicUsize,
    /// Sequences waiting for a slot.
    pub waiting: AtomicUsize,
    /// Batched decode steps run.
    pub steps: AtomicU64,
    /// Tokens produced.
    pub tokens: AtomicU64,
    /// Sequences finished normally.
    pub finished: AtomicU64,
    /// Sequences removed because their client went away.
    pub cancelled: AtomicU64,
    /// Sequences failed by an engine error.
    pub failed: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Sequences holding a slot.
    pub running: usize,
    /// Sequences waiting for a slot.
    pub waiting: usize,
    /// Batched decode steps run.
    pub steps: u64,
    /// Tokens produced.
    pub tokens: u64,
    /// Sequences finished normally.
    pub finished: u64,
    /// Sequences removed because their client went away.
    pub cancelled: u64,
    /// Sequences failed by an engine error.
    pub failed: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            running: self.running.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            steps: self.steps.load(Ordering::Relaxed),
            tokens: self.tokens.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The handle requests use to reach the scheduler thread.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    cancel_all: Arc<AtomicBool>,
}

impl Engine {
    /// Starts the scheduler thread on `model`, running at most `max_running` sequences at once
    /// and recording latencies in `metrics`.
    pub fn start(
        model: Arc<OlmoeModel>,
        max_running: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Engine> {
        let (jobs, rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let cancel_all = Arc::new(AtomicBool::new(false));
        let (s, c) = (stats.clone(), cancel_all.clone());
        std::thread::Builder::new()
            .name("athena-scheduler".into())
            .spawn(move || run(&model, rx, &s, &metrics, &c, max_running.max(1)))?;
        Ok(Engine {
            jobs,
            stats,
            cancel_all,
        })
    }

    /// Queues a sequence. Fails only when the scheduler has stopped.
    pub fn submit(&self, job: Job) -> Result<(), SchedulerStopped> {
        self.jobs.send(job).map_err(|_| SchedulerStopped)
    }

    /// The scheduler's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Ends every sequence at its next step (shutdown past its grace period).
    pub fn cancel_all(&self) {
        self.cancel_all.store(true, Ordering::SeqCst);
    }
}

/// The scheduler thread is gone; nothing can be queued.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the scheduler has stopped")]
pub struct SchedulerStopped;

/// A sequence holding a slot.
struct Running {
    /// When its last token came.
    last: Instant,
    slot: Slot,
    next: u32,
    seq: SequenceGenerator,
    job: Job,
}

/// The scheduler loop; returns when every sender is gone and no work is left.
fn run(
    model: &OlmoeModel,
    rx: mpsc::Receiver<Job>,
    stats: &Stats,
    metrics: &Metrics,
    cancel_all: &AtomicBool,
    max_running: usize,
) {
    let (Some(backend), Some(tokenizer)) = (model.model(), model.tokenizer()) else {
        tracing::error!("the scheduler started on a model that is not loaded");
        return;
    };
    let context = backend.args().max_position_embeddings;
    let mut batch = backend.slots();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    loop {
        if running.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
            gather_burst(&rx, &mut waiting);
        }
        while let Ok(job) = rx.try_recv() {
            waiting.push_back(job);
        }
        let before = waiting.len();
        waiting.retain(|j| !j.events.is_closed());
        stats
            .cancelled
            .fetch_add((before - waiting.len()) as u64, Ordering::Relaxed);
        if cancel_all.load(Ordering::SeqCst) {
            for job in waiting.drain(..) {
                fail(&job, "the server is shutting down", stats);
            }
            for r in running.drain(..) {
                batch.remove(r.slot);
                fail(&r.job, "the server is shutting down", stats);
            }
            publish(stats, running.len(), waiting.len());
            continue;
        }

        // Join: the waiting sequences that fit are prefilled together, in one pass.
        let mut group: Vec<Job> = Vec::new();
        let mut group_tokens = 0;
        while running.len() + group.len() < max_running {
            let Some(len) = waiting.front().map(|j| j.prompt.len()) else {
                break;
            };
            if !group.is_empty() && group_tokens + len > MAX_PREFILL_TOKENS {
                break;
            }
            group_tokens += len;
            group.extend(waiting.pop_front());
        }
        if !group.is_empty() {
            // Sequences being prefilled count as running, so that `running == 0` never shows
            // while work is in flight.
            publish(stats, running.len() + group.len(), waiting.len());
            running.extend(join(
                batch.as_mut(),
                tokenizer,
                context,
                group,
                (stats, metrics),
            ));
        }
        // Leave: clients that went away free their slots before the step.
        running.retain(|r| {
            let gone = r.job.events.is_closed();
            if gone {
                batch.remove(r.slot);
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(slot = r.slot, "client went away; slot freed");
            }
            !gone
        });
        publish(stats, running.len(), waiting.len());
        if running.is_empty() {
            continue;
        }

        // One batched step for every running sequence.
        let steps: Vec<(Slot, u32)> = running.iter().map(|r| (r.slot, r.next)).collect();
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| batch.step(&steps)));
        let rows = match result {
            Ok(Ok(rows)) if rows.len() == steps.len() => rows,
            other => {
                let message = match other {
                    Ok(Ok(_)) => "the backend returned the wrong number of rows".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "the engine panicked during a decode step".to_string(),
                };
                tracing::error!(sequences = steps.len(), "decode step failed: {message}");
                for r in running.drain(..) {
                    batch.remove(r.slot);
                    fail(&r.job, &message, stats);
                }
                // A panic may leave the batch in any state: start a fresh one.
                batch = backend.slots();
                publish(stats, running.len(), waiting.len());
                continue;
            }
        };
        stats.steps.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(batch = steps.len(), elapsed = ?start.elapsed(), "decode step");
        let mut still = Vec::with_capacity(running.len());
        for (mut r, mut row) in running.drain(..).zip(rows) {
            let next = advance(&mut r.seq, tokenizer, &r.job, &mut row, stats);
            metrics.next_token(r.last.elapsed());
            r.last = Instant::now();
            match next {
                Some(next) => {
                    r.next = next;
                    still.push(r);
                }
                None => batch.remove(r.slot),
            }
        }
        running = still;
        publish(stats, running.len(), waiting.len());
    }
}

/// After an idle scheduler's first request: takes the requests that follow within
/// [`BURST_GAP`] of each other, for at most [`BURST_MAX`].
fn gather_burst(rx: &mpsc::Receiver<Job>, waiting: &mut VecDeque<Job>) {
    let until = Instant::now() + BURST_MAX;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match rx.recv_timeout(BURST_GAP.min(left)) {
            Ok(job) => waiting.push_back(job),
            Err(_) => return,
        }
    }
}

/// The gauges `/health` and `/metrics` read.
fn publish(stats: &Stats, running: usize, waiting: usize) {
    stats.running.store(running, Ordering::Relaxed);
    stats.waiting.store(waiting, Ordering::Relaxed);
}

fn fail(job: &Job, message: &str, stats: &Stats) {
    stats.failed.fetch_add(1, Ordering::Relaxed);
    let _ = job.events.send(Event::Failed {
        index: job.index,
        message: message.to_string(),
    });
}

/// Prefills new sequences into slots (one forward pass where the backend can) and takes each
/// one's first token; those already finished (or failed) are not returned.
fn join(
    batch: &mut dyn SlotBatch,
    tokenizer: &Tokenizer,
    context: usize,
    jobs: Vec<Job>,
    (stats, metrics): (&Stats, &Metrics),
) -> Vec<Running> {
    let mut started = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        metrics.prefill(job.submitted.elapsed(), job.prompt.len());
        let constraint = job.constraint.take();
        match SequenceGenerator::new(&job.prompt, &job.params, context) {
            Ok(seq) => started.push((
                job,
                constraint
                    .into_iter()
                    .fold(seq, |s, c| s.with_constraint(c)),
            )),
            Err(e) => fail(&job, &e.to_string(), stats),
        }
    }
    let prompts: Vec<&[u32]> = started.iter().map(|(j, _)| j.prompt.as_slice()).collect();
    let inserted = catch_unwind(AssertUnwindSafe(|| batch.insert_many(&prompts)));
    let inserted = match inserted {
        Ok(rows) if rows.len() == started.len() => rows,
        other => {
            let message = match other {
                Ok(_) => "the backend returned the wrong number of rows",
                Err(_) => "the engine panicked during prefill",
            };
            for (job, _) in &started {
                fail(job, message, stats);
            }
            return Vec::new();
        }
    };
    let mut running = Vec::with_capacity(started.len());
    for ((job, mut seq), result) in started.into_iter().zip(inserted) {
        let (slot, mut logits) = match result {
            Ok(x) => x,
            Err(e) => {
                fail(&job, &e.to_string(), stats);
                continue;
            }
        };
        let next = advance(&mut seq, tokenizer, &job, &mut logits, stats);
        metrics.first_token(job.submitted.elapsed());
        match next {
            Some(next) => running.push(Running {
                last: Instant::now(),
                slot,
                next,
                seq,
                job,
            }),
            None => batch.remove(slot),
        }
    }
    running
}

/// Feeds one row of logits to a sequence and tells its client; the next token, or `None`
/// when the sequence is finished.
fn advance(
    seq: &mut SequenceGenerator,
    tokenizer: &Tokenizer,
    job: &Job,
    logits: &mut [f32],
    stats: &Stats,
) -> Option<u32> {
    for &(id, bias) in &job.logit_bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += bias;
        }
    }
    let before = seq.tokens().len();
    let step = match seq.advance(tokenizer, logits) {
        Ok(s) => s,
        Err(e) => {
            fail(job, &e.to_string(), stats);
            return None;
        }
    };
    stats
        .tokens
        .fetch_add((seq.tokens().len() - before) as u64, Ordering::Relaxed);
    if !step.text.is_empty() {
        let _ = job.events.send(Event::Text {
            index: job.index,
            text: step.text,
        });
    }
    if let Some(finish_reason) = step.finished {
        stats.finished.fetch_add(1, Ordering::Relaxed);
        let _ = job.events.send(Event::Done {
            index: job.index,
            finish_reason,
            prompt_tokens: seq.prompt_tokens(),
            completion_tokens: seq.tokens().len(),
        });
        return None;
    }
    step.next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(index: u32) -> Job {
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        Job {
            prompt: vec![1],
            params: GenerateParams::default(),
            logit_bias: Vec::new(),
            constraint: None,
            index,
            events,
            submitted: Instant::now(),
        }
    }

    #[test]
    fn a_burst_is_gathered_then_the_scheduler_starts() {
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            tx.send(job(i)).unwrap();
        }
        let mut waiting = VecDeque::new();
        waiting.push_back(rx.recv().unwrap());
        let start = Instant::now();
        gather_burst(&rx, &mut waiting);
        // Nothing more arrives: it stops after one gap, with the sender still connected (the
        // bound tells a return from a wait on the sender, not a speed).
        assert!(start.elapsed() < Duration::from_secs(60));
        let gathered: Vec<u32> = waiting.iter().map(|j| j.index).collect();
        assert_eq!(gathered, [0, 1, 2]);
        tx.send(job(3)).unwrap();
        assert_eq!(
            rx.recv().unwrap().index,
            3,
            "a later request waits for the next round"
        );
    }
}
