//! The `quantization` block of an mlx-lm `config.json` (bits, group size, mode, per-module
//! overrides), spliced into the fixture model's config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(block) = std::str::from_utf8(data) else {
        return;
    };
    let base = include_str!("../../fixtures/models/base/config.json");
    let Some(open) = base.find('{') else { return };
    let text = format!(
        "{{\"quantization\": {block}, \"quantization_config\": {block},{}",
        &base[open + 1..]
    );
    if let Ok(args) = athena::checkpoint::OlmoeArgs::from_json(&text, Path::new("config.json")) {
        if let Some(q) = &args.quantization {
            for module in [
                "model.embed_tokens",
                "model.layers.0.self_attn.q_proj",
                "model.layers.1.mlp.switch_mlp.down_proj",
                "lm_head",
            ] {
                if let Some(p) = q.spec(module) {
                    assert!([2, 3, 4, 5, 6, 8].contains(&p.bits), "{p:?}");
                    assert!([32, 64, 128].contains(&p.group_size), "{p:?}");
                }
            }
        }
    }
});
