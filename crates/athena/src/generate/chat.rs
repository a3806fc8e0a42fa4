//! Chat templates: a checkpoint's Jinja template rendered the way Hugging Face renders it.
//!
//! The environment matches `transformers`' `_compile_jinja_template`: `trim_blocks` and
//! `lstrip_blocks` on, trailing newline dropped, `break`/`continue` allowed, a
//! `raise_exception(msg)` function that fails rendering, and `tojson` spelled like Python's
//! `json.dumps(..., ensure_ascii=False)`. Python string and dict methods (`.strip()`,
//! `.startswith()`, `.items()`, ...) come from `minijinja_contrib`'s pycompat layer.
//!
//! Templates come from downloaded checkpoints and are treated as untrusted: the environment has
//! no loader (no file access), every render runs on a fuel budget so that a template that loops
//! without end fails, the values a render builds may add up to [`MAX_VALUE_BYTES`] and its
//! output to [`MAX_OUTPUT_BYTES`] (see `template_budget` for how).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use minijinja::machinery::{self, Vm};
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

pub use super::template_budget::MAX_VALUE_BYTES;
use super::template_budget::{self, Budget, Exhausted};
use crate::error::{Error, Result};

/// The Tulu-style template of OLMoE-Instruct, for checkpoints that ship no chat template:
/// `<|system|>\n…\n<|user|>\n…\n<|assistant|>\n…<eos>\n`, ending with `<|assistant|>\n` when a
/// generation prompt is asked for.
pub const DEFAULT_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}\
{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}\
{% elif message['role'] == 'assistant' %}{% if not loop.last %}\
{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}\
{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}\
{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}";

/// The most a rendered chat may hold, in bytes; a template writing more fails. Output captured
/// into a variable (`{% set x %}...{% endset %}`, macro calls) counts too.
pub const MAX_OUTPUT_BYTES: usize = 4 << 20;

/// The instructions one render may execute; a template needing more fails.
pub const FUEL: u64 = 5_000_000;

/// Where [`ChatTemplate::builtin`] says its template came from, in errors.
const BUILTIN_ORIGIN: &str = "<built-in chat template>";

/// The template's name inside its environment.
const NAME: &str = "chat";

/// One turn of a conversation, as chat templates see it (`message['role']`, `message['content']`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks: `system`, `user` or `assistant` for the usual templates.
    pub role: String,
    /// What they say.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The special-token strings a template may refer to. An absent token is left undefined in the
/// template, as Hugging Face leaves it, which prints as the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `bos_token`.
    pub bos_token: Option<String>,
    /// `eos_token`.
    pub eos_token: Option<String>,
    /// `pad_token`.
    pub pad_token: Option<String>,
}

/// A chat template, compiled once, rendered any number of times.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: PathBuf,
    special: SpecialTokens,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("source_len", &self.source.len())
            .field("special", &self.special)
            .finish()
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// The sandboxed environment Hugging Face's settings describe.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_fuel(Some(FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", super::pyjson::tojson);
    env.add_function("raise_exception", raise_exception);
    template_budget::guard_environment(&mut env, MAX_VALUE_BYTES);
    env
}

impl ChatTemplate {
    /// Compiles `source`. `origin` names the file it came from (`tokenizer_config.json`,
    /// `chat_template.jinja`) in errors; a syntax error is an [`Error::Tokenizer`] naming it.
    pub fn new(
        source: impl Into<String>,
        special: SpecialTokens,
        origin: impl Into<PathBuf>,
    ) -> Result<Self> {
        let source = source.into();
        let origin = origin.into();
        let mut env = environment();
        env.add_template_owned(NAME, source.clone()).map_err(|e| {
            Error::tokenizer(&origin, format!("chat template does not compile: {e}"))
        })?;
        Ok(ChatTemplate {
            env,
            source,
            origin,
            special,
        })
    }

