//! The memory routes' untrusted inputs, parsed and validated as the handlers do: the first
//! byte picks the input, the rest is its text. Bodies go through the JSON object and then the
//! route's parser; a query's `filters` through JSON or the Python-literal parser.
#![no_main]

use athena_server::{memory_api, memory_filters, pyliteral};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok(v) = pyliteral::parse(text) {
                // What parsed is JSON-like data: it round-trips through JSON text.
                let again: Value = serde_json::from_str(&v.to_string()).expect("JSON");
                assert_eq!(again, v);
            }
        }
        1 => {
            if let Ok(f) = memory_filters::parse_filters_text(text) {
                assert!(f.scope.parts().iter().all(|(_, id)| id != &Some("*")));
            }
        }
        n => {
            let Ok(body) = serde_json::from_str::<Map<String, Value>>(text) else {
                return;
            };
            match n {
                2 => {
                    if let Ok(add) = memory_api::parse_add(body) {
                        assert!(!add.messages.is_empty());
                        assert!(add.messages.len() <= memory_api::MAX_ADD_MESSAGES);
                        let _ = add.user_facts();
                    }
                }
                3 => {
                    if let Ok(s) = memory_api::parse_search(body) {
                        assert!((1..=athena::memory::MAX_TOP_K).contains(&s.options.top_k));
                    }
                }
                4 => {
                    let _ = memory_api::parse_list(body);
                }
                _ => {
                    if let Ok(u) = memory_api::parse_update(body) {
                        assert!(u.text.is_some() || u.metadata.is_some());
                    }
                }
            }
        }
    }
});
