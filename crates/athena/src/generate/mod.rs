//! Generation: everything between text and token ids, and between logits and the next token.
//!
//! - [`tokenizer`] loads `tokenizer.json`, `tokenizer_config.json` and the eos ids of a model
//!   directory into a [`Tokenizer`].
//! - [`chat`] renders conversations with the checkpoint's Jinja chat template ([`ChatTemplate`]),
//!   in a sandbox that bounds both work and output.
//! - [`sampler`] turns one row of logits into the next token ([`Sampler`], [`SamplingParams`]),
//!   applying the processors in the order Hugging Face `generate` applies them.
//! - [`constraint`] keeps a sequence's output inside a JSON schema or a Lark grammar
//!   ([`Grammars`], [`Constraint`]), through llguidance's token masks.
//! - [`tool_call`] is the text format of tool calls, its grammar and its parse.
//! - [`stream`] turns generated ids into text without ever splitting a character
//!   ([`TokenStream`]) and holds back text that may be the start of a stop string
//!   ([`StopMatcher`]).
//!
//! The generation loop that drives the model with these pieces lives beside them.

pub mod chat;
pub mod constraint;
pub mod generation;
pub mod sampler;
pub mod stream;
pub mod tokenizer;
pub mod tool_call;

mod pyjson;
mod template_budget;

pub use chat::{ChatMessage, ChatTemplate, SpecialTokens, DEFAULT_CHAT_TEMPLATE};
pub use constraint::{Constraint, Grammar, Grammars, MAX_GRAMMAR_BYTES};
pub use generation::{
    generate, generate_constrained, generate_while, Advance, FinishReason, GenerateParams,
    Generation, SequenceGenerator,
};
pub use sampler::{argmax, Sampler, SamplingParams};
pub use stream::{StopMatcher, TokenStream};
pub use tokenizer::Tokenizer;
