//! The tokenizer of a model directory: `tokenizer.json`, the special tokens and chat template of
//! `tokenizer_config.json` (or `chat_template.jinja`), and every id that ends generation.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::chat::{ChatTemplate, SpecialTokens};
use crate::error::{Error, Result};

/// A Hugging Face tokenizer with what generation needs around it.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.json`, named in encode and decode errors.
    path: PathBuf,
    special: SpecialTokens,
    chat_template: Option<ChatTemplate>,
    eos_ids: Vec<u32>,
}

/// A special token in `tokenizer_config.json`: a string, or an added-token object.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenField {
    Text(String),
    Added { content: String },
}

impl TokenField {
    fn into_content(self) -> String {
        match self {
            TokenField::Text(s) | TokenField::Added { content: s } => s,
        }
    }
}

/// `chat_template`: one template, or named templates of which `default` is the one used.
#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// The parts of `tokenizer_config.json` that are read; the rest is ignored.
#[derive(Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<TemplateField>,
    #[serde(default)]
    bos_token: Option<TokenField>,
    #[serde(default)]
    eos_token: Option<TokenField>,
    #[serde(default)]
    pad_token: Option<TokenField>,
}

/// `eos_token_id` in `config.json` or `generation_config.json`: absent, null, an id or a list.
#[derive(Deserialize, Default)]
struct EosConfig {
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

/// Reads a file, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses an optional JSON file; `bad` builds the error for malformed content.
fn parse_optional<T: DeserializeOwned + Default>(
    path: &Path,
    bad: fn(&Path, String) -> Error,
) -> Result<T> {
    match read_optional(path)? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| bad(path, e.to_string())),
    }
}

fn config_error(path: &Path, msg: String) -> Error {
    Error::config(path, format!("reading eos_token_id: {msg}"))
}

fn tokenizer_error(path: &Path, msg: String) -> Error {
    Error::tokenizer(path, msg)
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory.
    ///
    /// - `tokenizer.json` is required; malformed, it is an [`Error::Tokenizer`] naming it.
    /// - `tokenizer_config.json` is optional and gives `bos_token`, `eos_token`, `pad_token`
    ///   (strings or `{"content": ...}` objects) and `chat_template` (a string, or a list of
    ///   `{name, template}` of which the one named `default` is used).
    /// - `chat_template.jinja`, when present, takes priority over the config's template, as in
    ///   `transformers`.
    /// - The eos ids are the union, in this order, of `eos_token_id` from `config.json` and
    ///   `generation_config.json` (an id, a list, or absent) and the id of `eos_token`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let bytes = fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let inner = parse_tokenizer_json(&bytes, &path)?;
        Self::from_parsed(inner, dir)
    }

    /// [`Tokenizer::from_dir`] over a `tokenizer.json` already parsed: the special tokens,
    /// chat template and eos ids come from the other files of `dir` by the same rules.
    pub fn from_parsed(inner: tokenizers::Tokenizer, dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = parse_optional(&config_path, tokenizer_error)?;
        let special = SpecialTokens {
            bos_token: config.bos_token.map(TokenField::into_content),
            eos_token: config.eos_token.map(TokenField::into_content),
            pad_token: config.pad_token.map(TokenField::into_content),
        };

        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = match read_optional(&jinja_path)? {
            Some(source) => Some(ChatTemplate::new(source, special.clone(), jinja_path)?),
            None => match config.chat_template {
                None => None,
                Some(TemplateField::One(source)) => {
                    Some(ChatTemplate::new(source, special.clone(), &config_path)?)
                }
                Some(TemplateField::Named(list)) => {
                    let source = list
                        .into_iter()
                        .find(|t| t.name == "default")
                        .map(|t| t.template)
                        .ok_or_else(|| {
                            Error::tokenizer(
                                &config_path,
                                "chat_template lists named templates but none is named `default`",
                            )
                        })?;
                    Some(ChatTemplate::new(source, special.clone(), &config_path)?)
                }
            },
        };

        let mut eos_ids = Vec::new();
        for name in ["config.json", "generation_config.json"] {
            let eos: EosConfig = parse_optional(&dir.join(name), config_error)?;
            match eos.eos_token_id {
                None => {}
                Some(OneOrMany::One(id)) => eos_ids.push(id),
                Some(OneOrMany::Many(ids)) => eos_ids.extend(ids),
            }
        }
        if let Some(token) = &special.eos_token {
            match inner.token_to_id(token) {
                Some(id) => eos_ids.push(id),
                None => tracing::warn!(
                    path = %config_path.display(),
                    "eos_token `{token}` is not in the vocabulary"
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        eos_ids.retain(|id| seen.insert(*id));

        Ok(Tokenizer {
            inner,
            path,
            special,
            chat_template,
            eos_ids,
        })
    }

    /// Wraps a tokenizer built in memory, with no special tokens, template or eos ids.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Tokenizer {
        Tokenizer {
            inner,
            path: PathBuf::from("tokenizer.json"),
            special: SpecialTokens::default(),
            chat_template: None,
            eos_ids: Vec::new(),
        }
    }

    /// Text to ids. `add_special_tokens` applies the tokenizer's post-processor (BOS and the like);
    /// a rendered chat template already holds its special tokens, so encode it without.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| Error::tokenizer(&self.path, format!("encoding failed: {e}")))
    }

    /// Ids to text, dropping special tokens when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::tokenizer(&self.path, format!("decoding failed: {e}")))
    }

    /// Every id that ends generation, without repeats.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// The checkpoint's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The special-token strings of `tokenizer_config.json`.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Tokens the tokenizer knows, added tokens included. The model's embedding may be larger.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, added tokens included.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// A small byte-level BPE tokenizer for tests, built in code.
