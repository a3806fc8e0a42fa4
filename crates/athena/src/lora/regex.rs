//! The subset of Python's `re` that PEFT configs use to name modules: `target_modules` as a
//! string (`re.fullmatch`), `exclude_modules`, `layers_pattern` and the keys of `rank_pattern`
//! and `alpha_pattern` (`re.match(r"(.*\.)?(KEY)$", name)`).
//!
//! Supported: literals and escapes, `.`, classes (`[a-z_]`, `[^.]`, `\d \w \s` and their
//! negations), groups (`(...)`, `(?:...)`, `(?P<name>...)`), lookahead (`(?=...)`, `(?!...)`),
//! alternation, the quantifiers `* + ? {m} {m,} {m,n}` (greedy or lazy) and the anchors
//! `^ $ \A \Z \b \B`. Backreferences, lookbehind and inline flags are refused by name.
//!
//! Only whether a name matches is asked, never where, so the pattern compiles to an NFA and
//! matching is a reachability search over (state, position) pairs: time and memory are
//! bounded by states × (length + 1), whatever the pattern, so a hostile config cannot make
//! matching explode the way backtracking can.

/// Upper bound on compiled states (counted repetition is unrolled).
const MAX_STATES: usize = 20_000;
/// Upper bound on the pattern's length in characters.
const MAX_PATTERN: usize = 4096;
/// Upper bound on nesting of groups.
const MAX_DEPTH: usize = 64;
/// Names are matched one by one against every module of the model (thousands for a large
/// MoE), so a pattern whose worst-case search over a name of [`NAME_LEN`] characters
/// (states × positions, times positions again for each lookahead) exceeds this is refused.
const MAX_COST: usize = 250_000;
/// The longest module name the cost bound plans for.
const NAME_LEN: usize = 64;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Regex {
    states: Vec<State>,
    start: usize,
    accept: usize,
}

#[derive(Debug, Clone)]
enum Class {
    Any,
    Char(char),
    Set { negated: bool, items: Vec<Item> },
}

