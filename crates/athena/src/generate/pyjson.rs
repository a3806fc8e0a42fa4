//! The `tojson` filter of Hugging Face chat templates: Python's `json.dumps` over template values.
//!
//! Hugging Face replaces Jinja's HTML-escaping `tojson` with `json.dumps(x, ensure_ascii=False,
//! indent=None, separators=None, sort_keys=False)`, and templates that describe tools depend on
//! its exact spelling (`", "` and `": "` separators, `<` unescaped, Python's float repr).
//! minijinja's own filter escapes HTML characters and writes compact JSON, so it is replaced.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Values nested deeper than this are refused instead of risking the stack.
const MAX_DEPTH: usize = 128;

/// The most one call may write, in bytes: the chat template's value limit.
const MAX_JSON_BYTES: usize = super::template_budget::MAX_VALUE_BYTES;

fn too_long() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: the output exceeds the template limit of {MAX_JSON_BYTES} bytes"),
    )
}

/// How to write: the arguments of `json.dumps` that Hugging Face exposes.
struct Options {
    ensure_ascii: bool,
    /// `None`: everything on one line; `Some(unit)`: one item a line, indented by `unit` a level.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// The filter: `value | tojson(ensure_ascii=false, indent=none, separators=none, sort_keys=false)`,
/// taking the arguments positionally or by keyword in that order, as `json.dumps` does.
pub(crate) fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let mut slots: [Option<Value>; 4] = Default::default();
    for (slot, arg) in slots.iter_mut().zip(args.iter()) {
        *slot = Some(arg.clone());
    }
    for (slot, name) in slots.iter_mut().zip(NAMES) {
        if kwargs.has(name) {
            if slot.is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson got argument `{name}` twice"),
                ));
            }
            *slot = Some(kwargs.get::<Value>(name)?);
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = slots;
    let options = options(ensure_ascii, indent, separators, sort_keys)?;
    let mut out = String::new();
    write_value(&mut out, value, &options, 0)?;
    Ok(Value::from(out))
}

fn options(
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    sort_keys: Option<Value>,
) -> Result<Options, Error> {
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(match v.kind() {
            ValueKind::String => v.as_str().unwrap_or_default().to_owned(),
            // Python: `" " * indent`, with True counting as 1 and negatives giving "".
            ValueKind::Bool => if v.is_true() { " " } else { "" }.to_owned(),
            ValueKind::Number if v.is_integer() => {
                let n = i64::try_from(v)?;
                " ".repeat(usize::try_from(n.clamp(0, 64)).unwrap_or(0))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        }),
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let pair: Vec<String> = v
                .try_iter()?
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be strings",
                    )
                })?;
            match <[String; 2]>::try_from(pair) {
                Ok([item, key]) => (item, key),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair (item, key)",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    Ok(Options {
        ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.is_some_and(|v| v.is_true()),
    })
}

fn not_serializable(kind: ValueKind) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: a value of type {kind} is not JSON serializable"),
    )
}

fn write_value(out: &mut String, value: &Value, opt: &Options, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value)?,
        ValueKind::String => {
            write_string(out, value.as_str().unwrap_or_default(), opt.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, opt, depth, '[', ']', &items, |out, item| {
                write_value(out, item, opt, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((key_string(&key)?, item));
            }
            if opt.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, opt, depth, '{', '}', &entries, |out, (key, item)| {
                write_string(out, key, opt.ensure_ascii);
                out.push_str(&opt.key_sep);
                write_value(out, item, opt, depth + 1)
            })?;
        }
        kind => return Err(not_serializable(kind)),
    }
    Ok(())
}

/// Writes `open items close`, one item a line when indenting, `[]`/`{}` when empty.
fn write_container<T>(
    out: &mut String,
    opt: &Options,
    depth: usize,
    open: char,
    close: char,
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(unit) = &opt.indent {
            let width = unit.len().saturating_mul(level);
            if out.len().saturating_add(width) > MAX_JSON_BYTES {
                return Err(too_long());
            }
            out.push('\n');
            for _ in 0..level {
                out.push_str(unit);
            }
        }
        Ok(())
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&opt.item_sep);
        }
        newline(out, depth + 1)?;
        write_item(out, item)?;
        if out.len() > MAX_JSON_BYTES {
            return Err(too_long());
        }
    }
    newline(out, depth)?;
    out.push(close);
    Ok(())
}