    /// [`DEFAULT_CHAT_TEMPLATE`] with the given special tokens.
    pub fn builtin(special: SpecialTokens) -> Result<Self> {
        Self::new(DEFAULT_CHAT_TEMPLATE, special, BUILTIN_ORIGIN)
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The file the template came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The special tokens passed to the template.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Renders a conversation. With `add_generation_prompt`, the template appends what opens the
    /// assistant's reply. A failing render (`raise_exception`, a type error, running out of fuel,
    /// values past [`MAX_VALUE_BYTES`], output past [`MAX_OUTPUT_BYTES`]) is an
    /// [`Error::Tokenizer`] naming the template's file.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let fail = |msg: String| Error::tokenizer(&self.origin, msg);
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| fail(format!("chat template missing from its environment: {e}")))?;
        let compiled = machinery::get_compiled_template(&template);
        let code = template_budget::instrument(&compiled.instructions);
        let blocks: BTreeMap<_, _> = compiled
            .blocks
            .iter()
            .map(|(name, block)| (*name, template_budget::instrument(block)))
            .collect();
        let budget = Budget::new(MAX_VALUE_BYTES, MAX_OUTPUT_BYTES);
        // What the template sees; absent special tokens are left out, hence undefined.
        let mut root: BTreeMap<&str, Value> = BTreeMap::new();
        root.insert("messages", Value::from_serialize(messages));
        root.insert("add_generation_prompt", Value::from(add_generation_prompt));
        let special = [
            ("bos_token", &self.special.bos_token),
            ("eos_token", &self.special.eos_token),
            ("pad_token", &self.special.pad_token),
        ];
        for (name, token) in special {
            if let Some(token) = token {
                root.insert(name, Value::from(token.as_str()));
            }
        }
        for (name, check) in template_budget::check_functions(&budget) {
            root.insert(name, check);
        }
        let mut text = String::new();
        let mut out = machinery::make_string_output(&mut text);
        let run = Vm::new(&self.env).eval(
            &code,
            Value::from(root),
            &blocks,
            &mut out,
            compiled.initial_auto_escape,
        );
        match (run, budget.exhausted()) {
            (Ok(_), _) => Ok(text),
            (Err(_), Some(Exhausted::Values)) => Err(fail(format!(
                "rendering the chat template: the values it builds exceed the template limit \
                 of {MAX_VALUE_BYTES} bytes"
            ))),
            (Err(_), Some(Exhausted::Output)) => Err(fail(format!(
                "rendering the chat template: output exceeds the template limit of \
                 {MAX_OUTPUT_BYTES} bytes"
            ))),
            (Err(e), None) if e.kind() == ErrorKind::OutOfFuel => Err(fail(format!(
                "rendering the chat template: it did not finish within {FUEL} steps"
            ))),
            (Err(e), None) => Err(fail(format!("rendering the chat template: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TULU: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}";

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Hi there,\nhow are you? é🙂"),
            ChatMessage::assistant("Fine."),
            ChatMessage::user("  And now?  "),
        ]
    }

    fn tokens(bos: Option<&str>, eos: Option<&str>, pad: Option<&str>) -> SpecialTokens {
        SpecialTokens {
            bos_token: bos.map(str::to_owned),
            eos_token: eos.map(str::to_owned),
            pad_token: pad.map(str::to_owned),
        }
    }

    fn compile(source: &str) -> Result<ChatTemplate> {
        ChatTemplate::new(source, SpecialTokens::default(), "tokenizer_config.json")
    }

    // Expected strings below were rendered by transformers' `render_jinja_template`.

    #[test]
    fn tulu_matches_transformers() -> Result<()> {
        let eot = Some("<|endoftext|>");
        let t = ChatTemplate::new(TULU, tokens(eot, eot, Some("<|padding|>")), "x")?;
        assert_eq!(
            t.render(&conversation(), true)?,
            "<|endoftext|><|system|>\nYou are terse.\n<|user|>\nHi there,\nhow are you? é🙂\n\
             <|assistant|>\nFine.<|endoftext|>\n<|user|>\n  And now?  \n<|assistant|>\n"
        );
        assert_eq!(
            t.render(&conversation(), false)?,
            "<|endoftext|><|system|>\nYou are terse.\n<|user|>\nHi there,\nhow are you? é🙂\n\
             <|assistant|>\nFine.<|endoftext|>\n<|user|>\n  And now?  \n"
        );
        // No bos_token: it is undefined and prints nothing.
        let t = ChatTemplate::new(TULU, tokens(None, eot, None), "x")?;
        assert_eq!(
            t.render(&conversation()[..3], false)?,
            "<|system|>\nYou are terse.\n<|user|>\nHi there,\nhow are you? é🙂\n\
             <|assistant|>\nFine.<|endoftext|>"
        );
        Ok(())
    }

    #[test]
    fn builtin_is_the_tulu_template() -> Result<()> {
        assert_eq!(DEFAULT_CHAT_TEMPLATE, TULU);
        let t = ChatTemplate::builtin(tokens(None, Some("</s>"), None))?;
        assert_eq!(
            t.render(&[ChatMessage::user("hi")], true)?,
            "<|user|>\nhi\n<|assistant|>\n"
        );
        Ok(())
    }

    #[test]
    fn whitespace_control_and_strip_match_transformers() -> Result<()> {
        let source = "{% for message in messages %}\n    {% if message.role == 'user' %}\n<u>{{ message.content | trim }}</u>\n    {% else %}\n<o>{{ message.content.strip() }}</o>\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}\n<gen>\n{% endif %}\n";
        assert_eq!(
            compile(source)?.render(&conversation(), true)?,
            "<o>You are terse.</o>\n<u>Hi there,\nhow are you? é🙂</u>\n<o>Fine.</o>\n<u>And now?</u>\n<gen>\n"
        );
        let source =
            "{{ messages[0].content.startswith('You') }}|{{ messages[3].content.strip().upper() }}";
        assert_eq!(
            compile(source)?.render(&conversation(), false)?,
            "True|AND NOW?"
        );
        Ok(())
    }

    #[test]
    fn tojson_matches_transformers() -> Result<()> {
        let source = r#"{{ messages | tojson }}|{{ {'a': 1.5, 'b': [1, 2, true, none], 'c': 'x<y>&\'é\n"\\\t\x01'} | tojson(indent=2) }}|{{ [1e-5, 1e16, 123456789.0, 0.1, -0.0, {}] | tojson }}|{{ {'z': 1, 'a': {'k': []}} | tojson(sort_keys=true, separators=(',', ':')) }}"#;
        assert_eq!(
            compile(source)?.render(&conversation()[..2], false)?,
            "[{\"role\": \"system\", \"content\": \"You are terse.\"}, {\"role\": \"user\", \"content\": \"Hi there,\\nhow are you? é🙂\"}]|{\n  \"a\": 1.5,\n  \"b\": [\n    1,\n    2,\n    true,\n    null\n  ],\n  \"c\": \"x<y>&'é\\n\\\"\\\\\\t\\u0001\"\n}|[1e-05, 1e+16, 123456789.0, 0.1, -0.0, {}]|{\"a\":{\"k\":[]},\"z\":1}"
        );
        Ok(())
    }

    #[test]
    fn loop_controls_work() -> Result<()> {
        let source = "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{% if loop.index0 == 3 %}{% break %}{% endif %}{{ m.role }};{% endfor %}";
        assert_eq!(
            compile(source)?.render(&conversation(), false)?,
            "system;assistant;"
        );
        Ok(())
    }

    #[test]
    fn raise_exception_fails_with_its_message() -> Result<()> {
        let source = "{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}{{ m.content }}{% endfor %}";
        let t = compile(source)?;
        assert_eq!(t.render(&[ChatMessage::user("ok")], false)?, "ok");
        let err = t
            .render(&conversation(), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("Conversation roles must alternate user/assistant"),
            "{err}"
        );
        assert!(err.contains("tokenizer_config.json"), "{err}");
        Ok(())
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = ChatTemplate::new(
            "{% for m in messages %}",
            SpecialTokens::default(),
            "tokenizer_config.json",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("tokenizer_config.json: chat template does not compile"),
            "{err}"
        );
    }

    #[test]
    fn hostile_templates_fail_instead_of_running_away() -> Result<()> {
        // Endless in practice: 10^15 iterations.
        let spin = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{% endfor %}{% endfor %}{% endfor %}";
        let err = compile(spin)?
            .render(&[], false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("did not finish"), "{err}");

        // Recursion without end.
        let recurse = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(compile(recurse)?.render(&[], false).is_err());
        let include_self = "{% include 'chat' %}";
        assert!(compile(include_self)?.render(&[], false).is_err());

        // Huge output from little work.
        let huge = "{% for a in range(1000) %}{{ 'x' * 100000 }}{% endfor %}";
        let err = compile(huge)?
            .render(&[], false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("output exceeds"), "{err}");
        Ok(())
    }

    fn render_error(source: &str) -> Result<String> {
        Ok(compile(source)?
            .render(&conversation(), true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default())
    }

    #[test]
    fn format_conversions_with_multibyte_characters_are_refused() -> Result<()> {
        // minijinja's printf-style parser panics inside such a conversion; found by the
        // `chat_template` fuzz target.
        for hostile in [
            "{{ '%(ключ)s' | format(1) }}",
            "{{ '%(for message in m\u{fffd}' | format(1) }}",
            "{{ '%5é' | format(1) }}",
            "{{ '{ключ}'.format(1) }}",
            "{{ '{0[ключ]}'.format([1]) }}",
            // An index reads on to its `]`, past the field's `}`.
            "{{ '{J[(%} x \u{fffd}'.format(1) }}",
            // Braces mean nothing to the printf-style filter.
            "{{ '{%(}\u{fffd}' | format(1) }}",
        ] {
            let err = render_error(hostile)?;
            assert!(err.contains("not ASCII"), "{hostile}: {err}");
        }
        // Text around conversions may hold any character.
        let ok = compile("{{ 'é %s ключ %%' | format(1) }}")?.render(&conversation(), true)?;
        assert_eq!(ok, "é 1 ключ %");
        // Percent signs mean nothing to `str.format`.
        let ok = compile("{{ '%(ключ)s {}'.format(1) }}")?.render(&conversation(), true)?;
        assert_eq!(ok, "%(ключ)s 1");
        Ok(())
    }

    #[test]
    fn doubling_values_stop_at_the_template_limit() -> Result<()> {
        // Forty doublings of a 16-byte string ask for 16 TiB in forty steps.
        let probe = "{% set ns = namespace(s='aaaaaaaaaaaaaaaa') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
        let err = render_error(probe)?;
        assert!(err.contains("exceed the template limit of"), "{err}");
        assert!(err.contains("tokenizer_config.json"), "{err}");
        // The same by `+`, by lists, by nesting lists, unrolled, inside a macro, and by
        // operations whose result dwarfs their input.
        for hostile in [
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "{% set ns = namespace(l=[1, 2]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
            "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l | length }}",
            "{% set s = 'x' * 99999999 %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}",
            "{% macro d(s, n) %}{% if n > 0 %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('abcd', 64) }}",
            "{% set s = 'a' * 30000 %}{{ s | replace('a', s) | length }}",
            "{% set s = 'a' * 30000 %}{{ s.replace('a', s) | length }}",
            "{{ ([''] * 30000000) | join('x' * 1000) }}",
            "{{ 'a' | indent(999999999999) }}",
            "{{ '%999999999999s' | format('a') }}",
            "{{ '% 5555555555555f' | format(1.5) }}",
            "{{ '%.999999999999f' | format(1.5) }}",
            "{{ [1] | batch(999999999999, 'x') | list }}",
        ] {
            let err = render_error(hostile)?;
            assert!(err.contains("limit"), "{hostile}: {err}");
        }
        // Deep nesting is refused before printing it could exhaust the stack.
        let deep = "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}";
        assert!(render_error(deep)?.contains("nested deeper"));
        Ok(())
    }

    #[test]
    fn the_checks_cannot_be_reached_or_bypassed() -> Result<()> {
        let err = render_error("{% include 'chat' %}")?;
        assert!(err.contains("cannot include"), "{err}");
        let err = render_error("{% extends 'chat' %}")?;
        assert!(err.contains("cannot include"), "{err}");
        // Macros, blocks and loops still work through the instrumented code.
        let source = "{% macro m(x) %}<{{ x ~ '!' }}>{% endmacro %}{% block b %}{% for m2 in messages %}{{ m(m2.role) }}{% endfor %}{% endblock %}{{ [1, 2] + [3] }}";
        assert_eq!(
            compile(source)?.render(&conversation()[..2], false)?,
            "<system!><user!>[1, 2, 3]"
        );
        Ok(())
    }

    #[test]
    fn no_file_access() -> Result<()> {
        let t = compile("{% include '/etc/passwd' %}")?;
        assert!(t.render(&[], false).is_err());
        Ok(())
    }

    #[test]
    fn messages_deserialize_from_json() -> std::result::Result<(), serde_json::Error> {
        let m: Vec<ChatMessage> = serde_json::from_str(r#"[{"role": "user", "content": "hi"}]"#)?;
        assert_eq!(m, vec![ChatMessage::user("hi")]);
        Ok(())
    }
}
