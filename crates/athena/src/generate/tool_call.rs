//! Tool calls as text: the format a model writes a call in, the grammar that keeps it to that
//! format, and the parse back into a name and JSON arguments.
//!
//! A call is the marker [`TOOL_CALL`] followed by one compact JSON object naming the function
//! and holding its arguments, and nothing after it:
//!
//! ```text
//! <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}
//! ```
//!
//! [`tool_call_grammar`] builds the Lark grammar of "a call to one of these functions, with
//! arguments valid under its parameters' JSON schema", optionally as an alternative to plain
//! text (which then never starts with the marker) or to JSON under a schema. Tool results go
//! back to the model as [`tool_response`] text.

use serde_json::Value;

use super::constraint::{compact, Grammar};
use crate::error::{Error, Result};

/// What opens a tool call in the model's output.
pub const TOOL_CALL: &str = "<tool_call>";

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolFunction {
    /// Its name: 1 to 64 ASCII letters, digits, `_` or `-` (as OpenAI requires).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON schema of its arguments (an object schema; `None` takes any object).
    pub parameters: Option<Value>,
}

/// What the model may write instead of a tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolAlternative {
    /// Nothing: it must call a tool.
    None,
    /// Plain text, which never starts with [`TOOL_CALL`].
    Text,
    /// JSON valid under this schema.
    Json(Value),
}

/// Whether `name` is a valid function name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The JSON text of the call's opening, up to the arguments: `{"name": "NAME", "arguments": `.
fn call_head(name: &str) -> String {
    format!("{{\"name\": {}, \"arguments\": ", Value::from(name))
}

/// The grammar of one call to one of `functions`, or of `alternative`. Names must be valid
/// ([`is_valid_name`]) and distinct; each `parameters` must be an object schema.
pub fn tool_call_grammar(
    functions: &[ToolFunction],
    alternative: &ToolAlternative,
) -> Result<Grammar> {
    if functions.is_empty() {
        return Err(Error::grammar("a tool call needs at least one function"));
    }
    let mut lark = String::from("start: call");
    match alternative {
        ToolAlternative::None => {}
        ToolAlternative::Text => lark.push_str(" | TEXT"),
        ToolAlternative::Json(_) => lark.push_str(" | answer"),
    }
    lark.push_str("\ncall: ");
    for (i, f) in functions.iter().enumerate() {
        if !is_valid_name(&f.name) {
            return Err(Error::grammar(format!(
                "`{}` is not a function name (1 to 64 letters, digits, `_` or `-`)",
                f.name
            )));
        }
        if functions[..i].iter().any(|g| g.name == f.name) {
            return Err(Error::grammar(format!(
                "the function `{}` is given twice",
                f.name
            )));
        }
        if i > 0 {
            lark.push_str(" | ");
        }
        lark.push_str(&format!("f{i}"));
    }
    lark.push('\n');
    for (i, f) in functions.iter().enumerate() {
        let params = match &f.parameters {
            None => serde_json::json!({"type": "object"}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => {
                return Err(Error::grammar(format!(
                    "the parameters of `{}` must be a JSON schema object",
                    f.name
                )))
            }
        };
        let opening = Value::from(format!("{TOOL_CALL}{}", call_head(&f.name)));
        lark.push_str(&format!(
            "f{i}: {opening} %json {} \"}}\"\n",
            compact(params)
        ));
    }
    match alternative {
        ToolAlternative::None => {}
        ToolAlternative::Text => {
            lark.push_str("TEXT: /(.|\\n)+/ & ~/<tool_call>(.|\\n)*/\n");
        }
        ToolAlternative::Json(schema) => {
            if !schema.is_object() {
                return Err(Error::grammar("a JSON schema must be an object"));
            }
            lark.push_str(&format!("answer: %json {}\n", compact(schema.clone())));
        }
    }
    Ok(Grammar::Lark(lark))
}

/// A call read back from the output: the function's name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToolCall {
    /// The function.
    pub name: String,
    /// Its arguments, compact JSON.
    pub arguments: String,
}