#[cfg(test)]
pub(crate) mod fixture {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    /// The id of the special token `<|endoftext|>`.
    pub(crate) const EOT: u32 = 261;

    /// `tokenizer.json` text: the 256 byte tokens (ids 0..256, in the order of the chars that
    /// stand for the bytes), a few merges, one of which ("©ð") joins the end of `é` with the
    /// start of an emoji, and `<|endoftext|>`. Tests look ids up by token string.
    pub(crate) fn tokenizer_json() -> String {
        let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
        alphabet.sort_unstable();
        let mut vocab = serde_json::Map::new();
        for (id, c) in alphabet.iter().enumerate() {
            vocab.insert(c.to_string(), serde_json::Value::from(id));
        }
        let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("©", "ð")];
        for (i, (a, b)) in merges.iter().enumerate() {
            vocab.insert(format!("{a}{b}"), serde_json::Value::from(256 + i));
        }
        let byte_level = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false
        });
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{
                "id": EOT, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }],
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": null,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab,
                "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()
            }
        })
        .to_string()
    }

    /// The fixture as a [`super::Tokenizer`].
    pub(crate) fn tokenizer() -> crate::Result<super::Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json().as_bytes())
            .map_err(|e| crate::Error::tokenizer("fixture", e.to_string()))?;
        Ok(super::Tokenizer::from_tokenizer(inner))
    }
}

