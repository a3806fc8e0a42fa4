//! The memory bound of a chat template render.
//!
//! minijinja's fuel counts instructions, but one instruction can double a value
//! (`{% set ns.s = ns.s ~ ns.s %}`), so forty steps ask for terabytes. A render here therefore
//! runs an instrumented copy of the compiled template: every operation that builds a value from
//! others (`~`, `+`, `*`, list and map literals, filter, method and function calls) goes through
//! a check that charges the size of what it builds to a per-render budget, refusing before the
//! work when the size can be known first; every write to the output is charged to an output
//! budget. Operations and filters whose result can be far larger than their inputs (`replace`,
//! `join`, `indent`, `format`, `batch`, `slice`, `pprint`) are checked before they run.
//!
//! The checks are functions whose names hold a space, so a template can neither call nor shadow
//! them. A chat template cannot include, import or extend another template (it would run
//! uninstrumented), and there is none to include anyway.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

/// The most bytes the values one render builds may add up to, each counted when it is built
/// (by `~`, `+`, `*`, a list or map literal, or a call); a template building more fails.
pub const MAX_VALUE_BYTES: usize = 256 << 20;

/// Values nested deeper than this are refused: printing or dropping them recurses.
pub(crate) const MAX_DEPTH: usize = 128;

const CONCAT: &str = "athena concat";
const ADD: &str = "athena add";
const MUL: &str = "athena mul";
const BUILT: &str = "athena built";
const EMIT: &str = "athena emit";
const EMIT_RAW: &str = "athena emit raw";
const NO_INCLUDE: &str = "athena no include";

/// The filters checked before they run, each with the hidden name the check calls it by.
const GUARDED_FILTERS: [(&str, &str); 7] = [
    ("replace", "athena builtin replace"),
    ("join", "athena builtin join"),
    ("indent", "athena builtin indent"),
    ("format", "athena builtin format"),
    ("batch", "athena builtin batch"),
    ("slice", "athena builtin slice"),
    ("pprint", "athena builtin pprint"),
];

/// Which budget a render ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The values it built.
    Values,
    /// What it wrote.
    Output,
}

/// What one render may still build and write.
#[derive(Debug)]
pub(crate) struct Budget {
    values_left: AtomicUsize,
    output_left: AtomicUsize,
    exhausted: AtomicU8,
}

impl Budget {
    /// A budget of `values` bytes built and `output` bytes written.
    pub(crate) fn new(values: usize, output: usize) -> Arc<Self> {
        Arc::new(Budget {
            values_left: AtomicUsize::new(values),
            output_left: AtomicUsize::new(output),
            exhausted: AtomicU8::new(0),
        })
    }

    /// The budget the render ran out of, if it did.
    pub(crate) fn exhausted(&self) -> Option<Exhausted> {
        match self.exhausted.load(Ordering::Relaxed) {
            1 => Some(Exhausted::Values),
            2 => Some(Exhausted::Output),
            _ => None,
        }
    }

    fn charge(&self, which: Exhausted, bytes: usize) -> Result<(), Error> {
        let left = match which {
            Exhausted::Values => &self.values_left,
            Exhausted::Output => &self.output_left,
        };
        let update = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            l.checked_sub(bytes)
        });
        if update.is_ok() {
            return Ok(());
        }
        let code = match which {
            Exhausted::Values => 1,
            Exhausted::Output => 2,
        };
        self.exhausted.store(code, Ordering::Relaxed);
        Err(Error::new(
            ErrorKind::InvalidOperation,
            match which {
                Exhausted::Values => "the chat template's value limit is exhausted",
                Exhausted::Output => "the chat template's output limit is exhausted",
            },
        ))
    }

    fn values_left(&self) -> usize {
        self.values_left.load(Ordering::Relaxed)
    }

    fn output_left(&self) -> usize {
        self.output_left.load(Ordering::Relaxed)
    }
}

/// The printed size of `value`, counted up to a little past `cap` and at least one byte an item,
/// so that a lazily repeated sequence is never walked to its end. Fails past [`MAX_DEPTH`].
pub(crate) fn printed_size(value: &Value, cap: usize) -> Result<usize, Error> {
    let mut total = 0usize;
    walk(value, cap, 0, &mut total)?;
    Ok(total)
}

