//! Structured outputs: `response_format` and `tools` parsed into what the generation is kept to
//! ([`OutputSpec`]), and a conversation's tool calls and results turned into text the chat
//! template renders.
//!
//! - `response_format: {"type": "json_object"}` keeps the output to one JSON object;
//!   `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` to JSON valid under
//!   the schema (strict or not: the schema is always enforced).
//! - `tools` with `tool_choice`: `none` answers in text without the tools; `auto` (the default
//!   with tools) lets the model answer in text or call one function; `required` and a named
//!   function make it call one (that one). The functions and the call format
//!   ([`athena::generate::tool_call`]) are described in the system message.

use athena::generate::tool_call::{
    render_tool_call, tool_instructions, tool_response, ToolAlternative, ToolFunction,
};
use athena::generate::{tool_call, ChatMessage, Grammar};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Most tools in one request.
pub const MAX_TOOLS: usize = 128;

/// `response_format`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// One JSON object.
    JsonObject,
    /// JSON valid under a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: String,
    /// What the output is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON schema (absent: any JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Accepted either way: the schema is always enforced.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// The kind of a tool; only functions exist.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    /// A function.
    Function,
}

/// One tool of `tools`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Tool {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: ToolKind,
    /// The function.
    pub function: FunctionDefinition,
}

/// A function the model may call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionDefinition {
    /// 1 to 64 letters, digits, `_` or `-`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON schema of its arguments (absent: any object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Accepted either way: the arguments always follow the schema.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode, or one function.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(ToolChoiceMode),
    /// `{"type": "function", "function": {"name": ...}}`.
    Named(NamedToolChoice),
}

/// The modes of `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceMode {
    /// Answer in text; call nothing.
    None,
    /// Answer in text or call a function.
    Auto,
    /// Call a function.
    Required,
}

/// A `tool_choice` that names a function.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NamedToolChoice {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: ToolKind,
    /// The function.
    pub function: FunctionName,
}

/// A function's name.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionName {
    /// The name.
    pub name: String,
}

/// A tool call in an assistant message of the conversation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MessageToolCall {
    /// Its id.
    #[serde(default)]
    pub id: Option<String>,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: ToolKind,
    /// The call.
    pub function: CalledFunction,
}

/// The function of a tool call, with its arguments as JSON text.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CalledFunction {
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON object, as text.
    pub arguments: String,
}

/// What the output of a request is kept to.
#[derive(Debug, Clone, Default)]
pub struct OutputSpec {
    /// The grammar of the output, with the request field it comes from.
    pub grammar: Option<(Grammar, &'static str)>,
    /// The functions the model is told about, and whether it must call one.
    pub tools: Option<(Vec<ToolFunction>, bool)>,
}

impl OutputSpec {
    /// Whether an answer's text is read for a tool call.
    pub fn calls_tools(&self) -> bool {
        self.tools.is_some()
    }
}

/// The grammar `response_format` asks for; `None` for text.
fn format_grammar(format: Option<&ResponseFormat>) -> Option<Grammar> {
    match format? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(Grammar::JsonObject),
        ResponseFormat::JsonSchema { json_schema } => Some(match &json_schema.schema {
            Some(schema) => Grammar::JsonSchema(schema.clone()),
            None => Grammar::JsonObject,
        }),
    }
}

/// The output of a text completion: `response_format` alone.
pub fn completion_output(format: Option<&ResponseFormat>) -> OutputSpec {
    OutputSpec {
        grammar: format_grammar(format).map(|g| (g, "response_format")),
        tools: None,
    }
}

