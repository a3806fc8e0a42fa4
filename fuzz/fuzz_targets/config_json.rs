//! `config.json`: parsing and validation into `OlmoeArgs`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(args) = athena::checkpoint::OlmoeArgs::from_json(text, Path::new("config.json")) {
        // A validated config describes a model whose sizes can be computed without overflow.
        assert!(args.num_attention_heads > 0 && args.num_hidden_layers > 0);
        assert!(args.num_experts_per_tok <= args.num_experts);
        let _ = args.total_params();
        let _ = args.active_params();
        let _ = args.bf16_scales();
    }
});