fn walk(value: &Value, cap: usize, depth: usize, total: &mut usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("values nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let add = |total: &mut usize, n: usize| *total = total.saturating_add(n);
    match value.kind() {
        ValueKind::String | ValueKind::Bytes => add(
            total,
            value
                .as_str()
                .map_or_else(|| value.len().unwrap_or(0), str::len),
        ),
        ValueKind::Undefined | ValueKind::None | ValueKind::Bool => add(total, 5),
        ValueKind::Number => add(total, 24),
        ValueKind::Seq | ValueKind::Iterable => {
            add(total, 2);
            for item in value.try_iter()? {
                add(total, 2);
                walk(&item, cap, depth + 1, total)?;
                if *total > cap {
                    break;
                }
            }
        }
        ValueKind::Map => {
            add(total, 2);
            for key in value.try_iter()? {
                add(total, 4);
                walk(&key, cap, depth + 1, total)?;
                if let Ok(item) = value.get_item(&key) {
                    walk(&item, cap, depth + 1, total)?;
                }
                if *total > cap {
                    break;
                }
            }
        }
        // Macros, namespaces, loops and other objects print a short description.
        _ => add(total, 64),
    }
    Ok(())
}

/// The deepest nesting in `value`, up to `MAX_DEPTH + 1`, walking at most `cap` items.
fn depth_of(value: &Value, cap: &mut usize) -> usize {
    if *cap == 0 {
        return 0;
    }
    *cap -= 1;
    let items: Vec<Value> = match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .map(|it| it.take(*cap).collect())
            .unwrap_or_default(),
        ValueKind::Map => value
            .try_iter()
            .map(|it| {
                it.take(*cap)
                    .filter_map(|k| value.get_item(&k).ok())
                    .collect()
            })
            .unwrap_or_default(),
        _ => return 0,
    };
    1 + items
        .iter()
        .map(|item| depth_of(item, cap).min(MAX_DEPTH + 1))
        .max()
        .unwrap_or(0)
}

fn text_len(value: &Value) -> usize {
    value
        .as_str()
        .map_or_else(|| value.to_string().len(), str::len)
}

fn positional(args: &[Value]) -> impl Iterator<Item = &Value> {
    args.iter().filter(|a| !a.is_kwargs())
}

fn int_arg(value: Option<&Value>) -> usize {
    value
        .and_then(|v| i64::try_from(v.clone()).ok())
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

fn kwarg(args: &[Value], name: &str) -> Option<Value> {
    args.iter()
        .filter(|a| a.is_kwargs())
        .find_map(|a| a.get_attr(name).ok().filter(|v| !v.is_undefined()))
}

/// The widths and precisions of every conversion of a printf-style format string (the
/// `format` filter: `%-12d`, `% 99s`, `%.9f`), summed: a bound on the padding the conversions
/// add. The scan follows minijinja's own parser, conversion by conversion. A multi-byte
/// character inside a mapping key (`%(ключ)s`) or as a conversion type is refused: minijinja's
/// parser steps through those byte by byte and panics on a character boundary it does not
/// expect.
fn printf_widths(spec: &str) -> Result<usize, Error> {
    let b = spec.as_bytes();
    let mut total = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        if b.get(i) == Some(&b'%') {
            i += 1;
            continue;
        }
        if b.get(i) == Some(&b'(') {
            i += 1;
            while i < b.len() && b[i] != b')' {
                if !b[i].is_ascii() {
                    return Err(not_ascii());
                }
                i += 1;
            }
            i += 1;
        }
        while i < b.len() && b"#0- +".contains(&b[i]) {
            i += 1;
        }
        total = total.saturating_add(digits(spec, &mut i));
        if b.get(i) == Some(&b'.') {
            i += 1;
            total = total.saturating_add(digits(spec, &mut i));
        }
        if i < b.len() && b"hlL".contains(&b[i]) {
            i += 1;
        }
        if b.get(i).is_some_and(|c| !c.is_ascii()) {
            return Err(not_ascii());
        }
        i += 1;
    }
    Ok(total)
}

/// The widths and precisions of every replacement field of a `str.format` string (`{:>80}`,
/// `{0:.9f}`), summed. Any character inside a field that is not ASCII is refused: minijinja's
/// parser panics on one inside an index (`{0[é]}`, and an index reads on to its `]` past the
/// field's `}`), and a multi-byte fill character would multiply the padding's bytes.
fn brace_widths(spec: &str) -> Result<usize, Error> {
    let b = spec.as_bytes();
    let mut total = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        i += 1;
        if b.get(i) == Some(&b'{') {
            i += 1;
            continue;
        }
        while i < b.len() && b[i] != b'}' {
            if b[i] == b'[' {
                // An index runs to its `]`, past any `}`, as minijinja reads it (`{0[a}é]`).
                i += 1;
                while i < b.len() && b[i] != b']' {
                    if !b[i].is_ascii() {
                        return Err(not_ascii());
                    }
                    i += 1;
                }
                i += 1;
            } else if b[i].is_ascii_digit() {
                total = total.saturating_add(digits(spec, &mut i));
            } else if !b[i].is_ascii() {
                return Err(not_ascii());
            } else {
                i += 1;
            }
        }
        i += 1;
    }
    Ok(total)
}

