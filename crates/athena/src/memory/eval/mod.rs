//! How well a bank keeps memory: fact streams with their ground truth ([`stream`], drawn
//! by [`synth`]), replaying a stream into a bank ([`replay`]), the end state's precision,
//! recall and exact match and the per-operation accuracy ([`metrics`]), and training examples
//! for the action head drawn from streams with the candidates retrieval gives
//! ([`examples`]).

pub mod examples;
pub mod metrics;
pub mod replay;
pub mod stream;
pub mod synth;