/// The call in `text`, when `text` is one whole call in the format above; `None` for anything
/// else (plain text, a call cut off before its end).
pub fn parse_tool_call(text: &str) -> Option<ParsedToolCall> {
    let body = text.strip_prefix(TOOL_CALL)?;
    let v: Value = serde_json::from_str(body).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = v.get("arguments")?;
    if !arguments.is_object() {
        return None;
    }
    Some(ParsedToolCall {
        name,
        arguments: arguments.to_string(),
    })
}

/// The text of a call, as the model writes it (for an assistant turn of the history).
pub fn render_tool_call(name: &str, arguments: &str) -> String {
    format!("{TOOL_CALL}{}{arguments}}}", call_head(name))
}

/// A tool's result as the model reads it, in a user turn of the history.
pub fn tool_response(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// The instructions that tell the model which functions it may call and how; they go in the
/// system message. `must_call` says whether it must call one (else it may answer in text).
pub fn tool_instructions(functions: &[ToolFunction], must_call: bool) -> String {
    let mut out = String::from("You can call these functions:\n");
    for f in functions {
        out.push_str(&format!("- {}", f.name));
        if let Some(d) = &f.description {
            out.push_str(&format!(": {d}"));
        }
        let params = f
            .parameters
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_else(|| "{\"type\": \"object\"}".into());
        out.push_str(&format!("\n  arguments (JSON schema): {params}\n"));
    }
    out.push_str(&format!(
        "To call a function, answer with {TOOL_CALL} followed by \
         {{\"name\": <function name>, \"arguments\": <arguments object>}} and nothing else."
    ));
    if !must_call {
        out.push_str(" Otherwise answer in plain text.");
    }
    out
}

/// Splits a streamed tool call into the pieces OpenAI streams: the text is held until it is
/// known to be a call (or not), then the call's name once complete, then its arguments as they
/// come (all but the call's closing brace).
#[derive(Debug, Default)]
pub struct ToolCallStream {
    text: String,
    /// Bytes of the arguments already given out.
    sent: usize,
    state: StreamState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Not yet known whether the output is a call.
    #[default]
    Undecided,
    /// Plain text: passed through.
    Text,
    /// A call whose name is not yet complete.
    CallHead,
    /// A call whose name has been given out; arguments follow from byte `start` of the text.
    Arguments { start: usize },
}

/// What a piece of a streamed output adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolStreamPiece {
    /// Plain text.
    Text(String),
    /// A call starts: its function's name.
    CallStart(String),
    /// More of the call's arguments.
    Arguments(String),
}

impl ToolCallStream {
    /// Takes more output text; what can be told to the client now.
    pub fn push(&mut self, piece: &str) -> Vec<ToolStreamPiece> {
        self.text.push_str(piece);
        let mut out = Vec::new();
        loop {
            match self.state {
                StreamState::Undecided => {
                    if self.text.starts_with(TOOL_CALL) {
                        self.state = StreamState::CallHead;
                    } else if TOOL_CALL.starts_with(self.text.as_str()) {
                        return out;
                    } else {
                        self.state = StreamState::Text;
                        out.push(ToolStreamPiece::Text(std::mem::take(&mut self.text)));
                        return out;
                    }
                }
                StreamState::Text => {
                    if !self.text.is_empty() {
                        out.push(ToolStreamPiece::Text(std::mem::take(&mut self.text)));
                    }
                    return out;
                }
                StreamState::CallHead => {
                    let body = &self.text[TOOL_CALL.len()..];
                    // The name is a JSON string without escapes (names are [A-Za-z0-9_-]).
                    let Some(rest) = body.strip_prefix("{\"name\": \"") else {
                        return out;
                    };
                    let Some(end) = rest.find('"') else {
                        return out;
                    };
                    let name = rest[..end].to_string();
                    let head = TOOL_CALL.len() + call_head(&name).len();
                    if self.text.len() < head {
                        return out;
                    }
                    out.push(ToolStreamPiece::CallStart(name));
                    self.state = StreamState::Arguments { start: head };
                    self.sent = head;
                }
                StreamState::Arguments { .. } => {
                    // The last byte may be the call's closing brace: hold it back.
                    let ready = self.text.len().saturating_sub(1);
                    if ready > self.sent && self.text.is_char_boundary(ready) {
                        out.push(ToolStreamPiece::Arguments(
                            self.text[self.sent..ready].to_string(),
                        ));
                        self.sent = ready;
                    }
                    return out;
                }
            }
        }
    }