/// Python turns non-string keys into strings: numbers by their repr, booleans and None as JSON.
fn key_string(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key)?;
            Ok(s)
        }
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

fn write_number(out: &mut String, value: &Value) -> Result<(), Error> {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return Ok(());
    }
    let x = f64::try_from(value.clone())?;
    write_float(out, x);
    Ok(())
}

/// Python's `float.__repr__` (shortest round-trip digits, exponent below 1e-4 and from 1e16),
/// with `json.dumps`'s names for the non-finite values.
pub(crate) fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if x == 0.0 {
        out.push_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits as `d[.ddd]e[-]x`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{x}");
        out.push_str(&fixed);
        if !fixed.contains('.') {
            out.push_str(".0");
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exp.abs());
    }
}

/// A JSON string literal as Python writes it.
fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::{context, Environment};

    fn render(template: &str) -> Result<String, Error> {
        let mut env = Environment::new();
        env.add_filter("tojson", tojson);
        env.render_str(template, context! {})
    }

    fn float(x: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, x);
        s
    }

    #[test]
    fn floats_follow_python_repr() {
        assert_eq!(float(1.5), "1.5");
        assert_eq!(float(1e-5), "1e-05");
        assert_eq!(float(1e-4), "0.0001");
        assert_eq!(float(1e16), "1e+16");
        assert_eq!(float(1.5e16), "1.5e+16");
        assert_eq!(float(1e15), "1000000000000000.0");
        assert_eq!(float(123456789.0), "123456789.0");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(-0.0), "-0.0");
        assert_eq!(float(2.5e-300), "2.5e-300");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn strings_escape_like_python() -> Result<(), Error> {
        assert_eq!(
            render(r#"{{ 'x<y>&\'é\n"\\\t\x01' | tojson }}"#)?,
            r#""x<y>&'é\n\"\\\t\u0001""#
        );
        assert_eq!(
            render("{{ 'é🙂~' | tojson(ensure_ascii=true) }}")?,
            r#""\u00e9\ud83d\ude42~""#
        );
        assert_eq!(render("{{ 'é' | tojson(true) }}")?, r#""\u00e9""#);
        Ok(())
    }

    #[test]
    fn separators_indent_and_sorting() -> Result<(), Error> {
        assert_eq!(
            render("{{ {'b': [1, none], 'a': {}} | tojson }}")?,
            r#"{"b": [1, null], "a": {}}"#
        );
        assert_eq!(
            render("{{ {'b': [1], 'a': []} | tojson(indent=2) }}")?,
            "{\n  \"b\": [\n    1\n  ],\n  \"a\": []\n}"
        );
        assert_eq!(
            render("{{ [1, 2] | tojson(indent='\t') }}")?,
            "[\n\t1,\n\t2\n]"
        );
        assert_eq!(render("{{ [1, 2] | tojson(indent=0) }}")?, "[\n1,\n2\n]");
        assert_eq!(
            render("{{ {'z': 1, 'a': 2} | tojson(sort_keys=true, separators=(',', ':')) }}")?,
            r#"{"a":2,"z":1}"#
        );
        assert_eq!(
            render("{{ {1: true, none: false} | tojson }}")?,
            r#"{"1": true, "null": false}"#
        );
        Ok(())
    }

    #[test]
    fn bad_arguments_and_values_error() {
        assert!(render("{{ 1 | tojson(indent=[1]) }}").is_err());
        assert!(render("{{ 1 | tojson(separators=(',',)) }}").is_err());
        assert!(render("{{ 1 | tojson(bogus=1) }}").is_err());
        assert!(render("{{ 1 | tojson(false, indent=2, indent2=1) }}").is_err());
        assert!(render("{{ 1 | tojson(false, ensure_ascii=true) }}").is_err());
        assert!(render("{{ undefined_name | tojson }}").is_err());
        assert!(render("{{ range | tojson }}").is_err());
    }
}
