//! athena's `tracing` events at INFO and above, forwarded to Python's `logging` under the
//! `athena` logger with the words of the Rust log (`MLX skipped: ...`, `Loading OLMoE via
//! candle: ...`, the error of a load that found no backend).

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The name of the Python logger the events go to.
pub const LOGGER: &str = "athena";

/// Forwards each event to `logging.getLogger("athena")`.
struct PythonLogging;

/// An event's message, followed by its other fields as `name=value`.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

/// Python's number of a tracing level.
fn python_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = MessageText::default();
        event.record(&mut text);
        let level = python_level(event.metadata().level());
        // Once the interpreter is finalizing there is no logger to write to.
        Python::try_attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", (LOGGER,)))
                .and_then(|logger| logger.call_method1("log", (level, text.0)));
            if let Err(e) = logged {
                e.print(py);
            }
        });
    }
}

/// Sends athena's events to Python's logging, unless another subscriber is already set.
pub fn install() {
    let subscriber = tracing_subscriber::registry()
        .with(PythonLogging.with_filter(Targets::new().with_target("athena", Level::INFO)));
    // Another subscriber (an embedding program's) keeps the events.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
