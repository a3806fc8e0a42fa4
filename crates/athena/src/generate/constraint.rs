//! Constrained decoding: a sequence's output kept inside a JSON schema or a Lark grammar, token
//! by token, through [llguidance](https://github.com/guidance-ai/llguidance).
//!
//! [`Grammars`] is built once per tokenizer (it holds llguidance's token trie, which takes a
//! while to build) and shared; [`Grammars::compile`] turns a [`Grammar`] into a
//! [`Constraint`], one per sequence. Before each token the constraint gives the set of tokens
//! that keep the output valid ([`Constraint::allowed`]); the sampler draws only from those
//! ([`super::Sampler::sample_allowed`]); the token drawn is fed back with
//! [`Constraint::commit`]. An end-of-sequence token is allowed only where the grammar accepts
//! the text so far, and once the grammar admits no further byte the sequence ends.
//!
//! JSON schemas are compiled to compact JSON (`", "` between items, `": "` after keys, no other
//! whitespace), so that generation under a schema cannot wander off into whitespace.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{token_bytes_from_tokenizer_json, Matcher, ParserFactory};
use serde_json::{json, Value};

use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};

/// Longest grammar accepted, in bytes: a Lark text, or a JSON schema as compact JSON.
pub const MAX_GRAMMAR_BYTES: usize = 64 * 1024;

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this JSON schema (the subset llguidance implements: objects, arrays,
    /// strings with patterns and formats, numbers with ranges, enums, `anyOf`, local `$ref`s).
    JsonSchema(Value),
    /// Text of this grammar, in llguidance's Lark dialect (which can embed JSON schemas with
    /// `%json { ... }`).
    Lark(String),
}

impl Grammar {
    /// The grammar as llguidance takes it; a grammar past [`MAX_GRAMMAR_BYTES`] is refused.
    fn to_llguidance(&self) -> Result<TopLevelGrammar> {
        let size = match self {
            Grammar::JsonObject => 0,
            Grammar::JsonSchema(schema) => serde_json::to_vec(schema)
                .map(|v| v.len())
                .map_err(|e| Error::grammar(format!("the schema is not serializable: {e}")))?,
            Grammar::Lark(text) => text.len(),
        };
        if size > MAX_GRAMMAR_BYTES {
            return Err(Error::grammar(format!(
                "the grammar is {size} bytes; at most {MAX_GRAMMAR_BYTES}"
            )));
        }
        Ok(match self {
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(json!({"type": "object"})))
            }
            Grammar::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(Error::grammar(
                        "a JSON schema must be an object (or a boolean)",
                    ));
                }
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        })
    }
}

/// `schema` with llguidance's layout options: compact JSON with Python's separators. A schema
/// that sets its own `x-guidance` options keeps them.
pub(super) fn compact(schema: Value) -> Value {
    let options = json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    });
    match schema {
        Value::Object(mut map) => {
            map.entry("x-guidance").or_insert(options);
            Value::Object(map)
        }
        // `true` allows any JSON value; `false` none (llguidance refuses it).
        Value::Bool(true) => json!({"x-guidance": options}),
        other => other,
    }
}

/// Runs a call into llguidance, turning a panic inside it into an error.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| Error::internal("constraint", format!("llguidance panicked in {what}")))
}

/// The token trie of one tokenizer and the grammar compiler over it; build once, share, and
/// compile a [`Constraint`] per sequence.
pub struct Grammars {
    factory: ParserFactory,
    vocab_size: usize,
}

impl fmt::Debug for Grammars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grammars")
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl Grammars {
    /// The compiler for `tokenizer`'s tokens, with masks over `vocab_size` ids (the model's
    /// vocabulary, which may be larger than the tokenizer's; the ids past it are never allowed).
    /// The tokenizer's end-of-sequence ids end a constrained sequence; a tokenizer without one is
    /// an error, since a grammar could then never end the output.
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Grammars> {
        let _span = tracing::info_span!("Grammars::new", vocab_size).entered();
        let tok_env = token_env(tokenizer, vocab_size)?;
        let mut factory = guarded("building the grammar compiler", || {
            ParserFactory::new_simple(&tok_env)
        })?
        .map_err(|e| {
            Error::tokenizer(
                "tokenizer.json",
                format!("building the grammar compiler: {e}"),
            )
        })?;
        factory.quiet();
        *factory.limits_mut() = ParserLimits {
            // Messages name the grammar and the state, not the whole token history.
            verbose_errors: false,
            ..ParserLimits::default()
        };
        Ok(Grammars {
            factory,
            vocab_size,
        })
    }

    /// The size of the masks: the model's vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Compiles `grammar` into a fresh constraint. A grammar or schema that llguidance refuses
    /// (a syntax error, a keyword it does not implement, one past its size and work limits) is
    /// [`Error::Grammar`] with llguidance's reason.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint> {
        let top = grammar.to_llguidance()?;
        let parser = guarded("compiling the grammar", || self.factory.create_parser(top))?
            .map_err(|e| Error::grammar(first_line(&e.to_string())))?;
        let matcher = guarded("starting the grammar", || Matcher::new(Ok(parser)))?;
        if let Some(e) = matcher.get_error() {
            return Err(Error::grammar(first_line(&e)));
        }
        Ok(Constraint {
            matcher,
            mask: None,
        })
    }
}

