//! Streaming text out of generated tokens.
//!
//! [`TokenStream`] decodes incrementally without ever emitting part of a character: a byte-level
//! tokenizer may split one character over several tokens, and decoding a prefix of them gives
//! U+FFFD. [`StopMatcher`] then holds back text that may be the beginning of a stop string, so
//! that a stop string split across tokens is never emitted, while everything before it is.

use super::tokenizer::Tokenizer;
use crate::error::Result;

/// Incremental detokenizer.
///
/// It keeps every id and two offsets: text is decoded from `prefix_offset` (a little context
/// already emitted, so that decoders which treat the first token specially, like SentencePiece's
/// leading-space rule, see the same context as a full decode) up to `read_offset` (what has been
/// emitted) and up to the end; the difference is emitted once the end decodes to more text that
/// does not end with U+FFFD, a character still incomplete.
#[derive(Debug, Clone, Default)]
pub struct TokenStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

/// `text` past `prefix`. Decoding is not always concatenative; when `prefix` is not a prefix of
/// `text`, the cut falls at `prefix`'s length, moved forward to a character boundary.
fn suffix_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest;
    }
    let mut cut = prefix.len().min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}

impl TokenStream {
    /// An empty stream; `skip_special_tokens` drops special tokens from the text, as in
    /// [`Tokenizer::decode`].
    pub fn new(skip_special_tokens: bool) -> Self {
        TokenStream {
            skip_special_tokens,
            ..Default::default()
        }
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds one id and returns the text it completes, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.emit(tok, false)
    }

    /// Returns whatever is left undecoded, incomplete characters included (as U+FFFD). Pushing
    /// may continue afterwards.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        self.emit(tok, true)
    }

    fn emit(&mut self, tok: &Tokenizer, flush: bool) -> Result<Option<String>> {
        let skip = self.skip_special_tokens;
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], skip)?;
        let text = tok.decode(&self.ids[self.prefix_offset..], skip)?;
        if text.len() > prefix.len() && (flush || !text.ends_with('\u{FFFD}')) {
            let new = suffix_after(&text, &prefix).to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            return Ok(Some(new));
        }
        Ok(None)
    }
}

/// Cuts streamed text at the first stop string.
///
/// Text that could be the beginning of a stop string is held back until the next piece shows
/// whether it is; on a match, the text before the stop string is emitted and the stop string
/// and everything after it are dropped.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// The longest stop string, in bytes.
    max_len: usize,
    buffer: String,
    stopped_on: Option<usize>,
}