/// The number whose digits start at `*i` (0 when none do), stepping past them; one too large
/// for `usize` counts as `usize::MAX`.
fn digits(spec: &str, i: &mut usize) -> usize {
    let b = spec.as_bytes();
    let start = *i;
    while *i < b.len() && b[*i].is_ascii_digit() {
        *i += 1;
    }
    if *i == start {
        0
    } else {
        spec[start..*i].parse().unwrap_or(usize::MAX)
    }
}

fn not_ascii() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        "`format`: a conversion holds a character that is not ASCII",
    )
}

/// An upper bound on the size of what filter or method `name` returns for `args` (the value
/// first), for those whose result can be much larger than their inputs.
fn result_bound(name: &str, args: &[Value], cap: usize) -> Result<usize, Error> {
    let pos: Vec<&Value> = positional(args).collect();
    let size = |v: Option<&&Value>| v.map_or(Ok(0), |v| printed_size(v, cap));
    let bound = match name {
        "replace" => {
            let text = pos.first().map(|v| v.to_string()).unwrap_or_default();
            let from = pos.get(1).map(|v| v.to_string()).unwrap_or_default();
            let to = pos.get(2).map_or(0, |v| text_len(v));
            let hits = if from.is_empty() {
                text.chars().count() + 1
            } else {
                text.matches(from.as_str()).count()
            };
            text.len().saturating_add(hits.saturating_mul(to))
        }
        "join" => {
            let (seq, sep) = (pos.first(), pos.get(1).map_or(0, |v| text_len(v)));
            let items = seq.map_or(Ok(0), |s| s.len().map_or(Ok(0), Ok::<_, Error>))?;
            size(seq)?.saturating_add(items.saturating_mul(sep))
        }
        "indent" => {
            let text = pos.first().map(|v| v.to_string()).unwrap_or_default();
            let width = pos
                .get(1)
                .map(|v| int_arg(Some(v)))
                .or_else(|| kwarg(args, "width").map(|v| int_arg(Some(&v))))
                .unwrap_or(4);
            let lines = text.matches('\n').count() + 1;
            text.len().saturating_add(lines.saturating_mul(width))
        }
        "format" | "str.format" => {
            let spec = pos.first().map(|v| v.to_string()).unwrap_or_default();
            let widths = match name {
                "format" => printf_widths(&spec)?,
                _ => brace_widths(&spec)?,
            };
            let mut total = spec.len().saturating_add(widths);
            for arg in pos.iter().skip(1) {
                total = total.saturating_add(printed_size(arg, cap)?);
            }
            total
        }
        "batch" | "slice" => {
            let count = int_arg(pos.get(1).copied());
            let fill = size(pos.get(2))?.max(2);
            size(pos.first())?.saturating_add(count.saturating_mul(fill.saturating_add(2)))
        }
        "pprint" => {
            let mut walk_cap = cap;
            let depth = pos.first().map_or(0, |v| depth_of(v, &mut walk_cap));
            size(pos.first())?.saturating_mul(depth.saturating_mul(4).saturating_add(1))
        }
        _ => 0,
    };
    Ok(bound)
}

fn too_large(what: &str, bound: usize, cap: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "`{what}` would build {bound} bytes, past the chat template's value limit of {cap}"
        ),
    )
}

