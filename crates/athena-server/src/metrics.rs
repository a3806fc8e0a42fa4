//! The server's Prometheus metrics: request latency and counts by route and status, time to
//! first token, inter-token latency, queue time and prompt tokens. (Generated tokens and the
//! scheduler's gauges come from [`crate::engine::Stats`].)

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Buckets for whole requests and first tokens, in seconds.
const LONG: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Buckets for the time between two tokens, in seconds.
const SHORT: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

/// The metrics, registered in a registry of their own.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    time_to_first_token: Histogram,
    inter_token: Histogram,
    queue_time: Histogram,
    prompt_tokens: IntCounter,
    cancelled_work: IntCounter,
}

/// A metric could not be made or registered (a name or label clash: a bug).
#[derive(Debug, thiserror::Error)]
#[error("registering the server's metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "athena_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "athena_request_duration_seconds",
                "Time from a request's headers to its answer's headers, by route and status",
            )
            .buckets(LONG.to_vec()),
            &["route", "status"],
        )?;
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        };
        let time_to_first_token = histogram(
            "athena_time_to_first_token_seconds",
            "Time from a sequence's submission to its first token",
            LONG,
        )?;
        let inter_token = histogram(
            "athena_inter_token_latency_seconds",
            "Time between two tokens of a sequence",
            SHORT,
        )?;
        let queue_time = histogram(
            "athena_queue_time_seconds",
            "Time a sequence waited before its prefill",
            LONG,
        )?;
        let prompt_tokens = IntCounter::new(
            "athena_prompt_tokens_total",
            "Prompt tokens prefilled by the scheduler",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(time_to_first_token.clone()))?;
        registry.register(Box::new(inter_token.clone()))?;
        registry.register(Box::new(queue_time.clone()))?;
        let cancelled_work = IntCounter::new(
            "athena_cancelled_work_total",
            "Encodings (embeddings, memory actions) stopped because their request went away",
        )?;
        registry.register(Box::new(prompt_tokens.clone()))?;
        registry.register(Box::new(cancelled_work.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_seconds,
            time_to_first_token,
            inter_token,
            queue_time,
            prompt_tokens,
            cancelled_work,
        })
    }

    /// A request to `route` answered `status` after `elapsed`.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.request_seconds
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A sequence's prefill started after waiting `waited`, with `prompt` tokens.
    pub fn prefill(&self, waited: Duration, prompt: usize) {
        self.queue_time.observe(waited.as_secs_f64());
        self.prompt_tokens.inc_by(prompt as u64);
    }

    /// A sequence's first token came `since_submit` after it was submitted.
    pub fn first_token(&self, since_submit: Duration) {
        self.time_to_first_token.observe(since_submit.as_secs_f64());
    }

    /// A later token came `gap` after the one before.
    pub fn next_token(&self, gap: Duration) {
        self.inter_token.observe(gap.as_secs_f64());
    }

    /// A request's encoding stopped because the request went away.
    pub fn cancelled_work(&self) {
        self.cancelled_work.inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Text encoding of gathered families cannot fail on a Vec.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_renders_with_its_counts() {
        let m = Metrics::new().unwrap();
        m.request("/v1/chat/completions", 200, Duration::from_millis(30));
        m.prefill(Duration::from_millis(2), 7);
        m.first_token(Duration::from_millis(20));
        m.next_token(Duration::from_millis(5));
        m.cancelled_work();
        let text = m.render();
        for line in [
            r#"athena_requests_total{route="/v1/chat/completions",status="200"} 1"#,
            r#"athena_request_duration_seconds_count{route="/v1/chat/completions",status="200"} 1"#,
            "athena_time_to_first_token_seconds_count 1",
            "athena_inter_token_latency_seconds_count 1",
            "athena_queue_time_seconds_count 1",
            "athena_prompt_tokens_total 7",
            "athena_cancelled_work_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
