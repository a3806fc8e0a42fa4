//! A constraint's grammar: bytes starting with `{` are a JSON schema, anything else a Lark
//! grammar. Compiling must end (size bound, llguidance's fuel) with a constraint or a
//! `Grammar` error, never a panic or a stall; a constraint then walks a few tokens, always
//! taking the first one its mask allows.
#![no_main]

use std::sync::LazyLock;

use athena::generate::{Grammar, Grammars, Tokenizer};
use libfuzzer_sys::fuzz_target;

static GRAMMARS: LazyLock<(Tokenizer, Grammars)> = LazyLock::new(|| {
    let tok = Tokenizer::from_dir(&athena_fuzz::fixture("models/base")).expect("the fixture");
    let grammars = Grammars::new(&tok, 512).expect("the fixture's grammars");
    (tok, grammars)
});

fuzz_target!(|data: &[u8]| {
    let (tok, grammars) = &*GRAMMARS;
    let text = String::from_utf8_lossy(data);
    let grammar = if text.starts_with('{') {
        match serde_json::from_str(&text) {
            Ok(schema) => Grammar::JsonSchema(schema),
            Err(_) => return,
        }
    } else {
        Grammar::Lark(text.into_owned())
    };
    let Ok(mut c) = grammars.compile(&grammar) else {
        return;
    };
    for _ in 0..16 {
        let Ok(words) = c.allowed() else {
            return;
        };
        let first = words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i as u32 * 32 + w.trailing_zeros());
        let Some(id) = first else {
            return;
        };
        if tok.is_eos(id) || c.commit(id).is_err() || c.is_finished() {
            return;
        }
    }
});
