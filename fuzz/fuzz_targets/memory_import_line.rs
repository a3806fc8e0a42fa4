//! The conversation lines of `athena memory import`: each becomes a fact in a validated scope,
//! is skipped, or is refused.
#![no_main]

use athena::memory::parse_conversation_line;
use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    for line in String::from_utf8_lossy(data).lines() {
        if let Ok(Some((scope, fact))) = parse_conversation_line(line, MAX_BYTES) {
            assert!(scope.validate().is_ok());
            assert!(!fact.trim().is_empty() && fact.len() <= MAX_BYTES);
        }
    }
});
