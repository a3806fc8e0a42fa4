//! The lines of a conversation file that `athena memory import` reads: one
//! `{"user_id", "role", "content"}` object a line (`agent_id`, `run_id` and `timestamp`
//! optional), of which each user message becomes a fact.

use serde::Deserialize;

use super::error::{MemoryError, MemoryResult};
use super::types::Scope;

/// One line of a conversation file, refusing unknown fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationLine {
    user_id: Option<String>,
    agent_id: Option<String>,
    run_id: Option<String>,
    role: String,
    content: String,
    #[allow(dead_code)]
    timestamp: Option<serde_json::Value>,
}

/// Parses one line: `Some((scope, fact))` for a user message with content, `None` for a blank
/// line, another role's message or a blank message. The scope is validated and the fact must
/// be at most `max_bytes` long.
pub fn parse_conversation_line(
    line: &str,
    max_bytes: usize,
) -> MemoryResult<Option<(Scope, String)>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let m: ConversationLine = serde_json::from_str(line)
        .map_err(|e| MemoryError::invalid("conversation line", e.to_string()))?;
    if m.role != "user" {
        return Ok(None);
    }
    let scope = Scope {
        user_id: m.user_id,
        agent_id: m.agent_id,
        run_id: m.run_id,
    };
    scope.validate()?;
    if m.content.trim().is_empty() {
        return Ok(None);
    }
    if m.content.len() > max_bytes {
        return Err(MemoryError::bad_text(
            "the message",
            format!("is {} bytes, more than {max_bytes}", m.content.len()),
        ));
    }
    Ok(Some((scope, m.content)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_messages_become_facts_and_the_rest_is_skipped() -> MemoryResult<()> {
        let line = r#"{"user_id": "u1", "role": "user", "content": "I like tea", "timestamp": 3}"#;
        let (scope, fact) = parse_conversation_line(line, 100)?
            .ok_or(MemoryError::Internal("a user message was skipped".into()))?;
        assert_eq!(scope, Scope::user("u1"));
        assert_eq!(fact, "I like tea");
        for skipped in [
            "   ",
            r#"{"user_id": "u1", "role": "assistant", "content": "ok"}"#,
            r#"{"user_id": "u1", "role": "user", "content": "  "}"#,
        ] {
            assert!(
                parse_conversation_line(skipped, 100)?.is_none(),
                "{skipped}"
            );
        }
        for bad in [
            r#"{"user_id": "u1", "role": "user", "content": "x", "extra": 1}"#,
            r#"{"role": "user", "content": "no scope"}"#,
            r#"{"user_id": "u1", "role": "user", "content": "too long"}"#,
            "not json",
        ] {
            assert!(parse_conversation_line(bad, 5).is_err(), "{bad}");
        }
        Ok(())
    }
}
