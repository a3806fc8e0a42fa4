//! `tokenizer_config.json` (special tokens, the chat template) beside the fixture's
//! `tokenizer.json`, and the template it carries rendered.
#![no_main]

use athena::generate::ChatMessage;
use athena_fuzz::{copy_fixture, put, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("tokcfg");
    copy_fixture(&dir, "models/base/tokenizer.json");
    put(&dir, "tokenizer_config.json", data);
    if let Ok(tok) = athena::generate::Tokenizer::from_dir(&dir) {
        if let Some(t) = tok.chat_template() {
            let chat = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
            let _ = t.render(&chat, true);
        }
    }
});
