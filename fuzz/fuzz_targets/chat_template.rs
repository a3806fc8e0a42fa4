//! A chat template and a conversation: the template up to the first NUL byte, then
//! NUL-separated role and content pairs. The render must end (fuel) within the output and
//! value limits, and never panic.
#![no_main]

use athena::generate::{ChatMessage, ChatTemplate, SpecialTokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<ChatMessage> = rest
        .chunks(2)
        .map(|p| ChatMessage::new(p[0], p.get(1).copied().unwrap_or_default()))
        .collect();
    let special = SpecialTokens {
        bos_token: Some("<|endoftext|>".into()),
        eos_token: Some("<|endoftext|>".into()),
        pad_token: None,
    };
    if let Ok(t) = ChatTemplate::new(source, special, "tokenizer_config.json") {
        if let Ok(out) = t.render(&messages, true) {
            assert!(out.len() <= athena::generate::chat::MAX_OUTPUT_BYTES);
        }
    }
});
