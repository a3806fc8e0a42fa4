//! mem0's `infer=true`: the served language model reads the conversation and lists the facts
//! worth remembering, under the JSON schema [`facts_schema`], so that its answer always parses.
//! The instructions are [`crate::DEFAULT_EXTRACTION_PROMPT`] unless the server was given its
//! own (`--memory-extraction-prompt FILE`).

use athena::generate::{ChatMessage, GenerateParams};

use super::common::{admit, context, model_work, tokenize};
use crate::error::ApiError;
use crate::state::Shared;

/// Most facts one conversation gives.
pub const MAX_FACTS: usize = 16;

/// Longest fact, in characters.
pub const MAX_FACT_CHARS: usize = 200;

/// Most tokens the extraction generates, before the context's own bound.
const MAX_EXTRACTION_TOKENS: usize = 1024;

/// `{"facts": [string]}` that always fits in `room` tokens, since no token is shorter than one
/// character: at most `room / 128` facts (1 to [`MAX_FACTS`]), each short enough that all of
/// them, with the JSON around them, take at most `room` characters.
pub fn facts_schema(room: usize) -> serde_json::Value {
    let facts = (room / 128).clamp(1, MAX_FACTS);
    // `{"facts": [` and `]}` take 14 characters; each fact its quotes and a separator.
    let chars = (room.saturating_sub(14) / facts)
        .saturating_sub(4)
        .clamp(1, MAX_FACT_CHARS);
    serde_json::json!({
        "type": "object",
        "properties": {
            "facts": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": chars},
                "maxItems": facts
            }
        },
        "required": ["facts"],
        "additionalProperties": false
    })
}

/// The facts the model finds in `messages` (role, text), in its order, blank ones left out.
/// Admitted by the prompt's tokens plus the most it may generate; an output cut off by the
/// context is a 400 naming `messages`.
pub(super) async fn extract_facts(
    s: &Shared,
    prompt: &str,
    messages: &[(String, String)],
) -> Result<Vec<String>, ApiError> {
    let (ctx, _) = context(s)?;
    let conversation: String = messages
        .iter()
        .map(|(role, text)| format!("{role}: {text}\n"))
        .collect();
    let chat = [ChatMessage::system(prompt), ChatMessage::user(conversation)];
    let model = s.model.clone();
    let text = s
        .tokenizing
        .run(move || {
            let tok = model
                .tokenizer()
                .ok_or_else(|| ApiError::internal("the model is not loaded"))?;
            Ok(match tok.chat_template() {
                Some(t) => t.render(&chat, true)?,
                None => format!(
                    "{}\n\n{}\nFacts as JSON:\n",
                    chat[0].content, chat[1].content
                ),
            })
        })
        .await?;
    s.tokenizing
        .check_len("messages", "the conversation", text.len())?;
    let ids = tokenize(s, vec![text]).await?.remove(0);
    let room = ctx.saturating_sub(ids.len());
    if room == 0 {
        return Err(ApiError::bad_request(
            "messages",
            format!(
                "the conversation and the extraction instructions take {} tokens; the context \
                 holds {ctx}",
                ids.len()
            ),
        ));
    }
    let max_tokens = room.min(MAX_EXTRACTION_TOKENS);
    let ticket = admit(s, "messages", 1, ids.len() + max_tokens)?;
    let params = GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    };
    let answer = model_work(s, ticket, "fact extraction", move |model, _cancel| {
        model
            .generate_json(&ids, &facts_schema(max_tokens), &params)
            .map_err(|e| match e {
                athena::Error::Invalid {
                    field: "max_tokens",
                    msg,
                } => athena::Error::invalid(
                    "messages",
                    format!("fact extraction ran out of room in the context: {msg}"),
                ),
                e => e,
            })
    })
    .await?;
    let facts = answer["facts"]
        .as_array()
        .ok_or_else(|| ApiError::internal("fact extraction answered without `facts`"))?
        .iter()
        .filter_map(|f| f.as_str().map(str::trim))
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_fits_the_room_it_is_given() {
        for room in [1, 20, 100, 127, 128, 500, 1024, 100_000] {
            let schema = facts_schema(room);
            let facts = &schema["properties"]["facts"];
            let items = facts["maxItems"].as_u64().unwrap() as usize;
            let chars = facts["items"]["maxLength"].as_u64().unwrap() as usize;
            assert!((1..=MAX_FACTS).contains(&items), "{room}: {items}");
            assert!((1..=MAX_FACT_CHARS).contains(&chars), "{room}: {chars}");
            if room >= 32 {
                // The longest answer allowed, written out, in characters.
                let longest = 14 + items * (chars + 4);
                assert!(longest <= room, "{room}: {items} facts of {chars}");
            }
        }
    }
}
