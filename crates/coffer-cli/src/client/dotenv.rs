//! Dotenv files (`KEY=value` lines) parsed into secret names and values, for
//! `coffer secret import`.
//!
//! The dialect: blank lines and `#` comments are skipped; an optional `export ` prefix;
//! whitespace around the key and `=` is ignored. Unquoted values are trimmed and lose an
//! inline comment that follows whitespace (` #…`). Single-quoted values are literal and end
//! on their line. Double-quoted values understand `\n`, `\r`, `\t`, `\"` and `\\` (any other
//! backslash stays as written) and may span lines until the closing quote; a line break
//! inside them is `\n` whatever the file uses. After a closing quote only whitespace and a
//! comment may follow. `KEY=` is an empty value. A key that appears twice keeps its first
//! position and its last value.
//!
//! Errors name a line number and the problem, never the line: it may hold a secret.

use std::collections::HashMap;
use std::fmt;

use coffer_core::SecretName;
use secrecy::SecretString;
use zeroize::Zeroizing;

/// One `KEY=value` entry of a dotenv file.
pub struct Entry {
    /// The key, checked against the secret-name rule.
    pub name: SecretName,
    /// The value, unescaped.
    pub value: SecretString,
}

/// Why a dotenv file could not be read: where, and what is wrong (never the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub problem: &'static str,
}

impl fmt::Display for DotenvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for DotenvError {}

/// Parses a whole dotenv file. Entries come in the order their keys first appear.
pub fn parse(text: &str) -> Result<Vec<Entry>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut cursor = Cursor {
        text,
        pos: 0,
        line: 1,
    };
    while let Some(entry) = cursor.next_entry()? {
        match index.get(entry.name.as_str()) {
            Some(&i) => entries[i].value = entry.value,
            None => {
                index.insert(entry.name.as_str().to_owned(), entries.len());
                entries.push(entry);
            }
        }
    }
    Ok(entries)
}

const EXPECTED_ASSIGNMENT: &str = "expected KEY=value";
const BAD_KEY: &str =
    "the key is not a valid secret name (1-128 letters, digits and '_', not starting with a digit)";
const UNCLOSED_SINGLE: &str = "the single-quoted value has no closing quote on its line";
const UNCLOSED_DOUBLE: &str = "the double-quoted value has no closing quote";
const TRAILING: &str = "unexpected characters after the closing quote";

/// A position in the file: byte offset and the line number it is on.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    /// The next entry, skipping blank and comment lines; `None` at the end of the file.
    fn next_entry(&mut self) -> Result<Option<Entry>, DotenvError> {
        while self.pos < self.text.len() {
            let line_no = self.line;
            let line_start = self.pos;
            let line = self.take_line();
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let err = |problem| DotenvError {
                line: line_no,
                problem,
            };
            let content = strip_export(content);
            let (key, after_eq) = content.split_once('=').ok_or(err(EXPECTED_ASSIGNMENT))?;
            let name = SecretName::new(key.trim()).map_err(|_| err(BAD_KEY))?;
            let raw = after_eq.trim_start_matches([' ', '\t']);
            let value = match raw.chars().next() {
                Some('\'') => {
                    let (inner, rest) = raw[1..].split_once('\'').ok_or(err(UNCLOSED_SINGLE))?;
                    if !is_blank_or_comment(rest) {
                        return Err(err(TRAILING));
                    }
                    SecretString::from(inner)
                }
                Some('"') => {
                    // The value may run past this line: rewind to just after the quote.
                    // `raw` is a suffix of `line`, so its start is found from the lengths.
                    let quote_at = line_start + line.len() - raw.len();
                    self.pos = quote_at + 1;
                    self.line = line_no;
                    self.double_quoted(line_no)?
                }
                _ => SecretString::from(strip_inline_comment(after_eq).trim()),
            };
            return Ok(Some(Entry { name, value }));
        }
        Ok(None)
    }

    /// Consumes the rest of the current line and its line break; returns it without them.
    fn take_line(&mut self) -> &'a str {
        let rest = &self.text[self.pos..];
        let (line, consumed) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += consumed;
        self.line += 1;
        line.strip_suffix('\r').unwrap_or(line)
    }

    /// Reads a double-quoted value whose opening quote is just before `self.pos`, then the
    /// rest of the line its closing quote is on.
    fn double_quoted(&mut self, start_line: usize) -> Result<SecretString, DotenvError> {
        let rest = &self.text[self.pos..];
        let bytes = rest.as_bytes();
        // Quotes and backslashes are ASCII, so scanning bytes cannot split a character.
        let mut i = 0;
        let close = loop {
            match bytes.get(i) {
                None => {
                    return Err(DotenvError {
                        line: start_line,
                        problem: UNCLOSED_DOUBLE,
                    });
                }
                Some(b'\\') => i += 2,
                Some(b'"') => break i,
                Some(_) => i += 1,
            }
        };
        let raw = &rest[..close];
        let value = unescape(raw);
        self.line += raw.matches('\n').count();
        self.pos += close + 1;
        let closing_line = self.line;
        let tail = self.take_line();
        if !is_blank_or_comment(tail) {
            return Err(DotenvError {
                line: closing_line,
                problem: TRAILING,
            });
        }
        Ok(value)
    }
}