/// Registers the checked versions of [`GUARDED_FILTERS`] and of the Python string methods; call
/// after the filters and the method callback are in place. `values` is a render's value budget:
/// one call may not build more than all of it.
pub(crate) fn guard_environment(env: &mut Environment<'static>, values: usize) {
    use minijinja::filters;
    let [replace, join, indent, format, batch, slice, pprint] = GUARDED_FILTERS.map(|(_, h)| h);
    env.add_filter(replace, filters::replace);
    env.add_filter(join, filters::join);
    env.add_filter(indent, filters::indent);
    env.add_filter(format, filters::format);
    env.add_filter(batch, filters::batch);
    env.add_filter(slice, filters::slice);
    env.add_filter(pprint, filters::pprint);
    for (name, hidden) in GUARDED_FILTERS {
        env.add_filter(name, move |state: &State, args: Rest<Value>| {
            let bound = result_bound(name, &args, values)?;
            if bound > values {
                return Err(too_large(name, bound, values));
            }
            state.apply_filter(hidden, &args)
        });
    }
    env.set_unknown_method_callback(move |state, value, method, args| {
        if matches!(method, "replace" | "format" | "join") {
            let mut all = Vec::with_capacity(args.len() + 1);
            if method == "join" {
                // `sep.join(items)`: the items first, as the filter takes them.
                all.extend(args.first().cloned());
                all.push(value.clone());
            } else {
                all.push(value.clone());
                all.extend(args.iter().cloned());
            }
            // The `format` method is `str.format`; the filter of that name is printf-style.
            let name = if method == "format" {
                "str.format"
            } else {
                method
            };
            let bound = result_bound(name, &all, values)?;
            if bound > values {
                return Err(too_large(method, bound, values));
            }
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
}

/// The operations the checks delegate to, evaluated by minijinja itself.
static OPS: LazyLock<Environment<'static>> = LazyLock::new(Environment::new);

fn binop(expr: &str, a: Value, b: Value) -> Result<Value, Error> {
    OPS.compile_expression(expr)?
        .eval(minijinja::context! { a => a, b => b })
}

fn is_container(v: &Value) -> bool {
    matches!(
        v.kind(),
        ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Seq
            | ValueKind::Iterable
            | ValueKind::Map
    )
}

/// The check functions of one render, by the names [`instrument`] calls them by.
pub(crate) fn check_functions(budget: &Arc<Budget>) -> BTreeMap<&'static str, Value> {
    let mut checks = BTreeMap::new();
    let b = Arc::clone(budget);
    checks.insert(
        CONCAT,
        Value::from_function(move |a: Value, c: Value| -> Result<Value, Error> {
            let cap = b.values_left();
            let bound = printed_size(&a, cap)?.saturating_add(printed_size(&c, cap)?);
            b.charge(Exhausted::Values, bound)?;
            Ok(Value::from(format!("{a}{c}")))
        }),
    );
    let b = Arc::clone(budget);
    checks.insert(
        ADD,
        Value::from_function(move |a: Value, c: Value| -> Result<Value, Error> {
            if is_container(&a) || is_container(&c) {
                let cap = b.values_left();
                let bound = printed_size(&a, cap)?.saturating_add(printed_size(&c, cap)?);
                b.charge(Exhausted::Values, bound)?;
            }
            binop("a + b", a, c)
        }),
    );
    let b = Arc::clone(budget);
    checks.insert(
        MUL,
        Value::from_function(move |a: Value, c: Value| -> Result<Value, Error> {
            let (item, times) = if is_container(&a) { (&a, &c) } else { (&c, &a) };
            if is_container(item) {
                let times = int_arg(Some(times));
                let cap = b.values_left();
                let bound = printed_size(item, cap)?.max(1).saturating_mul(times);
                b.charge(Exhausted::Values, bound)?;
            }
            binop("a * b", a, c)
        }),
    );
    let b = Arc::clone(budget);
    checks.insert(
        BUILT,
        Value::from_function(move |v: Value| -> Result<Value, Error> {
            if is_container(&v) {
                let bound = printed_size(&v, b.values_left())?;
                b.charge(Exhausted::Values, bound)?;
            }
            Ok(v)
        }),
    );
    let b = Arc::clone(budget);
    checks.insert(
        EMIT,
        Value::from_function(move |v: Value| -> Result<Value, Error> {
            let bound = printed_size(&v, b.output_left())?;
            b.charge(Exhausted::Output, bound)?;
            Ok(v)
        }),
    );
    let b = Arc::clone(budget);
    checks.insert(
        EMIT_RAW,
        Value::from_function(move |len: usize| -> Result<Value, Error> {
            b.charge(Exhausted::Output, len)?;
            Ok(Value::UNDEFINED)
        }),
    );
    checks.insert(
        NO_INCLUDE,
        Value::from_function(|_: Value| -> Result<Value, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                "a chat template cannot include, import or extend other templates",
            ))
        }),
    );
    checks
}