/// The byte string of every token id below `vocab_size`, in a trie, with the tokenizer's
/// end-of-sequence ids as llguidance's: what llguidance computes masks over. Special tokens are
/// marked as such (the grammar never produces them); ids past the tokenizer's vocabulary are
/// special placeholders.
fn token_env(tokenizer: &Tokenizer, vocab_size: usize) -> Result<TokEnv> {
    let fail = |msg: String| Error::tokenizer("tokenizer.json", msg);
    let eos = tokenizer.eos_ids().to_vec();
    let Some(&first_eos) = eos.first() else {
        return Err(fail(
            "constrained decoding needs an end-of-sequence token and the tokenizer names none"
                .into(),
        ));
    };
    if let Some(id) = eos.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(fail(format!(
            "the end-of-sequence id {id} is outside the model's vocabulary of {vocab_size}"
        )));
    }
    let json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| fail(format!("serializing the tokenizer: {e}")))?;
    let json: Value = serde_json::from_str(&json).map_err(|e| fail(e.to_string()))?;
    let mut words = guarded("reading the vocabulary", || {
        token_bytes_from_tokenizer_json(&json)
    })?
    .map_err(|e| fail(format!("reading the token bytes: {e}")))?;
    if words.len() > vocab_size {
        return Err(fail(format!(
            "the tokenizer has {} tokens, more than the model's vocabulary of {vocab_size}",
            words.len()
        )));
    }
    // Ids without bytes (holes in the vocabulary, and those past the tokenizer's) become
    // special placeholders that no grammar produces.
    words.resize(vocab_size, Vec::new());
    for (id, word) in words.iter_mut().enumerate() {
        if word.is_empty() {
            *word = format!(".<[{id}]>").into_bytes();
            word[0] = TokTrie::SPECIAL_TOKEN_MARKER;
        }
    }
    let info = TokRxInfo::new(vocab_size as u32, first_eos);
    let trie = guarded("building the token trie", || {
        TokTrie::from(&info, &words).with_eos_tokens(&eos)
    })?;
    Ok(Arc::new(TokenTrie { trie }))
}

/// llguidance's view of the tokenizer: the token trie. llguidance asks it to tokenize only the
/// text a grammar forces, which athena does not use (it samples every token); greedy longest
/// matches through the trie answer that.
struct TokenTrie {
    trie: TokTrie,
}

impl TokenizerEnv for TokenTrie {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// llguidance's errors may carry the grammar after the reason; the reason is the first line.
fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or(msg).trim().to_string()
}

