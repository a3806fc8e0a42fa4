//! Backends that run OLMoE. [`candle`] is the trainable path.

pub mod candle;
