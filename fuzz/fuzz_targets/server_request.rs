//! The JSON bodies of the server's POST routes, deserialized into the request types and
//! validated as the handlers do: the first byte picks the route, the rest is the body. The
//! structured-output fields are parsed into their grammar too (the grammar's compilation has
//! a target of its own, `grammar`).
#![no_main]

use athena_server::api::{
    ChatRequest, CompletionRequest, EmbeddingRequest, MemoryActionRequest, Sampling,
};
use athena_server::structured::{chat_output, completion_output};
use libfuzzer_sys::fuzz_target;

/// The fixture model's vocabulary and context.
const VOCAB: usize = 512;
const CONTEXT: usize = 256;

fn validate(sampling: &Sampling, prompt_tokens: usize) {
    if let Ok(req) = sampling.parse(VOCAB) {
        assert!(req.n >= 1);
        assert!(req
            .logit_bias
            .iter()
            .all(|&(id, b)| (id as usize) < VOCAB && b.is_finite()));
        if let Ok(params) = req.fit(prompt_tokens, CONTEXT) {
            assert!(params.max_tokens >= 1 && prompt_tokens + params.max_tokens <= CONTEXT);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let prompt_tokens = usize::from(route >> 2);
    match route % 4 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<ChatRequest>(body) {
                validate(&r.sampling, prompt_tokens);
                let _ = r.refused.check();
                let _ = chat_output(
                    r.response_format.as_ref(),
                    r.tools.as_deref(),
                    r.tool_choice.as_ref(),
                );
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<CompletionRequest>(body) {
                validate(&r.sampling, prompt_tokens);
                let _ = r.refused.check();
                let _ = completion_output(r.response_format.as_ref());
            }
        }
        2 => {
            let _ = serde_json::from_slice::<EmbeddingRequest>(body);
        }
        _ => {
            let _ = serde_json::from_slice::<MemoryActionRequest>(body);
        }
    }
});