impl StopMatcher {
    /// A matcher for these stop strings; empty ones are ignored.
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops: Vec<String> = stops
            .into_iter()
            .map(Into::into)
            .filter(|s: &String| !s.is_empty())
            .collect();
        let max_len = stops.iter().map(String::len).max().unwrap_or(0);
        StopMatcher {
            stops,
            max_len,
            buffer: String::new(),
            stopped_on: None,
        }
    }

    /// Whether a stop string has been seen.
    pub fn is_stopped(&self) -> bool {
        self.stopped_on.is_some()
    }

    /// The stop string that ended the text, once one has.
    pub fn stop_string(&self) -> Option<&str> {
        self.stopped_on
            .and_then(|i| self.stops.get(i))
            .map(String::as_str)
    }

    /// Adds streamed text; returns the text now safe to emit and whether a stop string was seen.
    /// Once stopped, it emits nothing more.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.is_stopped() {
            return (String::new(), true);
        }
        self.buffer.push_str(text);

        let mut first: Option<(usize, usize)> = None;
        for (i, stop) in self.stops.iter().enumerate() {
            if let Some(pos) = self.buffer.find(stop.as_str()) {
                if first.is_none_or(|(best, _)| pos < best) {
                    first = Some((pos, i));
                }
            }
        }
        if let Some((pos, i)) = first {
            self.buffer.truncate(pos);
            self.stopped_on = Some(i);
            return (std::mem::take(&mut self.buffer), true);
        }

        let cut = self.buffer.len() - self.held_back();
        let rest = self.buffer.split_off(cut);
        (std::mem::replace(&mut self.buffer, rest), false)
    }

    /// The text held back at the end of the stream, which turned out not to start a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.buffer)
    }

    /// Length of the longest end of the buffer that begins some stop string.
    fn held_back(&self) -> usize {
        let len = self.buffer.len();
        let mut start = len.saturating_sub(self.max_len.saturating_sub(1));
        while start < len {
            if self.buffer.is_char_boundary(start) {
                let tail = &self.buffer[start..];
                if self.stops.iter().any(|s| s.starts_with(tail)) {
                    return len - start;
                }
            }
            start += 1;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::tokenizer::fixture::{self, EOT};
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Pushes every id, then finishes; returns the emitted pieces.
    fn stream(tok: &Tokenizer, ids: &[u32], skip: bool) -> Result<Vec<Option<String>>> {
        let mut s = TokenStream::new(skip);
        let mut pieces = Vec::new();
        for &id in ids {
            pieces.push(s.push(tok, id)?);
        }
        pieces.push(s.finish(tok)?);
        assert_eq!(s.ids(), ids);
        Ok(pieces)
    }

    #[test]
    fn emits_whole_characters_only() -> TestResult {
        let tok = fixture::tokenizer()?;
        let text = "Hé🙂llo wörld 日本, éé🙂!";
        let ids = tok.encode(text, false)?;
        assert!(
            ids.len() > text.chars().count(),
            "multi-byte characters should span tokens"
        );
        let pieces = stream(&tok, &ids, false)?;
        let joined: String = pieces.iter().flatten().map(String::as_str).collect();
        assert_eq!(joined, tok.decode(&ids, false)?);
        assert_eq!(joined, text);
        assert!(pieces
            .iter()
            .flatten()
            .all(|p| !p.contains('\u{FFFD}') && !p.is_empty()));
        assert_eq!(pieces.last(), Some(&None));
        Ok(())
    }

    #[test]
    fn holds_a_character_until_its_last_byte() -> TestResult {
        let tok = fixture::tokenizer()?;
        // é🙂 is C3 A9 F0 9F 99 82; the merge "©ð" joins A9 (end of é) with F0 (start of 🙂).
        let ids = tok.encode("é🙂a", false)?;
        assert_eq!(ids.len(), 6);
        assert_eq!(Some(ids[1]), tok.token_to_id("©ð"));
        let pieces = stream(&tok, &ids, false)?;
        let expected = [None, None, None, None, Some("é🙂"), Some("a"), None];
        assert_eq!(pieces, expected.map(|p| p.map(str::to_owned)));
        Ok(())
    }

    #[test]
    fn finish_flushes_incomplete_bytes() -> TestResult {
        let tok = fixture::tokenizer()?;
        let lone = tok.token_to_id("ÿ").ok_or("no ÿ")?; // the byte 0xFF, never valid UTF-8
        let h = tok.token_to_id("h").ok_or("no h")?;
        let pieces = stream(&tok, &[h, lone], false)?;
        assert_eq!(
            pieces,
            vec![Some("h".to_owned()), None, Some("\u{FFFD}".to_owned())]
        );
        // An invalid byte followed by text is not waited on.
        let pieces = stream(&tok, &[lone, h], false)?;
        assert_eq!(pieces, vec![None, Some("\u{FFFD}h".to_owned()), None]);
        Ok(())
    }

    #[test]
    fn special_tokens_can_be_skipped() -> TestResult {
        let tok = fixture::tokenizer()?;
        let mut ids = tok.encode("hi", false)?;
        ids.push(EOT);
        ids.extend(tok.encode("yo", false)?);
        let text = |pieces: Vec<Option<String>>| pieces.into_iter().flatten().collect::<String>();
        assert_eq!(text(stream(&tok, &ids, true)?), "hiyo");
        assert_eq!(text(stream(&tok, &ids, false)?), "hi<|endoftext|>yo");
        Ok(())
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut out = Vec::new();
        for piece in pieces {
            let (emit, stopped) = m.push(piece);
            assert_eq!(stopped, m.is_stopped());
            out.push(emit);
        }
        (out, m.finish(), m.stop_string().map(str::to_owned))
    }

    #[test]
    fn stop_string_split_across_pieces() {
        let (out, rest, stop) = run(&["<|user|>"], &["Hello <", "|us", "er|> more", " text"]);
        assert_eq!(out, vec!["Hello ", "", "", ""]);
        assert_eq!(rest, "");
        assert_eq!(stop.as_deref(), Some("<|user|>"));
    }

    #[test]
    fn false_alarm_is_released() {
        let (out, rest, stop) = run(&["<|user|>"], &["a <|u", "x", "b <|"]);
        assert_eq!(out, vec!["a ", "<|ux", "b "]);
        assert_eq!(rest, "<|");
        assert_eq!(stop, None);
    }

    #[test]
    fn earliest_stop_wins_and_text_before_it_is_kept() {
        let (out, _, stop) = run(&["END", "\n\n"], &["one\n", "\ntwo END"]);
        assert_eq!(out, vec!["one", ""]);
        assert_eq!(stop.as_deref(), Some("\n\n"));
        let (out, _, stop) = run(&["xyz", "y"], &["axyz"]);
        assert_eq!(out, vec!["a"]);
        assert_eq!(stop.as_deref(), Some("xyz"));
    }

    #[test]
    fn multibyte_stop_strings() {
        let (out, rest, stop) = run(&["🙂!"], &["é🙂", "?", "🙂", "!tail"]);
        assert_eq!(out, vec!["é", "🙂?", "", ""]);
        assert_eq!(rest, "");
        assert_eq!(stop.as_deref(), Some("🙂!"));
    }

    #[test]
    fn no_stops_pass_everything() {
        let (out, rest, stop) = run(&[""], &["a", "b"]);
        assert_eq!(out, vec!["a", "b"]);
        assert_eq!(rest, "");
        assert_eq!(stop, None);
    }

    #[test]
    fn stream_into_stop_matcher() -> TestResult {
        let tok = fixture::tokenizer()?;
        let ids = tok.encode("hello é🙂 world", false)?;
        let mut s = TokenStream::new(true);
        let mut m = StopMatcher::new([" é🙂"]);
        let mut out = String::new();
        for &id in &ids {
            if let Some(text) = s.push(&tok, id)? {
                let (emit, stopped) = m.push(&text);
                out.push_str(&emit);
                if stopped {
                    break;
                }
            }
        }
        assert!(m.is_stopped());
        assert_eq!(out, "hello");
        Ok(())
    }
}
