//! `tokenizer.json` loaded beside the fixture's `tokenizer_config.json`, then used.
#![no_main]

use athena_fuzz::{copy_fixture, put, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("tok");
    copy_fixture(&dir, "models/base/tokenizer_config.json");
    put(&dir, "tokenizer.json", data);
    if let Ok(tok) = athena::generate::Tokenizer::from_dir(&dir) {
        if let Ok(ids) = tok.encode("The agent remembers é🙂", true) {
            let _ = tok.decode(&ids, false);
        }
        let _ = tok.vocab_size();
    }
});