/// The output of a chat completion: `response_format`, `tools` and `tool_choice`.
pub fn chat_output(
    format: Option<&ResponseFormat>,
    tools: Option<&[Tool]>,
    choice: Option<&ToolChoice>,
) -> Result<OutputSpec, ApiError> {
    let text = format_grammar(format);
    let tools = tools.unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::bad_request(
            "tools",
            format!("at most {MAX_TOOLS} tools, got {}", tools.len()),
        ));
    }
    let functions: Vec<ToolFunction> = tools
        .iter()
        .map(|t| ToolFunction {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            parameters: t.function.parameters.clone(),
        })
        .collect();
    if let Some(f) = functions
        .iter()
        .find(|f| !tool_call::is_valid_name(&f.name))
    {
        return Err(ApiError::bad_request(
            "tools",
            format!(
                "`{}` is not a function name (1 to 64 letters, digits, `_` or `-`)",
                f.name
            ),
        ));
    }
    let mode = match choice {
        None if functions.is_empty() => ToolChoiceMode::None,
        None => ToolChoiceMode::Auto,
        Some(ToolChoice::Mode(m)) => *m,
        Some(ToolChoice::Named(_)) => ToolChoiceMode::Required,
    };
    if mode != ToolChoiceMode::None && functions.is_empty() {
        return Err(ApiError::bad_request(
            "tool_choice",
            "`tool_choice` asks for a tool call but `tools` is empty",
        ));
    }
    let functions = match choice {
        Some(ToolChoice::Named(named)) => {
            let name = &named.function.name;
            let one: Vec<ToolFunction> =
                functions.into_iter().filter(|f| &f.name == name).collect();
            if one.is_empty() {
                return Err(ApiError::bad_request(
                    "tool_choice",
                    format!("`tool_choice` names `{name}`, which is not in `tools`"),
                ));
            }
            one
        }
        _ => functions,
    };
    if mode == ToolChoiceMode::None {
        return Ok(OutputSpec {
            grammar: text.map(|g| (g, "response_format")),
            tools: None,
        });
    }
    let alternative = match (mode, text) {
        (ToolChoiceMode::Required, _) => ToolAlternative::None,
        (_, None) => ToolAlternative::Text,
        (_, Some(Grammar::JsonObject)) => {
            ToolAlternative::Json(serde_json::json!({"type": "object"}))
        }
        (_, Some(Grammar::JsonSchema(schema))) => ToolAlternative::Json(schema),
        (_, Some(Grammar::Lark(_))) => {
            return Err(ApiError::internal(
                "response_format gave a Lark grammar, which it never does",
            ))
        }
    };
    let grammar = tool_call::tool_call_grammar(&functions, &alternative)
        .map_err(|e| ApiError::bad_request("tools", e.to_string()))?;
    let must_call = mode == ToolChoiceMode::Required;
    Ok(OutputSpec {
        grammar: Some((grammar, "tools")),
        tools: Some((functions, must_call)),
    })
}

/// The conversation as the template renders it: assistant tool calls become their text in the
/// call format, tool results become user turns (`<tool_response>` blocks), and the tools'
/// instructions join the system message (a first one is added when there is none).
pub fn with_tools(mut messages: Vec<ChatMessage>, spec: &OutputSpec) -> Vec<ChatMessage> {
    if let Some((functions, must_call)) = &spec.tools {
        let instructions = tool_instructions(functions, *must_call);
        match messages.first_mut() {
            Some(m) if m.role == "system" => {
                m.content = format!("{}\n\n{instructions}", m.content);
            }
            _ => messages.insert(0, ChatMessage::system(instructions)),
        }
    }
    messages
}

/// The text of an assistant message with tool calls (after any text it has).
pub fn assistant_text(content: String, calls: &[MessageToolCall]) -> String {
    let mut text = content;
    for c in calls {
        text.push_str(&render_tool_call(&c.function.name, &c.function.arguments));
    }
    text
}

/// A tool message as the user turn the model reads.
pub fn tool_message(content: &str) -> ChatMessage {
    ChatMessage::new("user".to_string(), tool_response(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Tool> {
        serde_json::from_str(
            r#"[{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "now"}}]"#,
        )
        .unwrap()
    }

    fn choice(json: &str) -> ToolChoice {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tool_choices_parse_into_grammars() {
        let t = tools();
        let auto = chat_output(None, Some(&t), None).unwrap();
        assert_eq!(
            auto.tools.as_ref().map(|x| (x.0.len(), x.1)),
            Some((2, false))
        );
        assert_eq!(auto.grammar.as_ref().map(|g| g.1), Some("tools"));
        let required = chat_output(None, Some(&t), Some(&choice(r#""required""#))).unwrap();
        assert_eq!(required.tools.map(|x| x.1), Some(true));
        let named = chat_output(
            None,
            Some(&t),
            Some(&choice(
                r#"{"type": "function", "function": {"name": "now"}}"#,
            )),
        )
        .unwrap();
        assert_eq!(named.tools.map(|x| x.0[0].name.clone()), Some("now".into()));
        let none = chat_output(None, Some(&t), Some(&choice(r#""none""#))).unwrap();
        assert!(none.tools.is_none() && none.grammar.is_none());
    }

    #[test]
    fn inconsistent_tool_requests_are_400s() {
        let t = tools();
        for (tools, choice_json, param) in [
            (None, r#""required""#, "tool_choice"),
            (
                Some(&t[..]),
                r#"{"type": "function", "function": {"name": "other"}}"#,
                "tool_choice",
            ),
        ] {
            let e = chat_output(None, tools, Some(&choice(choice_json))).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), Some(param));
        }
        let mut bad = tools();
        bad[0].function.name = "has space".into();
        assert_eq!(
            chat_output(None, Some(&bad), None)
                .unwrap_err()
                .param
                .as_deref(),
            Some("tools")
        );
    }

    #[test]
    fn tools_join_the_system_message() {
        let spec = chat_output(None, Some(&tools()), None).unwrap();
        let msgs = with_tools(vec![ChatMessage::user("hi")], &spec);
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[0].content.contains("get_weather"));
        let msgs = with_tools(
            vec![ChatMessage::system("Be brief."), ChatMessage::user("hi")],
            &spec,
        );
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].content.starts_with("Be brief.\n\nYou can call"));
    }
}
