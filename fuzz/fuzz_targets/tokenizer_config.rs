//! `tokenizer_config.json` (special tokens, the chat template) beside the fixture's
//! `tokenizer.json`, and the template it carries rendered. The fixture's `tokenizer.json` is
//! parsed once; each input is read over a copy of it, by the rules of `Tokenizer::from_dir`.
#![no_main]

use std::sync::LazyLock;

use athena::generate::{ChatMessage, Tokenizer};
use athena_fuzz::{fixture, put, scratch};
use libfuzzer_sys::fuzz_target;

static BASE: LazyLock<tokenizers::Tokenizer> = LazyLock::new(|| {
    let tok = Tokenizer::from_dir(&fixture("models/base")).expect("the fixture's tokenizer");
    tok.inner().clone()
});

fuzz_target!(|data: &[u8]| {
    let dir = scratch("tokcfg");
    put(&dir, "tokenizer_config.json", data);
    if let Ok(tok) = Tokenizer::from_parsed(BASE.clone(), &dir) {
        if let Some(t) = tok.chat_template() {
            let chat = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
            let _ = t.render(&chat, true);
        }
    }
});
