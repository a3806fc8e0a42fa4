//! Python literals as JSON values: what the official mem0 client puts in a query string when a
//! parameter holds a dict. It hands the dict to httpx, which writes it with Python's `str()`
//! (`{'user_id': 'alice'}`), not as JSON. This parser reads the subset `repr` writes for JSON-like
//! data: dicts with string keys, lists, tuples, strings, integers, floats, `True`, `False`,
//! `None`, within a depth bound.

use serde_json::{Map, Number, Value};

/// Deepest nesting of dicts and lists accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a text is not a Python literal of JSON-like data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {msg}")]
pub struct LiteralError {
    /// Where the parser stopped.
    pub at: usize,
    /// What it expected or found.
    pub msg: String,
}

/// Parses `text`, a Python literal as `repr` writes it, into a JSON value.
pub fn parse(text: &str) -> Result<Value, LiteralError> {
    let mut p = Parser { s: text, at: 0 };
    let v = p.value(0)?;
    p.blank();
    if p.at != text.len() {
        return Err(p.error("text after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, msg: impl Into<String>) -> LiteralError {
        LiteralError {
            at: self.at,
            msg: msg.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.s[self.at..]
    }

    fn blank(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start_matches([' ', '\t', '\n', '\r']).len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.blank();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, LiteralError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        self.blank();
        let Some(c) = self.rest().chars().next() else {
            return Err(self.error("a value was expected"));
        };
        match c {
            '{' => self.dict(depth),
            '[' => self.sequence(depth, ']'),
            '(' => self.sequence(depth, ')'),
            '\'' | '"' => Ok(Value::String(self.string()?)),
            _ => self.word(),
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, LiteralError> {
        self.at += 1;
        let mut map = Map::new();
        if self.eat('}') {
            return Ok(Value::Object(map));
        }
        loop {
            self.blank();
            if !self.rest().starts_with(['\'', '"']) {
                return Err(self.error("a string key was expected"));
            }
            let key = self.string()?;
            if !self.eat(':') {
                return Err(self.error("`:` was expected after a key"));
            }
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            if self.eat('}') {
                return Ok(Value::Object(map));
            }
            if !self.eat(',') {
                return Err(self.error("`,` or `}` was expected"));
            }
            if self.eat('}') {
                return Ok(Value::Object(map));
            }
        }
    }

    fn sequence(&mut self, depth: usize, close: char) -> Result<Value, LiteralError> {
        self.at += 1;
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            if self.eat(close) {
                return Ok(Value::Array(items));
            }
            if !self.eat(',') {
                return Err(self.error(format!("`,` or `{close}` was expected")));
            }
            if self.eat(close) {
                return Ok(Value::Array(items));
            }
        }
    }

    /// A quoted string with Python's escapes (`\\`, `\'`, `\"`, `\n`, `\r`, `\t`, `\xNN`,
    /// `\uNNNN`, `\UNNNNNNNN` and the rarer single-letter ones).
    fn string(&mut self) -> Result<String, LiteralError> {
        let quote = self.rest().chars().next().unwrap_or('\'');
        self.at += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.rest().chars().next() else {
                return Err(self.error("the string is not closed"));
            };
            self.at += c.len_utf8();
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.rest().chars().next() else {
                return Err(self.error("the string ends inside an escape"));
            };
            self.at += e.len_utf8();
            let hex = |p: &mut Self, n: usize| -> Result<char, LiteralError> {
                let digits = p.rest().get(..n).filter(|d| d.len() == n);
                let code = digits
                    .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|d| u32::from_str_radix(d, 16).ok())
                    .ok_or_else(|| p.error(format!("{n} hex digits were expected")))?;
                p.at += n;
                char::from_u32(code)
                    .ok_or_else(|| p.error(format!("U+{code:X} is not a character")))
            };
            out.push(match e {
                '\\' | '\'' | '"' => e,
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'a' => '\u{7}',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'v' => '\u{b}',
                '0' => '\0',
                'x' => hex(self, 2)?,
                'u' => hex(self, 4)?,
                'U' => hex(self, 8)?,
                other => return Err(self.error(format!("unknown escape `\\{other}`"))),
            });
        }
    }

    /// `True`, `False`, `None` or a number.
    fn word(&mut self) -> Result<Value, LiteralError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_')))
            .unwrap_or(rest.len());
        let word = &rest[..len];
        let value = match word {
            "True" => Value::Bool(true),
            "False" => Value::Bool(false),
            "None" => Value::Null,
            _ => number(word).ok_or_else(|| self.error(format!("`{word}` is not a value")))?,
        };
        self.at += len;
        Ok(value)
    }
}

fn number(word: &str) -> Option<Value> {
    let digits = word.trim_start_matches(['-', '+']);
    if digits.is_empty() || !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    if let Ok(i) = word.parse::<i64>() {
        return Some(Value::Number(i.into()));
    }
    let f = word.parse::<f64>().ok()?;
    Number::from_f64(f).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_python_writes() {
        let cases = [
            ("{'user_id': 'alice'}", json!({"user_id": "alice"})),
            (
                "{'AND': [{'user_id': 'a'}, {'run_id': \"it's\"}]}",
                json!({"AND": [{"user_id": "a"}, {"run_id": "it's"}]}),
            ),
            (
                r"{'k': 'a\'b\\c\n\x7f\u00e9\U0001f600', 'n': -3, 'f': 1.5e3}",
                json!({"k": "a'b\\c\n\u{7f}\u{e9}\u{1f600}", "n": -3, "f": 1500.0}),
            ),
            (
                "{'t': True, 'f': False, 'z': None, 'l': (1, 2,), 'e': {}}",
                json!({"t": true, "f": false, "z": null, "l": [1, 2], "e": {}}),
            ),
            (" [ ] ", json!([])),
            ("'plain'", json!("plain")),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn floats_round_trip_through_json_text() {
        // Found by the memory_request fuzz target: serde_json's fast float parser was a unit in
        // the last place off for this one (its `float_roundtrip` feature is on).
        let v = parse("777777290533639539006029053363953219810").unwrap();
        let again: Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn refuses_anything_else_with_a_position() {
        for bad in [
            "",
            "{",
            "{'a' 1}",
            "{1: 2}",
            "{'a': 1} x",
            "'open",
            r"'\q'",
            r"'\x4'",
            r"'\ud800'",
            "[1 2]",
            "nan",
            "inf",
            "-",
            "float('nan')",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).unwrap_err().msg.contains("deeper"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }
}
