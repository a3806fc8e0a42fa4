//! OpenAI request fields that would change the output and that athena does not implement: a
//! request that sets one is a 400 naming it, never a completion that silently ignores it.

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The refused fields of a chat completion request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RefusedChatFields {
    /// The deprecated form of `tools`; not supported (use `tools`): only `null` is accepted.
    #[schema(value_type = Option<Vec<Object>>)]
    pub functions: Option<Value>,
    /// The deprecated form of `tool_choice`; not supported (use `tool_choice`): only `null` is
    /// accepted.
    #[schema(value_type = Option<String>)]
    pub function_call: Option<Value>,
    /// Log probabilities of alternatives are not supported: only `null` or 0 is accepted.
    #[schema(value_type = Option<i64>)]
    pub top_logprobs: Option<Value>,
    /// Audio output is not supported: only `null` is accepted.
    #[schema(value_type = Option<Object>)]
    pub audio: Option<Value>,
    /// Only text output: `null` or `["text"]`.
    #[schema(value_type = Option<Vec<String>>)]
    pub modalities: Option<Value>,
    /// Web search is not supported: only `null` is accepted.
    #[schema(value_type = Option<Object>)]
    pub web_search_options: Option<Value>,
}

/// The refused fields of a text completion request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RefusedCompletionFields {
    /// Tools belong to chat completions: only `null` is accepted.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Value>,
    /// Tools belong to chat completions: only `null` is accepted.
    #[schema(value_type = Option<String>)]
    pub tool_choice: Option<Value>,
    /// Text after the completion is not supported: only `null` or `""` is accepted.
    #[schema(value_type = Option<String>)]
    pub suffix: Option<Value>,
    /// Server-side best-of sampling is not supported: only `null` or 1 is accepted.
    #[schema(value_type = Option<i64>)]
    pub best_of: Option<Value>,
}

/// One refused field: its name, its value, which values ask for nothing, and what athena does
/// not do.
struct Check<'a> {
    field: &'static str,
    value: &'a Option<Value>,
    neutral: fn(&Value) -> bool,
    what: &'static str,
}

/// A 400 naming the first field set to something other than nothing (absent, `null`, or its
/// neutral value).
fn first_refused(checks: &[Check<'_>]) -> Result<(), ApiError> {
    for c in checks {
        match c.value {
            None | Some(Value::Null) => {}
            Some(v) if (c.neutral)(v) => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    c.field,
                    format!("`{}` is not supported by this server ({})", c.field, c.what),
                ))
            }
        }
    }
    Ok(())
}

fn never(_: &Value) -> bool {
    false
}

fn zero(v: &Value) -> bool {
    v.as_i64() == Some(0)
}

fn text_only(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().all(|m| m.as_str() == Some("text")))
}

fn empty(v: &Value) -> bool {
    v.as_str() == Some("")
}

fn one(v: &Value) -> bool {
    v.as_i64() == Some(1)
}

impl RefusedChatFields {
    /// A 400 naming the first field set to something athena does not do.
    pub fn check(&self) -> Result<(), ApiError> {
        let check = |field, value, neutral, what| Check {
            field,
            value,
            neutral,
            what,
        };
        first_refused(&[
            check("functions", &self.functions, never, "use `tools`"),
            check(
                "function_call",
                &self.function_call,
                never,
                "use `tool_choice`",
            ),
            check(
                "top_logprobs",
                &self.top_logprobs,
                zero,
                "log probabilities",
            ),
            check("audio", &self.audio, never, "text output only"),
            check(
                "modalities",
                &self.modalities,
                text_only,
                "text output only",
            ),
            check(
                "web_search_options",
                &self.web_search_options,
                never,
                "no web search",
            ),
        ])
    }
}

impl RefusedCompletionFields {
    /// A 400 naming the first field set to something athena does not do.
    pub fn check(&self) -> Result<(), ApiError> {
        let check = |field, value, neutral, what| Check {
            field,
            value,
            neutral,
            what,
        };
        let chat_only = "tool calls are a chat completions feature";
        first_refused(&[
            check("tools", &self.tools, never, chat_only),
            check("tool_choice", &self.tool_choice, never, chat_only),
            check(
                "suffix",
                &self.suffix,
                empty,
                "no text after the completion",
            ),
            check("best_of", &self.best_of, one, "no server-side best-of"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_output_changing_field_is_named_in_a_400() {
        for (body, field) in [
            (r#"{"functions": [{"name": "f"}]}"#, "functions"),
            (r#"{"function_call": "auto"}"#, "function_call"),
            (r#"{"top_logprobs": 3}"#, "top_logprobs"),
            (r#"{"audio": {"voice": "alloy"}}"#, "audio"),
            (r#"{"modalities": ["text", "audio"]}"#, "modalities"),
            (r#"{"web_search_options": {}}"#, "web_search_options"),
        ] {
            let f: RefusedChatFields = serde_json::from_str(body).unwrap();
            let e = f.check().unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(field), "{body}");
            assert!(e.message.contains(field), "{}", e.message);
        }
        for (body, field) in [
            (r#"{"tools": []}"#, "tools"),
            (r#"{"suffix": "end"}"#, "suffix"),
            (r#"{"best_of": 2}"#, "best_of"),
        ] {
            let f: RefusedCompletionFields = serde_json::from_str(body).unwrap();
            assert_eq!(f.check().unwrap_err().param.as_deref(), Some(field));
        }
    }

    #[test]
    fn neutral_values_pass() {
        let f: RefusedChatFields = serde_json::from_str(
            r#"{"functions": null, "top_logprobs": 0, "modalities": ["text"]}"#,
        )
        .unwrap();
        assert!(f.check().is_ok());
        let f: RefusedCompletionFields =
            serde_json::from_str(r#"{"suffix": "", "best_of": 1}"#).unwrap();
        assert!(f.check().is_ok());
    }
}