/// Builds the tokenizer of `tokenizer.json`'s bytes. The file must be JSON first: the
/// `tokenizers` crate panics on a syntax error inside some of its sections (the decoder's),
/// and a panic it raises on other malformed input is turned into an error too.
fn parse_tokenizer_json(bytes: &[u8], path: &Path) -> Result<tokenizers::Tokenizer> {
    // Every string parsed, escapes included (`IgnoredAny` lets a lone surrogate through).
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map_err(|e| Error::tokenizer(path, format!("malformed tokenizer: not JSON: {e}")))?;
    match std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes)) {
        Ok(Ok(inner)) => Ok(inner),
        Ok(Err(e)) => Err(Error::tokenizer(path, format!("malformed tokenizer: {e}"))),
        Err(_) => Err(Error::tokenizer(
            path,
            "malformed tokenizer: the tokenizers library could not read it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{tokenizer_json, EOT};
    use super::*;
    use crate::generate::chat::ChatMessage;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn model_dir(files: &[(&str, &str)]) -> std::io::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("tokenizer.json"), tokenizer_json())?;
        for (name, text) in files {
            fs::write(dir.path().join(name), text)?;
        }
        Ok(dir)
    }

    #[test]
    fn loads_tokenizer_alone() -> TestResult {
        let dir = model_dir(&[])?;
        let tok = Tokenizer::from_dir(dir.path())?;
        assert!(tok.chat_template().is_none());
        assert!(tok.eos_ids().is_empty());
        assert_eq!(tok.special_tokens(), &SpecialTokens::default());
        assert_eq!(tok.vocab_size(), 262);
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(EOT));
        assert_eq!(tok.inner().get_vocab_size(false), 261);
        let text = "hello wörld é🙂<|endoftext|>";
        let ids = tok.encode(text, false)?;
        assert_eq!(ids.last(), Some(&EOT));
        assert_eq!(tok.token_to_id("hell").map(|id| ids[0] == id), Some(true));
        assert_eq!(tok.decode(&ids, false)?, text);
        assert_eq!(tok.decode(&ids, true)?, "hello wörld é🙂");
        Ok(())
    }

    #[test]
    fn reads_config_tokens_template_and_eos_union() -> TestResult {
        let config = r#"{
            "bos_token": {"content": "<|endoftext|>", "lstrip": false, "__type": "AddedToken"},
            "eos_token": "<|endoftext|>",
            "pad_token": null,
            "model_max_length": 4096,
            "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
        }"#;
        let dir = model_dir(&[
            ("tokenizer_config.json", config),
            ("config.json", r#"{"eos_token_id": 7, "vocab_size": 300}"#),
            ("generation_config.json", r#"{"eos_token_id": [9, 7, 261]}"#),
        ])?;
        let tok = Tokenizer::from_dir(dir.path())?;
        assert_eq!(tok.eos_ids(), &[7, 9, EOT]);
        assert!(tok.is_eos(9) && !tok.is_eos(8));
        let special = tok.special_tokens();
        assert_eq!(special.bos_token.as_deref(), Some("<|endoftext|>"));
        assert_eq!(special.eos_token.as_deref(), Some("<|endoftext|>"));
        assert_eq!(special.pad_token, None);
        let template = tok.chat_template().ok_or("no template")?;
        assert_eq!(template.origin(), dir.path().join("tokenizer_config.json"));
        let text = template.render(
            &[ChatMessage::user("a"), ChatMessage::assistant("b")],
            false,
        )?;
        assert_eq!(text, "<|endoftext|>a<|endoftext|>b<|endoftext|>");
        Ok(())
    }

    #[test]
    fn named_templates_use_default() -> TestResult {
        let config = r#"{"chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "plain"}
        ]}"#;
        let dir = model_dir(&[("tokenizer_config.json", config)])?;
        let tok = Tokenizer::from_dir(dir.path())?;
        assert_eq!(tok.chat_template().map(ChatTemplate::source), Some("plain"));

        let config = r#"{"chat_template": [{"name": "tool_use", "template": "tools"}]}"#;
        let dir = model_dir(&[("tokenizer_config.json", config)])?;
        let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
        assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
        Ok(())
    }

    #[test]
    fn chat_template_file_wins() -> TestResult {
        let dir = model_dir(&[
            (
                "tokenizer_config.json",
                r#"{"chat_template": "from config"}"#,
            ),
            ("chat_template.jinja", "from file\n"),
        ])?;
        let tok = Tokenizer::from_dir(dir.path())?;
        let template = tok.chat_template().ok_or("no template")?;
        assert_eq!(template.origin(), dir.path().join("chat_template.jinja"));
        assert_eq!(template.render(&[], false)?, "from file");
        Ok(())
    }

    #[test]
    fn errors_name_the_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
        assert!(
            matches!(&err, Error::Io { path, .. } if path.ends_with("tokenizer.json")),
            "{err}"
        );

        fs::write(dir.path().join("tokenizer.json"), "{\"model\": 3}")?;
        let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
        assert!(
            matches!(&err, Error::Tokenizer { path, .. } if path.ends_with("tokenizer.json")),
            "{err}"
        );

        // A syntax error inside the decoder made the tokenizers crate panic (found by the
        // tokenizer_json fuzz target).
        // So did a lone surrogate escape there.
        for decoder in ["{\"type\":\"Byt89,\n \"v\": 9", "{\"x\":\"\\ud800\","] {
            let broken =
                tokenizer_json().replacen("\"decoder\":{", &format!("\"decoder\":{decoder}"), 1);
            assert_ne!(broken, tokenizer_json());
            fs::write(dir.path().join("tokenizer.json"), broken)?;
            let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
            assert!(
                matches!(&err, Error::Tokenizer { path, msg } if path.ends_with("tokenizer.json") && msg.contains("not JSON")),
                "{err}"
            );
        }

        let dir = model_dir(&[("tokenizer_config.json", "{\"eos_token\": 5}")])?;
        let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
        assert!(
            matches!(&err, Error::Tokenizer { path, .. } if path.ends_with("tokenizer_config.json")),
            "{err}"
        );

        let dir = model_dir(&[("tokenizer_config.json", r#"{"chat_template": "{% if %}"}"#)])?;
        let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
        assert!(
            matches!(&err, Error::Tokenizer { path, msg } if path.ends_with("tokenizer_config.json") && msg.contains("does not compile")),
            "{err}"
        );

        let dir = model_dir(&[("generation_config.json", r#"{"eos_token_id": "x"}"#)])?;
        let err = Tokenizer::from_dir(dir.path()).err().ok_or("accepted")?;
        assert!(
            matches!(&err, Error::Config { path, .. } if path.ends_with("generation_config.json")),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn null_eos_and_unknown_eos_token_are_tolerated() -> TestResult {
        let dir = model_dir(&[
            ("config.json", r#"{"eos_token_id": null}"#),
            ("tokenizer_config.json", r#"{"eos_token": "</s>"}"#),
        ])?;
        let tok = Tokenizer::from_dir(dir.path())?;
        assert!(tok.eos_ids().is_empty());
        Ok(())
    }
}
