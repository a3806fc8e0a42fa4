//! OLMoE on candle, in transformers' vocabulary, file by file as in
//! [`modeling_olmoe.py`](https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/models/olmoe/modeling_olmoe.py):
//! [`norm`] (`OlmoeRMSNorm`), [`attention`] (`OlmoeAttention`), [`layer`]
//! (`OlmoeDecoderLayer`), [`model`] (`OlmoeForCausalLM`); the sparse MoE block is
//! [`super::moe`].
//!
//! Those files are the reference path. The fast paths hang off it, each in a file of its own
//! that adds methods to the reference types: [`decode_attention`] (one query per sequence on
//! the CPU, taken inside `Attention::attend`), [`fused_attention`] (the fused GPU prologue,
//! taken at the top of `Attention::forward`), and [`ragged`] (several sequences' new tokens
//! laid end to end, each attending over its own cache: the server's continuous batching).
//!
//! Weights are immutable; the KV cache lives in a [`super::session::Session`].

mod attention;
mod decode_attention;
mod fused_attention;
mod layer;
mod mask;
mod model;
mod norm;
mod qkv_join;
mod ragged;

pub use model::Olmoe;