    /// The end of the output: what is left to tell. A call gives the rest of its arguments
    /// (incomplete JSON when the output was cut off); anything else held back is text.
    pub fn finish(&mut self) -> Vec<ToolStreamPiece> {
        match self.state {
            StreamState::Arguments { .. } => {
                // A whole call ends with its closing brace, which is not part of the arguments;
                // a call cut off gives all it has.
                let end = match parse_tool_call(&self.text) {
                    Some(_) => self.text.len() - 1,
                    None => self.text.len(),
                };
                if end > self.sent {
                    let rest = self.text[self.sent..end].to_string();
                    self.sent = end;
                    return vec![ToolStreamPiece::Arguments(rest)];
                }
                vec![]
            }
            StreamState::Undecided | StreamState::CallHead if !self.text.is_empty() => {
                self.state = StreamState::Text;
                vec![ToolStreamPiece::Text(std::mem::take(&mut self.text))]
            }
            _ => vec![],
        }
    }

    /// Whether the output has turned out to be a tool call.
    pub fn is_call(&self) -> bool {
        matches!(self.state, StreamState::Arguments { .. })
    }
}

/// A whole output split as [`ToolCallStream`] splits it: its text, and its call (the function's
/// name and the arguments' JSON text) when it is one.
pub fn split_output(text: &str) -> (String, Option<(String, String)>) {
    let mut stream = ToolCallStream::default();
    let mut pieces = stream.push(text);
    pieces.extend(stream.finish());
    let (mut content, mut call) = (String::new(), None::<(String, String)>);
    for p in pieces {
        match p {
            ToolStreamPiece::Text(t) => content.push_str(&t),
            ToolStreamPiece::CallStart(name) => call = Some((name, String::new())),
            ToolStreamPiece::Arguments(a) => {
                if let Some((_, args)) = &mut call {
                    args.push_str(&a);
                }
            }
        }
    }
    (content, call)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::generate::{Grammars, Sampler, SamplingParams, Tokenizer};

    fn weather() -> Vec<ToolFunction> {
        vec![
            ToolFunction {
                name: "get_weather".into(),
                description: Some("The weather in a city".into()),
                parameters: Some(json!({
                    "type": "object",
                    "properties": {"city": {"enum": ["Paris", "Rome"]}},
                    "required": ["city"],
                    "additionalProperties": false,
                })),
            },
            ToolFunction {
                name: "now".into(),
                description: None,
                parameters: Some(
                    json!({"type": "object", "properties": {}, "additionalProperties": false}),
                ),
            },
        ]
    }

    #[test]
    fn sampled_calls_parse_and_name_a_given_function() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/base");
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let grammars = Grammars::new(&tok, 512).unwrap();
        let alternatives = [
            ToolAlternative::None,
            ToolAlternative::Text,
            ToolAlternative::Json(
                json!({"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"], "additionalProperties": false}),
            ),
        ];
        for alternative in &alternatives {
            let proto = grammars
                .compile(&tool_call_grammar(&weather(), alternative).unwrap())
                .unwrap();
            for seed in 0..12u64 {
                let mut c = proto.clone();
                let mut sampler = Sampler::new(SamplingParams {
                    temperature: 1.0,
                    seed,
                    ..Default::default()
                })
                .unwrap();
                let mut ids = Vec::new();
                for step in 0..150u64 {
                    // Logits that favour '<' at the start, so that calls are drawn often.
                    let mut logits: Vec<f32> = (0..512u64)
                        .map(|i| ((i * 7919 + step * 104_729 + seed * 31) % 997) as f32 / 100.0)
                        .collect();
                    if step == 0 && seed % 2 == 0 {
                        if let Some(lt) = tok.inner().token_to_id("<") {
                            logits[lt as usize] = 50.0;
                        }
                    }
                    let id = sampler
                        .sample_allowed(&logits, &ids, c.allowed().unwrap())
                        .unwrap();
                    if tok.is_eos(id) {
                        break;
                    }
                    c.commit(id).unwrap();
                    ids.push(id);
                    if c.is_finished() {
                        break;
                    }
                }
                let text = tok.decode(&ids, true).unwrap();
                let (content, call) = split_output(&text);
                match (alternative, call) {
                    (_, Some((name, args))) => {
                        assert!(content.is_empty(), "{text}");
                        let parsed = parse_tool_call(&text).unwrap();
                        assert_eq!(
                            serde_json::from_str::<Value>(&parsed.arguments).unwrap(),
                            serde_json::from_str::<Value>(&args).unwrap(),
                            "{text}"
                        );
                        let args: Value = serde_json::from_str(&args).unwrap();
                        match name.as_str() {
                            "get_weather" => assert!(
                                ["Paris", "Rome"].contains(&args["city"].as_str().unwrap()),
                                "{text}"
                            ),
                            "now" => assert_eq!(args, json!({})),
                            other => panic!("{other}: {text}"),
                        }
                    }
                    (ToolAlternative::None, None) => panic!("a call was required: {text}"),
                    (ToolAlternative::Json(_), None) => {
                        let v: Value = serde_json::from_str(&content).unwrap();
                        assert!(v["a"].is_boolean(), "{text}");
                    }
                    (_, None) => assert!(!content.starts_with(TOOL_CALL), "{text}"),
                }
            }
        }
    }

    #[test]
    fn bad_functions_are_refused() {
        let mut f = weather();
        f[1].name = "get_weather".into();
        assert!(tool_call_grammar(&f, &ToolAlternative::None).is_err());
        f[1].name = "no spaces".into();
        assert!(tool_call_grammar(&f, &ToolAlternative::None).is_err());
        f[1].name = "ok".into();
        f[1].parameters = Some(json!("string"));
        assert!(tool_call_grammar(&f, &ToolAlternative::None).is_err());
        assert!(tool_call_grammar(&[], &ToolAlternative::Text).is_err());
    }

    #[test]
    fn a_stream_gives_text_or_a_call_in_pieces() {
        let call = render_tool_call("get_weather", r#"{"city": "Paris"}"#);
        let mut s = ToolCallStream::default();
        let mut pieces = Vec::new();
        for ch in call.chars() {
            pieces.extend(s.push(&ch.to_string()));
        }
        pieces.extend(s.finish());
        assert!(s.is_call());
        assert_eq!(pieces[0], ToolStreamPiece::CallStart("get_weather".into()));
        let args: String = pieces[1..]
            .iter()
            .map(|p| match p {
                ToolStreamPiece::Arguments(a) => a.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(args, r#"{"city": "Paris"}"#);
        // Text that merely starts like the marker is text once it differs.
        let mut s = ToolCallStream::default();
        assert_eq!(s.push("<tool"), vec![]);
        assert_eq!(
            s.push("s are"),
            vec![ToolStreamPiece::Text("<tools are".into())]
        );
        assert_eq!(s.push(" fun"), vec![ToolStreamPiece::Text(" fun".into())]);
        let mut s = ToolCallStream::default();
        assert_eq!(s.push("<tool_"), vec![]);
        assert_eq!(s.finish(), vec![ToolStreamPiece::Text("<tool_".into())]);
        // A call cut off keeps what it has.
        let (content, call) = split_output("<tool_call>{\"name\": \"now\", \"arguments\": {\"x");
        assert_eq!(
            (content.as_str(), call),
            ("", Some(("now".into(), "{\"x".into())))
        );
    }
}