/// A copy of `code` in which each value-building operation and each write goes through its check.
pub(crate) fn instrument<'env>(code: &Instructions<'env>) -> Instructions<'env> {
    let mut out = Instructions::new(code.name(), code.source());
    let len = u32::try_from(code.len()).unwrap_or(u32::MAX);
    // Where each old instruction starts in the copy, plus one past the end.
    let mut starts = Vec::with_capacity(code.len() + 1);
    let mut pending = Vec::new();
    for idx in 0..len {
        let Some(instr) = code.get(idx) else { break };
        starts.push(out.len() as u32);
        let span = code.get_span(idx);
        let line = code.get_line(idx).unwrap_or(0);
        let push = |out: &mut Instructions<'env>, instr: Instruction<'env>| match span {
            Some(span) => out.add_with_span(instr, span),
            None => out.add_with_line(instr, u16::try_from(line).unwrap_or(u16::MAX)),
        };
        match instr {
            Instruction::StringConcat => {
                push(&mut out, Instruction::CallFunction(CONCAT, Some(2)));
            }
            Instruction::Add => {
                push(&mut out, Instruction::CallFunction(ADD, Some(2)));
            }
            Instruction::Mul => {
                push(&mut out, Instruction::CallFunction(MUL, Some(2)));
            }
            Instruction::Emit => {
                push(&mut out, Instruction::CallFunction(EMIT, Some(1)));
                push(&mut out, Instruction::Emit);
            }
            Instruction::EmitRaw(raw) => {
                push(&mut out, Instruction::LoadConst(Value::from(raw.len())));
                push(&mut out, Instruction::CallFunction(EMIT_RAW, Some(1)));
                push(&mut out, Instruction::DiscardTop);
                push(&mut out, Instruction::EmitRaw(raw));
            }
            Instruction::Include(_) | Instruction::LoadBlocks => {
                push(&mut out, Instruction::CallFunction(NO_INCLUDE, Some(1)));
            }
            Instruction::ApplyFilter(..)
            | Instruction::CallMethod(..)
            | Instruction::CallFunction(..)
            | Instruction::CallObject(..)
            | Instruction::BuildList(..)
            | Instruction::BuildMap(..) => {
                push(&mut out, instr.clone());
                push(&mut out, Instruction::CallFunction(BUILT, Some(1)));
            }
            Instruction::Iterate(_)
            | Instruction::Jump(_)
            | Instruction::JumpIfFalse(_)
            | Instruction::JumpIfFalseOrPop(_)
            | Instruction::JumpIfTrueOrPop(_)
            | Instruction::BuildMacro(..) => {
                pending.push(push(&mut out, instr.clone()));
            }
            other => {
                push(&mut out, other.clone());
            }
        }
    }
    starts.push(out.len() as u32);
    let target = |old: u32| starts.get(old as usize).copied().unwrap_or(old);
    for at in pending {
        if let Some(
            Instruction::Iterate(t)
            | Instruction::Jump(t)
            | Instruction::JumpIfFalse(t)
            | Instruction::JumpIfFalseOrPop(t)
            | Instruction::JumpIfTrueOrPop(t)
            | Instruction::BuildMacro(_, t, _),
        ) = out.get_mut(at)
        {
            *t = target(*t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_widths_are_found() -> Result<(), Error> {
        assert_eq!(printf_widths("%5s and %-12d")?, 17);
        assert_eq!(brace_widths("{:>80} {:.9f}")?, 89);
        assert_eq!(printf_widths("year 2024, 100%% sure")?, 0);
        // A space flag, then a width (found by the chat_template fuzz target).
        assert_eq!(printf_widths("% 5555555555555f")?, 5555555555555);
        assert_eq!(printf_widths("%.99999f")?, 99999);
        assert_eq!(printf_widths("%999999999999999999999999d")?, usize::MAX);
        assert!(printf_widths("%(ключ)s").is_err());
        assert!(brace_widths("{é}").is_err());
        assert!(brace_widths("{0[é]}").is_err());
        // An index reads past the field's `}` to its `]` (found by the chat_template fuzz
        // target: `{J[(%}…\u{fffd}`).
        assert!(brace_widths("{J[(%} text é").is_err());
        assert!(brace_widths("{0[a}é]").is_err());
        assert_eq!(brace_widths("{0[a]:5} é")?, 5);
        assert_eq!(printf_widths("é %s ключ")?, 0);
        // Braces mean nothing to a printf-style string: the conversion inside them is scanned
        // (also found by the chat_template fuzz target).
        assert!(printf_widths("{%(}\u{fffd}").is_err());
        assert_eq!(printf_widths("{é} %3s")?, 3);
        assert_eq!(brace_widths("%(é)s {:4}")?, 4);
        Ok(())
    }

    #[test]
    fn printed_size_stops_early_on_huge_lazy_values() -> Result<(), Error> {
        let env = Environment::new();
        let huge = env
            .compile_expression("[1] * 1000000000000")?
            .eval(minijinja::context! {})?;
        let size = printed_size(&huge, 1000)?;
        assert!((1000..2000).contains(&size), "{size}");
        Ok(())
    }
}
