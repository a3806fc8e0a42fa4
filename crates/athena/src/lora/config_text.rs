//! Reading adapter configs as Python's `json` writes them: NaN and Infinity, file-ordered
//! objects, and the checks of ranks and factors.

use std::borrow::Cow;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The file that describes an adapter, in both formats.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// Python's `json.dump` writes NaN and ±Infinity as bare words, which JSON lacks; they are
/// quoted here (outside strings) so that a number field can read them and refuse them by name.
pub(crate) fn python_json(text: &str) -> Cow<'_, str> {
    const WORDS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    if !WORDS.iter().any(|w| text.contains(w)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(w) = WORDS.iter().find(|w| rest.starts_with(**w)) {
            let before_ok = !text[..i]
                .chars()
                .next_back()
                .is_some_and(|p| p.is_alphanumeric() || p == '_');
            let after_ok = !rest[w.len()..]
                .chars()
                .next()
                .is_some_and(|n| n.is_alphanumeric() || n == '_');
            if before_ok && after_ok {
                out.push('"');
                out.push_str(w);
                out.push('"');
                i += w.len();
                continue;
            }
        }
        out.push(c);
        i += c.len_utf8();
    }
    Cow::Owned(out)
}

/// A number as Python's json writes it: a JSON number, or NaN/Infinity quoted by
/// [`python_json`].
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(try_from = "NumOrWord")]
pub(crate) struct PyNumber(pub(crate) f64);

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum NumOrWord {
    Num(f64),
    Word(String),
}

impl TryFrom<NumOrWord> for PyNumber {
    type Error = String;
    fn try_from(v: NumOrWord) -> std::result::Result<Self, String> {
        match v {
            NumOrWord::Num(x) => Ok(PyNumber(x)),
            NumOrWord::Word(w) => match w.as_str() {
                "NaN" => Ok(PyNumber(f64::NAN)),
                "Infinity" => Ok(PyNumber(f64::INFINITY)),
                "-Infinity" => Ok(PyNumber(f64::NEG_INFINITY)),
                other => Err(format!("expected a number, got the string {other:?}")),
            },
        }
    }
}

/// A JSON object read in file order (Python dicts keep insertion order, and PEFT's
/// `rank_pattern` lookup takes the first key that matches).
#[derive(Debug, Clone)]
pub(crate) struct Ordered<V>(pub(crate) Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Parses a config, naming the field at fault where the text is an object (every field of
/// the raw structs is optional, so the one that fails on its own is the culprit).
pub(crate) fn parse_config<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let field = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .ok()
            .and_then(|map| {
                map.into_iter().find_map(|(k, v)| {
                    let one = serde_json::Map::from_iter([(k.clone(), v)]);
                    serde_json::from_value::<T>(serde_json::Value::Object(one))
                        .is_err()
                        .then_some(k)
                })
            });
        match field {
            Some(f) => Error::config(path, format!("invalid `{f}`: {e}")),
            None => Error::config(path, format!("not a valid adapter config: {e}")),
        }
    })
}

/// Checks a rank read from a config: a positive integer.
pub(crate) fn check_rank(path: &Path, field: &str, r: PyNumber) -> Result<usize> {
    let v = r.0;
    if !v.is_finite() || v.fract() != 0.0 || v < 0.0 || v > (1u64 << 32) as f64 {
        return Err(Error::config(
            path,
            format!("`{field}` = {v} is not a positive integer rank"),
        ));
    }
    if v == 0.0 {
        return Err(Error::config(
            path,
            format!("`{field}` = 0: a LoRA rank must be positive"),
        ));
    }
    Ok(v as usize)
}

/// Checks an alpha or scale read from a config: finite and not zero.
pub(crate) fn check_factor(path: &Path, field: &str, x: PyNumber) -> Result<f64> {
    let v = x.0;
    if !v.is_finite() {
        return Err(Error::config(
            path,
            format!("`{field}` = {v} is not finite"),
        ));
    }
    if v == 0.0 {
        return Err(Error::config(
            path,
            format!("`{field}` = 0 would make the adapter a no-op"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literals_are_quoted_outside_strings() {
        let text =
            r#"{"a": NaN, "b": -Infinity, "c": "NaN and Infinity", "d": [Infinity], "NaNx": 1}"#;
        assert_eq!(
            python_json(text),
            r#"{"a": "NaN", "b": "-Infinity", "c": "NaN and Infinity", "d": ["Infinity"], "NaNx": 1}"#
        );
        assert!(matches!(python_json("{\"a\": 1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn ordered_maps_keep_file_order() {
        let m: Ordered<u32> = serde_json::from_str(r#"{"z": 1, "a": 2, "m": 3}"#).unwrap();
        let keys: Vec<_> = m.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }
}
