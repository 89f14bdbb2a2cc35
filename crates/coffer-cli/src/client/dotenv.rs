//! Dotenv files (`KEY=value` lines) parsed into secret names and values, for
//! `coffer secret import`.
//!
//! The dialect is the one docker compose and python-dotenv read, where they agree:
//!
//! - Lines end at `\n`, `\r\n` or a lone `\r`. Blank lines and `#` comment lines are
//!   skipped; an optional `export ` prefix is ignored; whitespace around the key and `=` is
//!   ignored. `KEY=` is an empty value.
//! - Unquoted values run to the end of the line and are trimmed. A `#` after whitespace
//!   starts a comment (`KEY=a #c` is `a`), including right after `=` and its whitespace
//!   (`KEY= # fill me in` is empty, as python-dotenv 1.2.4 reads it: a template's comment
//!   must not become a secret); a `#` with no whitespace before it is literal (`KEY=#x` is
//!   `#x`, `KEY=a#b` is `a#b`).
//! - Quoted values may span lines until the closing quote; a `\r\n` inside them is `\n`.
//!   After the closing quote only whitespace and a comment may follow.
//! - Single-quoted values are literal except for `\\` and `\'`.
//! - Double-quoted values understand `\n`, `\r`, `\t`, `\"`, `\'`, `\\`, `\a`, `\b`, `\f`
//!   and `\v`. Any other backslash, in either kind of quotes, stays as written.
//! - No variable interpolation: `$VAR` and `${VAR}` stay literal in every kind of value.
//!   This is deliberate: docker compose and python-dotenv would substitute them from the
//!   environment, and a secrets import must not pull values from the importing shell.
//! - A key that appears twice keeps its first position and its last value.
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
const UNCLOSED_SINGLE: &str = "the single-quoted value has no closing quote";
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
            let value = match raw.as_bytes().first() {
                Some(&quote @ (b'\'' | b'"')) => {
                    // The value may run past this line: rewind to just after the quote.
                    // `raw` is a suffix of `line`, so its start is found from the lengths.
                    let quote_at = line_start + line.len() - raw.len();
                    self.pos = quote_at + 1;
                    self.line = line_no;
                    self.quoted(quote, line_no)?
                }
                _ => SecretString::from(strip_inline_comment(after_eq).trim()),
            };
            return Ok(Some(Entry { name, value }));
        }
        Ok(None)
    }

    /// Consumes the rest of the current line and its line break (`\n`, `\r\n` or `\r`);
    /// returns it without the break.
    fn take_line(&mut self) -> &'a str {
        let rest = &self.text[self.pos..];
        let (line, consumed) = match rest.find(['\n', '\r']) {
            Some(i) if rest[i..].starts_with("\r\n") => (&rest[..i], i + 2),
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += consumed;
        self.line += 1;
        line
    }

    /// Reads a value in `quote`s whose opening quote is just before `self.pos`, then the
    /// rest of the line its closing quote is on.
    fn quoted(&mut self, quote: u8, start_line: usize) -> Result<SecretString, DotenvError> {
        let rest = &self.text[self.pos..];
        let bytes = rest.as_bytes();
        // Quotes and backslashes are ASCII, so scanning bytes cannot split a character: a
        // backslash may skip into the middle of one, but its other bytes never match.
        let mut i = 0;
        let close = loop {
            match bytes.get(i) {
                None => {
                    return Err(DotenvError {
                        line: start_line,
                        problem: if quote == b'"' {
                            UNCLOSED_DOUBLE
                        } else {
                            UNCLOSED_SINGLE
                        },
                    });
                }
                Some(b'\\') => i += 2,
                Some(&b) if b == quote => break i,
                Some(_) => i += 1,
            }
        };
        let raw = &rest[..close];
        let value = unescape(raw, quote == b'"');
        self.line += line_breaks(raw);
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

/// Cuts an unquoted value (everything after `=`) at the first `#` that follows whitespace:
/// `KEY=a #c` is `a`, `KEY= # fill me in` is empty, but `KEY=#x` and `KEY=a#b` keep their `#`.
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

/// How many line breaks (`\n`, `\r\n` or a lone `\r`) `text` holds.
fn line_breaks(text: &str) -> usize {
    let bytes = text.as_bytes();
    (0..bytes.len())
        .filter(|&i| bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count()
}

/// Resolves the escapes of a quoted value (`double`: the double-quoted set, else `\\` and
/// `\'` only) into a buffer sized once, so no partial copy of the value is left behind by a
/// reallocation. The result is never longer than `raw`.
fn unescape(raw: &str, double: bool) -> SecretString {
    let mut out = Zeroizing::new(String::with_capacity(raw.len()));
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = match chars.peek().copied() {
                    Some('\\') => Some('\\'),
                    Some('\'') => Some('\''),
                    Some(next) if double => match next {
                        '"' => Some('"'),
                        'n' => Some('\n'),
                        'r' => Some('\r'),
                        't' => Some('\t'),
                        'a' => Some('\u{07}'),
                        'b' => Some('\u{08}'),
                        'f' => Some('\u{0c}'),
                        'v' => Some('\u{0b}'),
                        _ => None,
                    },
                    _ => None,
                };
                match escaped {
                    Some(e) => {
                        chars.next();
                        out.push(e);
                    }
                    // Not an escape: the backslash stays and the next character is read
                    // as usual (so a backslash before a `\r\n` is followed by `\n`).
                    None => out.push('\\'),
                }
            }
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
    fn unquoted_value_loses_an_inline_comment_after_whitespace_within_it() {
        assert_eq!(
            pairs("A=value # note\nB=val#not-a-comment\nD=x\t#tab\nE=a #b #c\nF=a#b #c"),
            vec![
                pair("A", "value"),
                pair("B", "val#not-a-comment"),
                pair("D", "x"),
                pair("E", "a"),
                pair("F", "a#b"),
            ]
        );
    }

    #[test]
    fn a_hash_after_whitespace_is_a_comment_even_right_after_the_equals_sign() {
        // As python-dotenv 1.2.4 reads it: a template line must not import its comment.
        assert_eq!(
            pairs("A=#x\nB= #x\nC= # fill me in\nD=\t#x\nE= #x y #z"),
            vec![
                pair("A", "#x"),
                pair("B", ""),
                pair("C", ""),
                pair("D", ""),
                pair("E", ""),
            ]
        );
    }

    #[test]
    fn empty_values_are_allowed() {
        assert_eq!(
            pairs("A=\nB=''\nC=\"\""),
            vec![pair("A", ""), pair("B", ""), pair("C", "")]
        );
    }

    #[test]
    fn single_quoted_values_are_literal_but_for_escaped_backslashes_and_quotes() {
        assert_eq!(
            pairs(r#"A='a \n "b" # c '  # comment"#),
            vec![pair("A", r#"a \n "b" # c "#)]
        );
        assert_eq!(
            pairs(
                r#"A='it\'s'
B='a\\b'
C='\t \" \$ \x'
D='ends with \\'#c"#
            ),
            vec![
                pair("A", "it's"),
                pair("B", r"a\b"),
                pair("C", r#"\t \" \$ \x"#),
                pair("D", r"ends with \"),
            ]
        );
    }

    #[test]
    fn single_quoted_values_span_lines_until_the_closing_quote() {
        assert_eq!(
            pairs("A='l1\nl2' # c\nB=after\n"),
            vec![pair("A", "l1\nl2"), pair("B", "after")]
        );
    }

    #[test]
    fn double_quoted_values_resolve_escapes() {
        assert_eq!(
            pairs(r#"A="l1\nl2\r\t\"q\" \\ \x # kept""#),
            vec![pair("A", "l1\nl2\r\t\"q\" \\ \\x # kept")]
        );
        assert_eq!(
            pairs(r#"A="it\'s \a\b\f\v""#),
            vec![pair("A", "it's \u{07}\u{08}\u{0c}\u{0b}")]
        );
    }

    #[test]
    fn unknown_escapes_in_double_quotes_keep_their_backslash() {
        assert_eq!(
            pairs(r#"A="\$HOME \0101 \u00e9 \x41 \c""#),
            vec![pair("A", r"\$HOME \0101 \u00e9 \x41 \c")]
        );
    }

    #[test]
    fn variables_are_never_interpolated() {
        let text = "A=${HOME}\nB=$HOME\nC='${HOME}'\nD=\"${HOME} $HOME\"\nE=${UNSET_VAR:-default}";
        assert_eq!(
            pairs(text),
            vec![
                pair("A", "${HOME}"),
                pair("B", "$HOME"),
                pair("C", "${HOME}"),
                pair("D", "${HOME} $HOME"),
                pair("E", "${UNSET_VAR:-default}"),
            ]
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
        let text = "A=1\r\nB='two'\r\nC=\"x\r\ny\"\r\n# c\r\nD=4 # c\r\nE='x\r\ny'\r\nF=\"a\\\r\nb\"\r\nG=\r\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("A", "1"),
                pair("B", "two"),
                pair("C", "x\ny"),
                pair("D", "4"),
                pair("E", "x\ny"),
                pair("F", "a\\\nb"),
                pair("G", ""),
            ]
        );
    }

    #[test]
    fn lone_carriage_returns_end_lines_too() {
        let text = "A=1\rB='two'\r# c\rC=\"x\ry\"\rD=4";
        assert_eq!(
            pairs(text),
            vec![
                pair("A", "1"),
                pair("B", "two"),
                pair("C", "x\ry"),
                pair("D", "4")
            ]
        );
        assert_eq!(error("A=1\rB=\"x\ry\"\rbroken").line, 4);
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
    fn an_unclosed_single_quote_names_the_line_it_opened_on() {
        assert_eq!(
            error("A=1\nB='abc\n\ndef"),
            DotenvError {
                line: 2,
                problem: UNCLOSED_SINGLE
            }
        );
        assert_eq!(
            error(r"A='an escaped quote does not close\'"),
            DotenvError {
                line: 1,
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
        assert_eq!(
            error("A='x\ny'z"),
            DotenvError {
                line: 2,
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

    /// Each case was run through python-dotenv 1.2.3 (`dotenv_values(stream=…,
    /// interpolate=False)`), which gave these values, except the three `KEY= #…` cases,
    /// where Coffer follows python-dotenv 1.2.4 (empty; 1.2.3 and docker compose read the
    /// comment text as the value). Where Coffer differs on purpose: a `\r\n` inside quotes (python-dotenv keeps it; Coffer, like a file's own line ends,
    /// reads `\n`), interpolation (python-dotenv's default; never here), and malformed lines
    /// (python-dotenv skips them with a warning; Coffer refuses the file).
    #[test]
    fn agrees_with_python_dotenv_on_the_cases_checked() {
        let cases: &[(&str, &str)] = &[
            ("KEY= #x", ""),
            ("KEY=\t#x", ""),
            ("KEY= #x y #z", ""),
            ("KEY=#x", "#x"),
            ("KEY=#", "#"),
            ("KEY=a #c", "a"),
            ("KEY=a#b", "a#b"),
            ("KEY=a\t#c", "a"),
            ("KEY=a #b #c", "a"),
            ("KEY=a#b #c", "a#b"),
            ("KEY=\\#x", "\\#x"),
            ("KEY=", ""),
            ("KEY= ", ""),
            ("KEY=a b\t", "a b"),
            ("  KEY  =  v  ", "v"),
            ("export  KEY=1", "1"),
            ("export KEY='x'", "x"),
            ("KEY=a'b", "a'b"),
            ("KEY=a\"b", "a\"b"),
            ("KEY=a\\nb", "a\\nb"),
            ("KEY=\u{e9} \u{2713}", "\u{e9} \u{2713}"),
            ("KEY= '  x  '", "  x  "),
            ("KEY=\t'x'", "x"),
            ("KEY= \"x\"", "x"),
            ("KEY='x' # c", "x"),
            ("KEY='x'#c", "x"),
            ("KEY=\"x\" # c", "x"),
            ("KEY=\"x\"#c", "x"),
            ("KEY='a\\\\b'", "a\\b"),
            ("KEY='a\\'b'", "a'b"),
            ("KEY='a\\nb'", "a\\nb"),
            ("KEY='l1\nl2' # c", "l1\nl2"),
            ("KEY=\"l1\nl2\"", "l1\nl2"),
            ("KEY=\"a\\'b\"", "a'b"),
            ("KEY=\"a\\'b\\\"c\"", "a'b\"c"),
            (
                "KEY=\"a\\nb\\rc\\td\\\"e\\\\f\\xg\"",
                "a\nb\rc\td\"e\\f\\xg",
            ),
            ("KEY=\"a\\fb\\vc\\bd\\ae\"", "a\u{0c}b\u{0b}c\u{08}d\u{07}e"),
            ("KEY=\"a\\\\nb\"", "a\\nb"),
            ("KEY=\"a\\$b\"", "a\\$b"),
            ("KEY=\"\\0101\"", "\\0101"),
            ("KEY=\"\\u00e9\"", "\\u00e9"),
            ("KEY=\"a\\\nb\"", "a\\\nb"),
            ("KEY=$HOME", "$HOME"),
            ("KEY=${HOME}", "${HOME}"),
            ("KEY='${HOME}'", "${HOME}"),
            ("KEY=\"$HOME\"", "$HOME"),
            ("A=0\nKEY=1\rB=2", "1"),
            ("KEY=1\nKEY=2", "2"),
        ];
        for &(text, want) in cases {
            let got = pairs(text);
            let value = got
                .iter()
                .find(|(k, _)| k == "KEY")
                .map(|(_, v)| v.as_str());
            assert_eq!(value, Some(want), "{text:?}");
        }
    }

    #[test]
    fn an_empty_file_has_no_entries() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only comments\n\n").unwrap().is_empty());
    }
}