#[derive(Debug, Clone)]
enum Item {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

#[derive(Debug, Clone, Copy)]
enum Anchor {
    Start,
    End,
    WordBoundary(bool),
}

#[derive(Debug, Clone)]
enum Ast {
    Empty,
    Class(Class),
    Anchor(Anchor),
    Concat(Vec<Ast>),
    Alt(Vec<Ast>),
    Repeat {
        node: Box<Ast>,
        min: usize,
        max: Option<usize>,
    },
    Look {
        node: Box<Ast>,
        negate: bool,
    },
}

#[derive(Debug, Clone)]
enum State {
    Consume(Class, usize),
    Split(usize, usize),
    Anchor(Anchor, usize),
    Look {
        start: usize,
        accept: usize,
        negate: bool,
        next: usize,
    },
    Accept,
}

impl Regex {
    /// Compiles `pattern`, or says which construct is not supported.
    pub(crate) fn new(pattern: &str) -> Result<Regex, String> {
        if pattern.chars().count() > MAX_PATTERN {
            return Err(format!("longer than {MAX_PATTERN} characters"));
        }
        let mut parser = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
            depth: 0,
            in_look: false,
        };
        let ast = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            return Err(format!("unbalanced `)` at position {}", parser.pos));
        }
        let mut b = Builder { states: Vec::new() };
        let accept = b.push(State::Accept)?;
        let start = b.emit(&ast, accept)?;
        let looks = b
            .states
            .iter()
            .filter(|s| matches!(s, State::Look { .. }))
            .count();
        let width = NAME_LEN + 1;
        let cost = b
            .states
            .len()
            .saturating_mul(width)
            .saturating_mul(1 + looks * width);
        if cost > MAX_COST {
            return Err(format!(
                "pattern too complex to evaluate ({} states, {looks} lookaheads)",
                b.states.len()
            ));
        }
        Ok(Regex {
            states: b.states,
            start,
            accept,
        })
    }

    /// Python's `re.fullmatch(pattern, text) is not None`.
    pub(crate) fn full_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.reach(&chars, self.start, 0, self.accept, true)
    }

    /// Whether `accept` is reachable from (`from`, `pos`); with `at_end`, only at the end.
    fn reach(&self, s: &[char], from: usize, pos: usize, accept: usize, at_end: bool) -> bool {
        let width = s.len() + 1;
        let mut seen = vec![false; self.states.len() * width];
        let mut stack = vec![(from, pos)];
        while let Some((id, at)) = stack.pop() {
            let slot = id * width + at;
            if seen[slot] {
                continue;
            }
            seen[slot] = true;
            if id == accept {
                if !at_end || at == s.len() {
                    return true;
                }
                continue;
            }
            match &self.states[id] {
                State::Consume(class, next) => {
                    if let Some(&c) = s.get(at) {
                        if class.matches(c) {
                            stack.push((*next, at + 1));
                        }
                    }
                }
                State::Split(a, b) => {
                    stack.push((*b, at));
                    stack.push((*a, at));
                }
                State::Anchor(anchor, next) => {
                    if anchor.holds(s, at) {
                        stack.push((*next, at));
                    }
                }
                State::Look {
                    start,
                    accept: inner,
                    negate,
                    next,
                } => {
                    if self.reach(s, *start, at, *inner, false) != *negate {
                        stack.push((*next, at));
                    }
                }
                State::Accept => {}
            }
        }
        false
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Class {
    fn matches(&self, c: char) -> bool {
        match self {
            Class::Any => c != '\n',
            Class::Char(x) => *x == c,
            Class::Set { negated, items } => items.iter().any(|i| i.matches(c)) != *negated,
        }
    }
}

impl Item {
    fn matches(&self, c: char) -> bool {
        match *self {
            Item::Range(lo, hi) => lo <= c && c <= hi,
            Item::Digit(neg) => c.is_numeric() != neg,
            Item::Word(neg) => is_word(c) != neg,
            Item::Space(neg) => c.is_whitespace() != neg,
        }
    }
}

impl Anchor {
    fn holds(self, s: &[char], at: usize) -> bool {
        match self {
            Anchor::Start => at == 0,
            // Python's `$` also matches before a final newline.
            Anchor::End => at == s.len() || (at + 1 == s.len() && s[at] == '\n'),
            Anchor::WordBoundary(want) => {
                let before = at > 0 && is_word(s[at - 1]);
                let after = s.get(at).is_some_and(|&c| is_word(c));
                (before != after) == want
            }
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    in_look: bool,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn alternation(&mut self) -> Result<Ast, String> {
        let mut arms = vec![self.concat()?];
        while self.eat('|') {
            arms.push(self.concat()?);
        }
        Ok(if arms.len() == 1 {
            arms.remove(0)
        } else {
            Ast::Alt(arms)
        })
    }

    fn concat(&mut self) -> Result<Ast, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(match items.len() {
            0 => Ast::Empty,
            1 => items.remove(0),
            _ => Ast::Concat(items),
        })
    }

    fn quantified(&mut self, mut atom: Ast) -> Result<Ast, String> {
        loop {
            let start = self.pos;
            let (min, max) = match self.peek() {
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('?') => (0, Some(1)),
                Some('{') => match self.counted()? {
                    Some(bounds) => bounds,
                    None => return Ok(atom),
                },
                _ => return Ok(atom),
            };
            if self.pos == start {
                self.pos += 1;
            }
            if matches!(atom, Ast::Anchor(_) | Ast::Look { .. } | Ast::Repeat { .. }) {
                if matches!(atom, Ast::Repeat { .. }) {
                    return Err(format!("multiple repeat at position {start}"));
                }
                return Err(format!("nothing to repeat at position {start}"));
            }
            // Lazy and greedy quantifiers accept the same names.
            self.eat('?');
            if self.peek() == Some('+') {
                return Err("possessive quantifiers are not supported".into());
            }
            atom = Ast::Repeat {
                node: Box::new(atom),
                min,
                max,
            };
        }
    }

    /// `{m}`, `{m,}`, `{,n}`, `{m,n}`; `None` (and nothing consumed) where Python reads a
    /// literal `{`.
    fn counted(&mut self) -> Result<Option<(usize, Option<usize>)>, String> {
        let rest: String = self.chars[self.pos..].iter().take(32).collect();
        let Some(close) = rest.find('}') else {
            return Ok(None);
        };
        let body = &rest[1..close];
        let number = |t: &str| -> Result<Option<usize>, String> {
            if t.is_empty() {
                return Ok(None);
            }
            if !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(String::new());
            }
            t.parse::<usize>()
                .map(Some)
                .map_err(|_| format!("repeat count `{t}` is too large"))
        };
        let parsed = match body.split_once(',') {
            None => match number(body) {
                Ok(Some(n)) => (n, Some(n)),
                Ok(None) | Err(_) => return Ok(None),
            },
            Some((lo, hi)) => match (number(lo), number(hi)) {
                (Ok(lo), Ok(hi)) => (lo.unwrap_or(0), hi),
                _ => return Ok(None),
            },
        };
        if let (min, Some(max)) = parsed {
            if min > max {
                return Err(format!("min repeat {min} is greater than max repeat {max}"));
            }
        }
        self.pos += body.chars().count() + 2;
        Ok(Some(parsed))
    }

    fn atom(&mut self) -> Result<Ast, String> {
        let at = self.pos;
        let Some(c) = self.peek() else {
            return Err("unexpected end of pattern".into());
        };
        self.pos += 1;
        Ok(match c {
            '(' => self.group(at)?,
            '[' => Ast::Class(self.class()?),
            '.' => Ast::Class(Class::Any),
            '^' => Ast::Anchor(Anchor::Start),
            '$' => Ast::Anchor(Anchor::End),
            '\\' => self.escape(false)?,
            '*' | '+' | '?' => return Err(format!("nothing to repeat at position {at}")),
            c => Ast::Class(Class::Char(c)),
        })
    }

    fn group(&mut self, at: usize) -> Result<Ast, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("groups nested deeper than {MAX_DEPTH}"));
        }
        let mut look = None;
        if self.eat('?') {
            match self.peek() {
                Some(':') => self.pos += 1,
                Some('=') | Some('!') => {
                    if self.in_look {
                        return Err("nested lookahead is not supported".into());
                    }
                    look = Some(self.peek() == Some('!'));
                    self.pos += 1;
                }
                Some('P') if self.chars.get(self.pos + 1) == Some(&'<') => {
                    let end = self.chars[self.pos..]
                        .iter()
                        .position(|&c| c == '>')
                        .ok_or("unterminated group name")?;
                    self.pos += end + 1;
                }
                Some('P') if self.chars.get(self.pos + 1) == Some(&'=') => {
                    return Err("backreferences are not supported".into())
                }
                Some('<') => return Err("lookbehind is not supported".into()),
                _ => {
                    return Err(format!(
                        "group construct `(?` at position {at} is not supported \
                         (inline flags, comments, conditionals)"
                    ))
                }
            }
        }
        let outer_look = self.in_look;
        self.in_look |= look.is_some();
        let inner = self.alternation()?;
        self.in_look = outer_look;
        if !self.eat(')') {
            return Err(format!("missing `)`, unterminated group at position {at}"));
        }
        self.depth -= 1;
        Ok(match look {
            Some(negate) => Ast::Look {
                node: Box::new(inner),
                negate,
            },
            // Wrapped so that a quantifier after the group applies to it (`(a*)*`).
            None => Ast::Concat(vec![inner]),
        })
    }

    /// After a backslash; inside a class only character escapes are meaningful.
    fn escape(&mut self, in_class: bool) -> Result<Ast, String> {
        let Some(c) = self.peek() else {
            return Err("pattern ends with a backslash".into());
        };
        self.pos += 1;
        let set = |item| {
            Ast::Class(Class::Set {
                negated: false,
                items: vec![item],
            })
        };
        Ok(match c {
            'd' => set(Item::Digit(false)),
            'D' => set(Item::Digit(true)),
            'w' => set(Item::Word(false)),
            'W' => set(Item::Word(true)),
            's' => set(Item::Space(false)),
            'S' => set(Item::Space(true)),
            'n' => Ast::Class(Class::Char('\n')),
            't' => Ast::Class(Class::Char('\t')),
            'r' => Ast::Class(Class::Char('\r')),
            'f' => Ast::Class(Class::Char('\x0c')),
            'v' => Ast::Class(Class::Char('\x0b')),
            'A' if !in_class => Ast::Anchor(Anchor::Start),
            'Z' if !in_class => Ast::Anchor(Anchor::End),
            'b' if !in_class => Ast::Anchor(Anchor::WordBoundary(true)),
            'B' if !in_class => Ast::Anchor(Anchor::WordBoundary(false)),
            '0'..='9' => return Err("backreferences and octal escapes are not supported".into()),
            c if c.is_ascii_alphanumeric() => return Err(format!("bad escape `\\{c}`")),
            c => Ast::Class(Class::Char(c)),
        })
    }

    fn class(&mut self) -> Result<Class, String> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err("unterminated character set".into());
            };
            self.pos += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape(true)? {
                    Ast::Class(Class::Char(x)) => x,
                    Ast::Class(Class::Set { items: set, .. }) => {
                        items.extend(set);
                        continue;
                    }
                    _ => return Err("unsupported escape in a character set".into()),
                }
            } else {
                c
            };
            let is_range =
                self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']');
            if is_range {
                self.pos += 1;
                let Some(hi) = self.peek() else {
                    return Err("unterminated character set".into());
                };
                self.pos += 1;
                let hi = if hi == '\\' {
                    match self.escape(true)? {
                        Ast::Class(Class::Char(x)) => x,
                        _ => return Err("bad character range".into()),
                    }
                } else {
                    hi
                };
                if hi < lo {
                    return Err(format!("bad character range {lo}-{hi}"));
                }
                items.push(Item::Range(lo, hi));
            } else {
                items.push(Item::Range(lo, lo));
            }
        }
        Ok(Class::Set { negated, items })
    }
}

