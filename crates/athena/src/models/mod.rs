//! The model layer the agent talks to: [`olmoe::OlmoeModel`] loads OLMoE on the best backend
//! available, encodes text, and (on the trainable candle path) attaches the
//! [`action_head::MemoryActionHead`] that decides what to do with a new fact.

pub mod action_head;
pub mod cancel;
pub mod encode_batches;
pub mod olmoe;