/// One sequence's grammar state: which tokens may come next, and the tokens taken so far.
/// Cloning gives an independent copy at the same point (one per choice of a request).
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    /// The allowed tokens of the current step, once computed.
    mask: Option<SimpleVob>,
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// The tokens allowed next, as a bitset over the model's vocabulary: bit `i % 32` of word
    /// `i / 32` is set when token `i` is allowed. End-of-sequence ids are set only where the
    /// grammar accepts the output so far.
    pub fn allowed(&mut self) -> Result<&[u32]> {
        if self.mask.is_none() {
            let matcher = &mut self.matcher;
            let mask = guarded("computing the token mask", || matcher.compute_mask())?
                .map_err(|e| Error::grammar(first_line(&e.to_string())))?;
            self.mask = Some(mask);
        }
        Ok(self.mask.as_ref().map(SimpleVob::as_slice).unwrap_or(&[]))
    }

    /// Whether token `id` may come next.
    pub fn allows(&mut self, id: u32) -> Result<bool> {
        let words = self.allowed()?;
        Ok(words
            .get(id as usize / 32)
            .is_some_and(|w| w >> (id % 32) & 1 == 1))
    }

    /// Takes token `id` into the grammar's state. A token the grammar does not allow is
    /// [`Error::Grammar`].
    pub fn commit(&mut self, id: u32) -> Result<()> {
        self.mask = None;
        let matcher = &mut self.matcher;
        guarded("taking a token", || matcher.consume_token(id))?
            .map_err(|e| Error::grammar(first_line(&e.to_string())))
    }

    /// Whether the grammar admits no further token: the output is complete.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Whether the output so far is a complete sentence of the grammar (it may still go on).
    pub fn is_accepting(&mut self) -> bool {
        let matcher = &mut self.matcher;
        guarded("checking acceptance", || matcher.is_accepting())
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::generate::{Sampler, SamplingParams};

    fn fixture_grammars() -> (Tokenizer, Grammars) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/base");
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let grammars = Grammars::new(&tok, 512).unwrap();
        (tok, grammars)
    }

    /// Drives `c` with pseudo-random logits until the grammar is complete (or `limit` tokens);
    /// the text and whether it finished.
    fn drive(tok: &Tokenizer, mut c: Constraint, seed: u64, limit: usize) -> (String, bool) {
        let mut sampler = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed,
            ..Default::default()
        })
        .unwrap();
        let mut ids = Vec::new();
        for step in 0..limit {
            let logits: Vec<f32> = (0..512u64)
                .map(|i| ((i * 7919 + step as u64 * 104_729 + seed) % 997) as f32 / 100.0)
                .collect();
            let id = sampler
                .sample_allowed(&logits, &ids, c.allowed().unwrap())
                .unwrap();
            if tok.is_eos(id) {
                return (tok.decode(&ids, true).unwrap(), true);
            }
            c.commit(id).unwrap();
            ids.push(id);
            if c.is_finished() {
                return (tok.decode(&ids, true).unwrap(), true);
            }
        }
        (tok.decode(&ids, true).unwrap(), false)
    }

    #[test]
    fn sampling_under_a_schema_gives_valid_json() {
        let (tok, grammars) = fixture_grammars();
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 3, "maximum": 17},
                "colour": {"enum": ["red", "green"]},
            },
            "required": ["n", "colour"],
            "additionalProperties": false,
        });
        let proto = grammars.compile(&Grammar::JsonSchema(schema)).unwrap();
        for seed in 0..20 {
            let (text, finished) = drive(&tok, proto.clone(), seed, 200);
            assert!(finished, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let n = v["n"].as_i64().unwrap();
            assert!((3..=17).contains(&n), "{text}");
            assert!(
                ["red", "green"].contains(&v["colour"].as_str().unwrap()),
                "{text}"
            );
            assert!(
                text.contains("\"n\": ") && text.contains(", "),
                "compact layout: {text}"
            );
        }
    }

    #[test]
    fn eos_only_where_the_grammar_accepts() {
        let (tok, grammars) = fixture_grammars();
        let eos = tok.eos_ids()[0];
        let mut c = grammars
            .compile(&Grammar::Lark("start: \"ab\"+".into()))
            .unwrap();
        assert!(!c.allows(eos).unwrap());
        assert!(!c.is_accepting());
        let (text, finished) = drive(&tok, c.clone(), 1, 40);
        assert!(
            text.len() % 2 == 0 && text.chars().all(|ch| "ab".contains(ch)),
            "{text}"
        );
        let _ = finished;
        // After "ab" the output is complete, yet it may go on: eos is one of the choices.
        let a = tok.inner().token_to_id("a").unwrap();
        let b = tok.inner().token_to_id("b").unwrap();
        c.commit(a).unwrap();
        assert!(!c.allows(eos).unwrap());
        c.commit(b).unwrap();
        assert!(c.is_accepting() && c.allows(eos).unwrap() && !c.is_finished());
        // A token the grammar does not allow is refused.
        let z = tok.inner().token_to_id("z").unwrap();
        assert!(!c.allows(z).unwrap());
        assert!(matches!(c.commit(z), Err(Error::Grammar { .. })));
    }

    #[test]
    fn refused_grammars_are_grammar_errors_that_say_why() {
        let (_, grammars) = fixture_grammars();
        let huge = format!("start: \"{}\"", "x".repeat(MAX_GRAMMAR_BYTES));
        for (g, says) in [
            (Grammar::Lark("start: (".into()), ""),
            (Grammar::Lark(huge), "at most"),
            (Grammar::JsonSchema(json!({"type": "nonsense"})), ""),
            (Grammar::JsonSchema(json!([1, 2])), "must be an object"),
            (Grammar::JsonSchema(json!(false)), ""),
        ] {
            match grammars.compile(&g) {
                Err(Error::Grammar { msg }) => assert!(msg.contains(says), "{msg}"),
                other => panic!("{g:?}: {other:?}"),
            }
        }
        assert!(grammars.compile(&Grammar::JsonObject).is_ok());
        assert!(grammars.compile(&Grammar::JsonSchema(json!(true))).is_ok());
    }
}