struct Builder {
    states: Vec<State>,
}

impl Builder {
    fn push(&mut self, s: State) -> Result<usize, String> {
        if self.states.len() >= MAX_STATES {
            return Err(format!(
                "pattern too large (more than {MAX_STATES} states once repeats are expanded)"
            ));
        }
        self.states.push(s);
        Ok(self.states.len() - 1)
    }

    /// Emits `ast` so that it continues to `next`; returns its entry state.
    fn emit(&mut self, ast: &Ast, next: usize) -> Result<usize, String> {
        Ok(match ast {
            Ast::Empty => next,
            Ast::Class(c) => self.push(State::Consume(c.clone(), next))?,
            Ast::Anchor(a) => self.push(State::Anchor(*a, next))?,
            Ast::Concat(items) => {
                let mut at = next;
                for item in items.iter().rev() {
                    at = self.emit(item, at)?;
                }
                at
            }
            Ast::Alt(arms) => {
                let mut entries = Vec::with_capacity(arms.len());
                for arm in arms {
                    entries.push(self.emit(arm, next)?);
                }
                let mut at = entries.pop().unwrap_or(next);
                while let Some(e) = entries.pop() {
                    at = self.push(State::Split(e, at))?;
                }
                at
            }
            Ast::Repeat { node, min, max } => {
                let mut at = match max {
                    None => {
                        // A loop: the split is patched once the body exists.
                        let split = self.push(State::Split(next, next))?;
                        let body = self.emit(node, split)?;
                        self.states[split] = State::Split(body, next);
                        split
                    }
                    Some(max) => {
                        let mut at = next;
                        for _ in *min..*max {
                            let body = self.emit(node, at)?;
                            at = self.push(State::Split(body, next))?;
                        }
                        at
                    }
                };
                for _ in 0..*min {
                    at = self.emit(node, at)?;
                }
                at
            }
            Ast::Look { node, negate } => {
                let accept = self.push(State::Accept)?;
                let start = self.emit(node, accept)?;
                self.push(State::Look {
                    start,
                    accept,
                    negate: *negate,
                    next,
                })?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn full(p: &str, s: &str) -> bool {
        Regex::new(p).unwrap().full_match(s)
    }

    #[test]
    fn python_fullmatch_semantics() {
        assert!(full(
            r".*\.(q_proj|v_proj)",
            "model.layers.0.self_attn.q_proj"
        ));
        assert!(!full(
            r".*\.(q_proj|v_proj)",
            "model.layers.0.self_attn.k_proj"
        ));
        assert!(full(
            r"model\.layers\.\d+\.mlp\.gate",
            "model.layers.12.mlp.gate"
        ));
        assert!(!full(
            r"model\.layers\.\d+\.mlp\.gate",
            "model.layers.12.mlp.gate_proj"
        ));
        assert!(full(r"(.*\.)?(v_proj)$", "model.layers.1.self_attn.v_proj"));
        assert!(full(r"(.*\.)?(v_proj)$", "v_proj"));
        assert!(!full(r"(.*\.)?(proj)$", "model.layers.1.self_attn.v_proj"));
        assert!(full(
            r"(.*\.)?(layers\.0\.mlp\.experts\.down_proj)$",
            "model.layers.0.mlp.experts.down_proj"
        ));
        assert!(!full(
            r"(.*\.)?(layers\.0\.mlp\.experts\.down_proj)$",
            "model.layers.10.mlp.experts.down_proj"
        ));
        assert!(full(r"[a-z_]+\.[0-9]{1,2}", "layers.07"));
        assert!(!full(r"[a-z_]+\.[0-9]{1,2}", "layers.007"));
        assert!(full(r"[^.]*", "abc"));
        assert!(!full(r"[^.]*", "a.c"));
        assert!(full(r"x{2,}", "xxxx"));
        assert!(full(r"a{,2}b", "aab"));
        assert!(full(r"a{x}", "a{x}"));
        assert!(full(
            r"^(?!.*lm_head).*_proj$",
            "model.layers.0.self_attn.o_proj"
        ));
        assert!(!full(r"^(?!.*lm_head).*$", "lm_head"));
        assert!(full(r"(?P<n>\w+)\.(?:\d+)", "layers.3"));
        assert!(full(r".*?\bq_proj", "model.layers.0.self_attn.q_proj"));
        assert!(full(r"[\w.]+", "model.layers.0"));
        assert!(full("", ""));
        assert!(full("a|", ""));
        assert!(full(r"(a*)*b", "aaab"));
    }

    #[test]
    fn refusals_name_the_construct() {
        for (p, why) in [
            (r"(?<=x)y", "lookbehind"),
            (r"(a)\1", "backreferences"),
            (r"(?i)q_proj", "not supported"),
            (r"a**", "multiple repeat"),
            (r"*a", "nothing to repeat"),
            (r"(ab", "missing `)`"),
            (r"ab)", "unbalanced"),
            (r"[ab", "unterminated"),
            (r"\q", "bad escape"),
            (r"a{3,1}", "greater"),
            (r"((x{100}){100}){100}", "too large"),
            (r"a{2}{3}", "multiple repeat"),
            (r"(?!a(?=b))", "nested lookahead"),
            (r"(?!x{60}).*", "too complex"),
            (r"[a-z]{4000}", "too complex"),
        ] {
            let err = Regex::new(p).unwrap_err();
            assert!(err.contains(why), "{p}: {err}");
        }
    }

    #[test]
    fn nested_stars_stay_fast() {
        let r = Regex::new(r"(a*)*(a*)*(a*)*$").unwrap();
        let s = format!("{}b", "a".repeat(200));
        assert!(!r.full_match(&s));
    }
}