/// `export KEY=…` → `KEY=…`; a key that is merely called `export` stays.
fn strip_export(content: &str) -> &str {
    match content.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => content,
    }
}

/// Cuts an unquoted value (everything after `=`) at the first `#` that follows whitespace;
/// `KEY=#x` keeps its `#`.
fn strip_inline_comment(raw: &str) -> &str {
    let bytes = raw.as_bytes();
    let cut = (1..bytes.len()).find(|&i| bytes[i] == b'#' && matches!(bytes[i - 1], b' ' | b'\t'));
    match cut {
        Some(i) => &raw[..i],
        None => raw,
    }
}

fn is_blank_or_comment(rest: &str) -> bool {
    let rest = rest.trim_start();
    rest.is_empty() || rest.starts_with('#')
}

/// Resolves the escapes of a double-quoted value into a buffer sized once, so no partial
/// copy of the value is left behind by a reallocation.
fn unescape(raw: &str) -> SecretString {
    let mut out = Zeroizing::new(String::with_capacity(raw.len()));
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            // A CRLF file's line break inside quotes is still one `\n`.
            '\r' if chars.peek() == Some(&'\n') => {}
            c => out.push(c),
        }
    }
    // `out` never grew past its capacity; `SecretString::from(String)` could shrink it by
    // reallocating, so hand over an exact copy and let `Zeroizing` wipe the buffer.
    SecretString::from(out.as_str())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.name.as_str().to_owned(),
                    e.value.expose_secret().to_owned(),
                )
            })
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    fn error(text: &str) -> DotenvError {
        match parse(text) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_assignments_are_read_in_order() {
        assert_eq!(
            pairs("A=1\nB=two\n"),
            vec![pair("A", "1"), pair("B", "two")]
        );
    }

    #[test]
    fn blank_lines_and_comments_are_skipped() {
        let text = "\n# a comment\n   \n  # indented comment\nA=1\n\n";
        assert_eq!(pairs(text), vec![pair("A", "1")]);
    }

    #[test]
    fn export_prefix_is_ignored_but_a_key_named_export_is_kept() {
        assert_eq!(
            pairs("export A=1\nexport\tB=2\nexport=3"),
            vec![pair("A", "1"), pair("B", "2"), pair("export", "3")]
        );
    }

    #[test]
    fn whitespace_around_key_and_equals_is_trimmed() {
        assert_eq!(
            pairs("  A  =  value  \n\tB\t=\tx y\t"),
            vec![pair("A", "value"), pair("B", "x y")]
        );
    }

    #[test]
    fn unquoted_value_loses_an_inline_comment_after_whitespace() {
        assert_eq!(
            pairs("A=value # note\nB=val#not-a-comment\nC= # only a comment\nD=x\t#tab"),
            vec![
                pair("A", "value"),
                pair("B", "val#not-a-comment"),
                pair("C", ""),
                pair("D", "x"),
            ]
        );
        assert_eq!(pairs("A=#not-a-comment"), vec![pair("A", "#not-a-comment")]);
    }

    #[test]
    fn empty_values_are_allowed() {
        assert_eq!(
            pairs("A=\nB=''\nC=\"\""),
            vec![pair("A", ""), pair("B", ""), pair("C", "")]
        );
    }

    #[test]
    fn single_quoted_values_are_literal() {
        assert_eq!(
            pairs(r#"A='a \n "b" # c '  # comment"#),
            vec![pair("A", r#"a \n "b" # c "#)]
        );
    }

    #[test]
    fn double_quoted_values_resolve_escapes() {
        assert_eq!(
            pairs(r#"A="l1\nl2\r\t\"q\" \\ \x # kept""#),
            vec![pair("A", "l1\nl2\r\t\"q\" \\ \\x # kept")]
        );
    }

    #[test]
    fn double_quoted_values_span_lines_until_the_closing_quote() {
        let text = "A=\"-----BEGIN KEY-----\nabc\n-----END KEY-----\" # pem\nB=after\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("A", "-----BEGIN KEY-----\nabc\n-----END KEY-----"),
                pair("B", "after")
            ]
        );
    }

    #[test]
    fn crlf_files_give_the_same_values() {
        let text = "A=1\r\nB='two'\r\nC=\"x\r\ny\"\r\n# c\r\nD=4";
        assert_eq!(
            pairs(text),
            vec![
                pair("A", "1"),
                pair("B", "two"),
                pair("C", "x\ny"),
                pair("D", "4")
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        assert_eq!(pairs("\u{feff}A=1"), vec![pair("A", "1")]);
    }

    #[test]
    fn duplicate_keys_keep_the_first_position_and_the_last_value() {
        assert_eq!(
            pairs("A=1\nB=2\nA=3\n"),
            vec![pair("A", "3"), pair("B", "2")]
        );
    }

    #[test]
    fn non_ascii_values_survive() {
        assert_eq!(
            pairs("A=héllo wörld ✓\nB=\"日本\\n語\""),
            vec![pair("A", "héllo wörld ✓"), pair("B", "日本\n語")]
        );
    }

    #[test]
    fn a_line_without_equals_is_refused_by_line_number_only() {
        let e = error("A=1\n\nhunter2-not-an-assignment\n");
        assert_eq!(
            e,
            DotenvError {
                line: 3,
                problem: EXPECTED_ASSIGNMENT
            }
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn an_invalid_key_is_refused_by_line_number_only() {
        for (text, line) in [
            ("1A=x", 1),
            ("A=1\nMY KEY=hunter2", 2),
            ("=x", 1),
            ("A-B=x", 1),
        ] {
            let e = error(text);
            assert_eq!(
                e,
                DotenvError {
                    line,
                    problem: BAD_KEY
                },
                "{text:?}"
            );
            assert!(!e.to_string().contains("hunter2"));
        }
        let long = format!("{}=x", "K".repeat(129));
        assert_eq!(error(&long).problem, BAD_KEY);
        assert_eq!(pairs(&format!("{}=x", "K".repeat(128))).len(), 1);
    }

    #[test]
    fn an_unclosed_single_quote_is_refused() {
        assert_eq!(
            error("A=1\nB='abc\ndef'"),
            DotenvError {
                line: 2,
                problem: UNCLOSED_SINGLE
            }
        );
    }

    #[test]
    fn an_unclosed_double_quote_names_the_line_it_opened_on() {
        assert_eq!(
            error("A=1\nB=\"abc\n\ndef\\\""),
            DotenvError {
                line: 2,
                problem: UNCLOSED_DOUBLE
            }
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_refused_on_the_closing_line() {
        assert_eq!(
            error("A='x' y"),
            DotenvError {
                line: 1,
                problem: TRAILING
            }
        );
        assert_eq!(
            error("A=\"x\n\ny\" z\nB=1"),
            DotenvError {
                line: 3,
                problem: TRAILING
            }
        );
    }

    #[test]
    fn line_numbers_count_lines_inside_multi_line_values() {
        assert_eq!(
            error("A=\"1\n2\n3\"\nB=ok\nbroken"),
            DotenvError {
                line: 5,
                problem: EXPECTED_ASSIGNMENT
            }
        );
    }

    #[test]
    fn an_empty_file_has_no_entries() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only comments\n\n").unwrap().is_empty());
    }
}
