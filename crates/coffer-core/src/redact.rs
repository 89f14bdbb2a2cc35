//! Masking resolved secret values in what a run returns.
//!
//! A function runs with secret values, and whatever it returns (output JSON, error text, log
//! lines) is stored and shown to the management plane. A [`Redactor`], built from the values
//! a run resolved, replaces each of them in that output by [`MASK`] before it is stored or
//! shown. Pure: no I/O, no async.
//!
//! Every value of at least [`MIN_REDACTED_LEN`] characters, and every such line of a
//! multi-line value, is a needle, looked for as
//!
//! - the value itself;
//! - base64, standard and URL-safe alphabets, padded or not: whole, or inside a longer
//!   base64 string at any of the three byte alignments (there, the characters made only of
//!   the value's bits);
//! - hex, in any letter case;
//! - percent-encoded, whichever characters were escaped, escapes in either case, `+` for
//!   space as in forms (the text is decoded, then searched);
//! - backslash-escaped as JSON, JavaScript, Python and Rust print strings (`\"`, `\n`,
//!   `\u00e9`, `\ud83d\udd11`, `\u{1f511}`, `\xc3`, …; decoded, then searched).
//!
//! Every stretch of the text that a needle covers in any of these readings is masked;
//! overlapping or touching stretches become one mask. The search is an Aho–Corasick automaton
//! that reports the longest needle ending at each byte, so the work is linear in the text
//! (one pass per reading) however many needles match, and linear in the values to build.
//! `docs/RUNTIME.md` (Redaction) states the rule and what it does not catch.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

/// What every redacted stretch of text is replaced by.
pub const MASK: &str = "********";

/// Values (and lines of multi-line values) shorter than this, in characters (Unicode scalar
/// values), are not redacted: masking every `admin` or `true` would hide more than it
/// protects, and a value that short is no secret anyway.
pub const MIN_REDACTED_LEN: usize = 6;

/// How many times [`Redactor::redact`] searches one text. A mask can complete a needle only
/// if the needle has a `*` in it, or (rarely) by changing how the characters beside it
/// decode, so the second search almost always finds nothing; a text that still holds a
/// needle after this many searches is replaced by one [`MASK`] as a whole (it fails closed).
const MAX_SEARCHES: usize = 8;

/// Masks resolved secret values in text and in JSON.
///
/// Built once per run from the values it resolved. Its needles live only in its own
/// `Zeroizing` buffers and in the arrays of its automata, wiped on drop; `Debug` shows how
/// many values and lines it holds and nothing else, and it has no `Display` or `Serialize`.
///
/// The needles and their automata are made by the first search of a text long enough to
/// hold a needle: most runs report a few short fields (`{"ok":true}`), and making them for
/// every run (twenty encodings of each value, then the automata) was a twentieth of the
/// server's CPU on the push bench.
pub struct Redactor {
    /// The values and lines that are needles, kept to make the needles from (again, if a
    /// build did not finish).
    units: Vec<Zeroizing<Vec<u8>>>,
    /// The length in bytes of the shortest needle (`usize::MAX` when there is none): no
    /// shorter text, nor any of its decoded readings (never longer), can hold one.
    shortest: usize,
    automata: OnceLock<Automata>,
}

#[derive(Default)]
struct Needles {
    /// The values, their lines and their base64 forms, matched byte for byte in the text and
    /// in its decoded readings.
    exact: Vec<Zeroizing<Vec<u8>>>,
    /// The hex forms, matched in the text folded to ASCII lower case.
    hex: Vec<Zeroizing<Vec<u8>>>,
}

impl Needles {
    /// Every form of every unit.
    fn of(units: &[Zeroizing<Vec<u8>>]) -> Needles {
        let mut needles = Needles::default();
        for unit in units {
            needles.exact.push(unit.clone());
            push_base64(unit, &mut needles.exact);
            needles.hex.push(hex_lower(unit));
        }
        needles
    }
}

struct Automata {
    exact: Automaton,
    hex: Automaton,
}

impl Redactor {
    /// A redactor for `values`.
    ///
    /// A value that has a line break also contributes each of its lines (split at `\n` and
    /// `\r`). A value or line shorter than [`MIN_REDACTED_LEN`] characters is skipped, and so
    /// is one made only of whitespace (it would mask every indentation) or only of `*` (it
    /// cannot be told from a mask).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut units = Vec::new();
        for value in values {
            let lines = value
                .contains(['\r', '\n'])
                .then(|| value.split(['\r', '\n']))
                .into_iter()
                .flatten();
            for unit in std::iter::once(value).chain(lines).filter(|u| is_needle(u)) {
                units.push(Zeroizing::new(unit.as_bytes().to_vec()));
            }
        }
        // A unit's other forms are never shorter than it: its hex is twice as long, and its
        // base64 at alignment k (0-2) keeps floor(4(n+k)/3) - ceil(4k/3) >= n characters
        // for n >= 3 bytes (a unit has at least six). So the shortest unit is the shortest
        // needle (`the_shortest_needle_is_the_shortest_unit` checks it).
        let shortest = units.iter().map(|u| u.len()).min();
        Redactor {
            units,
            shortest: shortest.unwrap_or(usize::MAX),
            automata: OnceLock::new(),
        }
    }

    /// The bytes of the values and lines it redacts (what its needles and automata grow
    /// with).
    pub fn needle_bytes(&self) -> usize {
        self.units.iter().map(|u| u.len()).sum()
    }

    /// The automata, built on first use.
    fn automata(&self) -> &Automata {
        self.automata.get_or_init(|| {
            let Needles { exact, hex } = Needles::of(&self.units);
            Automata {
                exact: Automaton::new(exact, false),
                hex: Automaton::new(hex, true),
            }
        })
    }

    /// Whether there is nothing to redact (no value was long enough): then [`redact`] and
    /// [`redact_json`] return their input unchanged.
    ///
    /// [`redact`]: Redactor::redact
    /// [`redact_json`]: Redactor::redact_json
    pub fn is_empty(&self) -> bool {
        self.shortest == usize::MAX
    }

    /// `text` with every stretch that holds a value, in any of the forms the module
    /// documentation lists, replaced by [`MASK`]. The result holds no needle (so redacting it again changes nothing), and a
    /// text that holds none comes back unchanged.
    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(text).into_owned()
    }

    /// `value` with every string redacted as by [`redact`](Redactor::redact), object keys
    /// included, at any depth. A number or bool whose JSON text holds a needle (a numeric
    /// secret such as `123456`) becomes the string [`MASK`].
    ///
    /// Strings are redacted as they are, not as serialized JSON, so escaping cannot hide a
    /// value. When two keys of one object redact to the same text, the later one gets a
    /// suffix (`******** (2)`) rather than replace the first. Strings that change are wiped
    /// before they are dropped.
    pub fn redact_json(&self, mut value: Value) -> Value {
        if self.is_empty() {
            return value;
        }
        // A stack rather than recursion: a tree built in code can be deeper than the stack.
        let mut pending = vec![&mut value];
        while let Some(node) = pending.pop() {
            match node {
                Value::String(text) => self.redact_in_place(text),
                Value::Number(_) | Value::Bool(_) => {
                    if self.holds_needle(&node.to_string()) {
                        *node = Value::String(MASK.to_owned());
                    }
                }
                Value::Array(items) => pending.extend(items.iter_mut()),
                Value::Object(entries) => {
                    for (mut key, item) in std::mem::take(entries) {
                        self.redact_in_place(&mut key);
                        self.insert_entry(entries, key, item);
                    }
                    pending.extend(entries.values_mut());
                }
                Value::Null => {}
            }
        }
        value
    }

    fn redact_cow<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut current = Cow::Borrowed(text);
        for _ in 0..MAX_SEARCHES {
            let spans = self.find(&current);
            if spans.is_empty() {
                return current;
            }
            current = Cow::Owned(mask(&current, &spans));
        }
        Cow::Borrowed(MASK)
    }

    fn redact_in_place(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.redact_cow(text) {
            text.zeroize();
            *text = masked;
        }
    }

    fn holds_needle(&self, text: &str) -> bool {
        !self.find(text).is_empty()
    }

    /// Inserts an entry under its (redacted) key, or under `key (n)` when the key is taken.
    fn insert_entry(&self, entries: &mut Map<String, Value>, key: String, item: Value) {
        if entries.contains_key(&key) {
            // Redacting the candidate keeps the no-needle promise; with one more candidate
            // than there are entries, one is free unless masking swallowed the suffixes, and
            // then the later entry replaces the earlier one.
            for n in 2..=entries.len() + 2 {
                let candidate = self.redact(&format!("{key} ({n})"));
                if !entries.contains_key(&candidate) {
                    entries.insert(candidate, item);
                    return;
                }
            }
        }
        entries.insert(key, item);
    }

    /// The byte ranges of `text` that needles cover, in any reading, sorted, disjoint, not
    /// touching, on character boundaries.
    fn find(&self, text: &str) -> Vec<(usize, usize)> {
        let raw = text.as_bytes();
        let mut spans = Vec::new();
        if raw.len() < self.shortest {
            return spans;
        }
        let Automata { exact, hex } = self.automata();
        collect(exact, raw, None, &mut spans);
        collect(hex, raw, None, &mut spans);
        // A reading is decoded only when the text has what it decodes; without, it is the text.
        if raw.contains(&b'%') {
            let view = View::decode(raw, |rest| percent_token(rest, false));
            collect(exact, &view.bytes, Some(&view), &mut spans);
        }
        if raw.contains(&b'+') {
            let view = View::decode(raw, |rest| percent_token(rest, true));
            collect(exact, &view.bytes, Some(&view), &mut spans);
        }
        if raw.contains(&b'\\') {
            let view = View::decode(raw, escape_token);
            collect(exact, &view.bytes, Some(&view), &mut spans);
        }
        merge(text, spans)
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("units", &self.units.len())
            .finish()
    }
}

/// Whether a value (or line) is redacted at all.
fn is_needle(unit: &str) -> bool {
    unit.chars().count() >= MIN_REDACTED_LEN
        && !unit.chars().all(char::is_whitespace)
        && !unit.chars().all(|c| c == '*')
}

/// Pushes the base64 needles of `unit`. For each alphabet and each alignment `k` (the value
/// starting `k` bytes into a 3-byte group), with the value as bytes `k..k + n` of the encoded
/// data and character `j` carrying bits `6j..6j + 6`:
///
/// - inner: characters `ceil(8k / 6)..floor(8(k + n) / 6)`, made only of the value's bits,
///   the same whatever surrounds it;
/// - tail: from `ceil(8k / 6)` to the end, without and with padding: the value ending the
///   encoded data, its last (partial) character zero-filled as encoders do.
fn push_base64(unit: &[u8], needles: &mut Vec<Zeroizing<Vec<u8>>>) {
    for k in 0..3 {
        let mut shifted = Zeroizing::new(Vec::with_capacity(k + unit.len()));
        shifted.resize(k, 0);
        shifted.extend_from_slice(unit);
        let first = (8 * k).div_ceil(6);
        let inner_end = 8 * shifted.len() / 6;
        for engine in [&STANDARD, &URL_SAFE] {
            // Sized up front, so the encoder never reallocates and leaves a copy behind.
            let mut encoded = Zeroizing::new(String::with_capacity(4 * shifted.len().div_ceil(3)));
            engine.encode_string(&shifted[..], &mut encoded);
            let encoded = encoded.as_bytes();
            let padding = encoded.iter().rev().take_while(|&&c| c == b'=').count();
            for end in [inner_end, encoded.len() - padding, encoded.len()] {
                needles.push(Zeroizing::new(encoded[first..end].to_vec()));
            }
        }
    }
}

fn hex_lower(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = Zeroizing::new(Vec::with_capacity(2 * bytes.len()));
    for &byte in bytes {
        hex.push(DIGITS[usize::from(byte >> 4)]);
        hex.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    hex
}

/// Adds to `spans` the byte ranges of the text that `automaton` finds in `haystack`: the text
/// itself, or a decoded reading of it (`view`), whose matches are mapped back to the text.
fn collect(
    automaton: &Automaton,
    haystack: &[u8],
    view: Option<&View>,
    spans: &mut Vec<(usize, usize)>,
) {
    let base = spans.len();
    automaton.scan(haystack, |start, end| {
        let (mut start, mut end) = match view {
            Some(view) => view.raw_span(start, end),
            None => (start, end),
        };
        // Matches come in order of their end: fold in the ones this one overlaps or touches.
        while spans.len() > base {
            let (last_start, last_end) = spans[spans.len() - 1];
            if last_end < start {
                break;
            }
            start = start.min(last_start);
            end = end.max(last_end);
            spans.pop();
        }
        spans.push((start, end));
    });
}

/// Sorts the spans of all readings, widens each to character boundaries (so that slicing the
/// text at them cannot panic, whatever a decoded reading matched) and joins those that
/// overlap or touch.
fn merge(text: &str, mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable_by_key(|&(start, _)| start);
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (mut start, mut end) in spans {
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// `text` with each span replaced by [`MASK`]; the spans come from [`merge`], so they are
/// sorted, disjoint and on character boundaries, and the slicing cannot panic.
fn mask(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len() + MASK.len());
    let mut copied = 0;
    for &(start, end) in spans {
        out.push_str(&text[copied..start]);
        out.push_str(MASK);
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// A decoded reading of a text, and where each of its bytes came from.
struct View {
    bytes: Zeroizing<Vec<u8>>,
    /// For each decoded byte, where its token starts in the text; then the text's length.
    starts: Vec<usize>,
}

/// What one token of a text decodes to.
enum Decoded {
    Byte(u8),
    Char(char),
}

impl View {
    /// Decodes `text` token by token, left to right: `token` reads an escape at the start of
    /// what is left (its value and width), and anything it does not read is a literal byte.
    fn decode(text: &[u8], token: impl Fn(&[u8]) -> Option<(Decoded, usize)>) -> View {
        // No escape decodes to more bytes than it takes, so neither buffer grows (and leaves a
        // copy behind).
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        let mut starts = Vec::with_capacity(text.len() + 1);
        let mut at = 0;
        while let Some(&byte) = text.get(at) {
            let (decoded, width) = token(&text[at..]).unwrap_or((Decoded::Byte(byte), 1));
            match decoded {
                Decoded::Byte(b) => {
                    bytes.push(b);
                    starts.push(at);
                }
                Decoded::Char(c) => {
                    for &b in c.encode_utf8(&mut [0; 4]).as_bytes() {
                        bytes.push(b);
                        starts.push(at);
                    }
                }
            }
            at += width;
        }
        // `Redactor::find` skips a text shorter than the shortest needle on this promise.
        debug_assert!(bytes.len() <= text.len(), "a reading longer than its text");
        starts.push(text.len());
        View { bytes, starts }
    }

    /// The text's bytes behind decoded bytes `start..end`: whole tokens, from the one that
    /// holds `start` to the one that holds `end - 1`.
    fn raw_span(&self, start: usize, end: usize) -> (usize, usize) {
        let last_token = self.starts[end - 1];
        let mut next = end;
        // Bounded: a token decodes to at most 4 bytes, and the last entry is the text's length.
        while self.starts[next] == last_token {
            next += 1;
        }
        (self.starts[start], self.starts[next])
    }
}

/// A percent escape (`%4A`, either case), or with `plus_is_space` a `+` (as forms send a space).
fn percent_token(rest: &[u8], plus_is_space: bool) -> Option<(Decoded, usize)> {
    match rest.first()? {
        b'%' => {
            let byte = u8::try_from(hex_number(rest.get(1..3)?)?).ok()?;
            Some((Decoded::Byte(byte), 3))
        }
        b'+' if plus_is_space => Some((Decoded::Byte(b' '), 1)),
        _ => None,
    }
}

/// A backslash escape as JSON writes them (`\" \\ \/ \b \f \n \r \t \uXXXX`, a surrogate pair
/// as one character), plus `\'`, `\0`, `\xHH` (one byte, as C and Python bytes write it) and
/// `\u{H…}` (JavaScript, Rust). A lone surrogate is not decoded.
fn escape_token(rest: &[u8]) -> Option<(Decoded, usize)> {
    if rest.first() != Some(&b'\\') {
        return None;
    }
    let byte = |b: u8| Some((Decoded::Byte(b), 2));
    match *rest.get(1)? {
        b @ (b'"' | b'\\' | b'/' | b'\'') => byte(b),
        b'b' => byte(0x08),
        b'f' => byte(0x0c),
        b'n' => byte(b'\n'),
        b'r' => byte(b'\r'),
        b't' => byte(b'\t'),
        b'0' => byte(0),
        b'x' => Some((
            Decoded::Byte(u8::try_from(hex_number(rest.get(2..4)?)?).ok()?),
            4,
        )),
        b'u' if rest.get(2) == Some(&b'{') => {
            let digits = rest[3..]
                .iter()
                .take(7)
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if !(1..=6).contains(&digits) || rest.get(3 + digits) != Some(&b'}') {
                return None;
            }
            let c = char::from_u32(hex_number(&rest[3..3 + digits])?)?;
            Some((Decoded::Char(c), 4 + digits))
        }
        b'u' => {
            let unit = hex_number(rest.get(2..6)?)?;
            if !(0xd800..0xdc00).contains(&unit) {
                return Some((Decoded::Char(char::from_u32(unit)?), 6));
            }
            if rest.get(6..8) != Some(b"\\u") {
                return None;
            }
            let low = hex_number(rest.get(8..12)?)?;
            if !(0xdc00..0xe000).contains(&low) {
                return None;
            }
            let c = char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))?;
            Some((Decoded::Char(c), 12))
        }
        _ => None,
    }
}

/// The number that `digits` (at most 6 hex digits, either case) spell.
fn hex_number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| {
        let value = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u32::from(value))
    })
}

/// Needles as an Aho–Corasick automaton that reports, at each byte of a text, the longest
/// needle ending there: enough to mask the union of all matches, in time linear in the text
/// however many needles match at one place (a state knows its longest match; nothing walks a
/// list of matches).
///
/// A trie of the needles, one state per distinct prefix, with for each state the state of
/// the longest proper suffix of its path that is also a path (`fail`). State 0 is the root.
/// Its arrays are wiped on drop, as the [`Redactor`]'s own copy of the needles is.
struct Automaton {
    /// Whether text bytes are folded to ASCII lower case before they are matched.
    fold_case: bool,
    /// How many distinct needles it holds.
    needles: usize,
    /// The root's transition on every byte (0: stay at the root).
    root: Zeroizing<Vec<u32>>,
    /// State `s` goes on `labels[k]` to `targets[k]` for `k` in `edges[s]..edges[s + 1]`,
    /// sorted by label.
    edges: Zeroizing<Vec<u32>>,
    labels: Zeroizing<Vec<u8>>,
    targets: Zeroizing<Vec<u32>>,
    fail: Zeroizing<Vec<u32>>,
    /// The length of the longest needle that ends state `s`'s path, 0 if none does.
    longest: Zeroizing<Vec<u32>>,
}

impl Automaton {
    fn new(mut needles: Vec<Zeroizing<Vec<u8>>>, fold_case: bool) -> Automaton {
        if fold_case {
            for needle in &mut needles {
                needle.make_ascii_lowercase();
            }
        }
        needles.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
        needles.dedup();

        // The trie, its states numbered as the sorted needles create them, so that each
        // state's children come in label order. State s > 0 is entered from parent[s] on
        // label[s]. Every buffer is sized up front (at most one state per needle byte), so
        // none reallocates and leaves a copy behind.
        let capacity = 1 + needles.iter().map(|n| n.len()).sum::<usize>();
        let mut parent = Zeroizing::new(Vec::with_capacity(capacity));
        let mut label = Zeroizing::new(Vec::with_capacity(capacity));
        let mut depth = Zeroizing::new(Vec::with_capacity(capacity));
        let mut longest = Zeroizing::new(Vec::with_capacity(capacity));
        parent.push(0u32);
        label.push(0u8);
        depth.push(0u32);
        longest.push(0u32);
        // The states of the previous needle's prefixes, root first.
        let mut path = vec![0u32];
        let mut previous: &[u8] = &[];
        for needle in &needles {
            let common = previous
                .iter()
                .zip(needle.iter())
                .take_while(|(a, b)| a == b)
                .count();
            path.truncate(common + 1);
            for &byte in &needle[common..] {
                let from = path[path.len() - 1];
                let from_depth = depth[from as usize];
                path.push(state_id(depth.len()));
                parent.push(from);
                label.push(byte);
                depth.push(from_depth + 1);
                longest.push(0);
            }
            let end = path[path.len() - 1] as usize;
            longest[end] = depth[end];
            previous = needle;
        }

        // The transitions, grouped by state (a counting sort by parent, which keeps label order).
        let states = depth.len();
        let mut edges = Zeroizing::new(vec![0u32; states + 1]);
        for &from in &parent[1..] {
            edges[from as usize + 1] += 1;
        }
        for s in 1..=states {
            edges[s] += edges[s - 1];
        }
        let mut next_slot = Zeroizing::new(edges[..states].to_vec());
        let mut labels = Zeroizing::new(vec![0u8; states - 1]);
        let mut targets = Zeroizing::new(vec![0u32; states - 1]);
        for (state, (&from, &byte)) in parent.iter().zip(label.iter()).enumerate().skip(1) {
            let slot = &mut next_slot[from as usize];
            labels[*slot as usize] = byte;
            targets[*slot as usize] = state_id(state);
            *slot += 1;
        }
        let mut root = Zeroizing::new(vec![0u32; 256]);
        for k in edges[0] as usize..edges[1] as usize {
            root[usize::from(labels[k])] = targets[k];
        }

        let mut automaton = Automaton {
            fold_case,
            needles: needles.len(),
            root,
            edges,
            labels,
            targets,
            fail: Zeroizing::new(vec![0u32; states]),
            longest,
        };
        automaton.link();
        automaton
    }

    /// Sets every state's `fail`, and its `longest` when it ends no needle of its own, in
    /// breadth-first order (a state's suffixes are shallower, so they are done before it).
    /// The root's children keep `fail` 0.
    fn link(&mut self) {
        let mut queue: VecDeque<u32> = self.targets[..self.edges[1] as usize]
            .iter()
            .copied()
            .collect();
        while let Some(state) = queue.pop_front() {
            let state = state as usize;
            for k in self.edges[state] as usize..self.edges[state + 1] as usize {
                let (byte, target) = (self.labels[k], self.targets[k] as usize);
                let fail = self.step(self.fail[state], byte);
                self.fail[target] = fail;
                if self.longest[target] == 0 {
                    self.longest[target] = self.longest[fail as usize];
                }
                queue.push_back(state_id(target));
            }
        }
    }

    /// The state after reading `byte` in `state`. Amortized O(1) over a text: each `fail`
    /// taken makes the path shorter, and each byte makes it at most one longer.
    fn step(&self, mut state: u32, byte: u8) -> u32 {
        loop {
            if state == 0 {
                return self.root[usize::from(byte)];
            }
            let s = state as usize;
            let (from, to) = (self.edges[s] as usize, self.edges[s + 1] as usize);
            if let Ok(k) = self.labels[from..to].binary_search(&byte) {
                return self.targets[from + k];
            }
            state = self.fail[s];
        }
    }

    /// Calls `found(start, end)` for the longest needle ending at each `end` of `haystack`.
    fn scan(&self, haystack: &[u8], mut found: impl FnMut(usize, usize)) {
        if self.needles == 0 {
            return;
        }
        let mut state = 0;
        for (at, &byte) in haystack.iter().enumerate() {
            let byte = if self.fold_case {
                byte.to_ascii_lowercase()
            } else {
                byte
            };
            state = self.step(state, byte);
            let longest = self.longest[state as usize] as usize;
            if longest != 0 {
                found(at + 1 - longest, at + 1);
            }
        }
    }
}

/// States are numbered in `u32`, which halves the automaton's memory against `usize`.
fn state_id(index: usize) -> u32 {
    // Invariant: there is at most one state per needle byte, and the needles are in memory
    // while the trie is built; 4 Gi needle bytes (from some 400 MB of values) would run out of
    // memory long before this fails.
    u32::try_from(index).expect("fewer than 2^32 automaton states")
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "hunter2-correct-horse";

    fn redactor(values: &[&str]) -> Redactor {
        Redactor::new(values.iter().copied())
    }

    // ---- verbatim, lengths, what is not a needle ----

    #[test]
    fn a_value_is_masked_wherever_it_appears() {
        let r = redactor(&[SECRET]);
        assert_eq!(
            r.redact("token=hunter2-correct-horse; again:hunter2-correct-horse."),
            "token=********; again:********."
        );
    }

    #[test]
    fn values_shorter_than_six_characters_are_left_alone() {
        let r = redactor(&["abcde", "ééééé"]);
        assert!(r.is_empty());
        assert_eq!(r.redact("abcde ééééé"), "abcde ééééé");
        // Characters are counted, not bytes: six two-byte characters are a needle.
        assert_eq!(redactor(&["éééééé"]).redact("<éééééé>"), "<********>");
        assert_eq!(redactor(&["abcdef"]).redact("<abcdef>"), "<********>");
    }

    #[test]
    fn values_of_only_whitespace_or_only_stars_are_not_needles() {
        let r = redactor(&["      ", "\t\t\t\t\t\t", "******", MASK, "***********"]);
        assert!(r.is_empty());
        let text = format!("a      b {MASK} ***********");
        assert_eq!(r.redact(&text), text);
    }

    #[test]
    fn a_text_without_needles_comes_back_unchanged() {
        let text = "nothing to see: 686f7273652d626174746572 %41 \\u0041 +++";
        assert_eq!(redactor(&[SECRET]).redact(text), text);
        assert_eq!(redactor(&[]).redact(text), text);
        assert!(redactor(&[]).is_empty());
    }

    #[test]
    fn automata_are_built_by_the_first_text_long_enough_to_hold_a_needle() {
        let r = redactor(&["abcdef"]);
        assert_eq!(r.shortest, 6);
        let short = json!({"ok": true, "n": 12345, "abcde": "abcde"});
        assert_eq!(r.redact_json(short.clone()), short);
        assert_eq!(r.redact("abcde"), "abcde");
        assert!(
            r.automata.get().is_none(),
            "built for texts too short to match"
        );
        assert_eq!(r.redact("abcdef"), MASK);
        assert!(r.automata.get().is_some());
        // The needle only in a decoded reading of a longer text.
        let r = redactor(&["abcdef"]);
        assert_eq!(r.redact("%61bcdef"), MASK);
        assert_eq!(redactor(&[]).shortest, usize::MAX);
    }

    /// The length bound `find` trusts: no form of a unit is shorter than the unit, for
    /// every length a unit can have near the minimum and every alignment and alphabet.
    #[test]
    fn the_shortest_needle_is_the_shortest_unit() {
        for n in MIN_REDACTED_LEN..64 {
            for fill in [0u8, b'a', 0xff] {
                let unit = Zeroizing::new(vec![fill; n]);
                let needles = Needles::of(std::slice::from_ref(&unit));
                let shortest = needles.exact.iter().chain(&needles.hex).map(|x| x.len());
                assert_eq!(shortest.min(), Some(n), "a unit of {n} bytes");
            }
        }
        let r = redactor(&["abcdefgh", "abcdef\nxyz\n123456789"]);
        let needles = Needles::of(&r.units);
        let shortest = needles
            .exact
            .iter()
            .chain(&needles.hex)
            .map(|x| x.len())
            .min();
        assert_eq!(shortest, Some(r.shortest));
        assert_eq!(r.shortest, 6);
    }

    #[test]
    fn debug_shows_only_how_many_units() {
        let r = redactor(&[SECRET]);
        let shown = format!("{r:?}");
        assert_eq!(shown, "Redactor { units: 1 }");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    // ---- base64 ----

    /// Three values whose lengths cover the three remainders mod 3, with bytes whose
    /// standard encoding has `+` and `/` (so the URL-safe form differs).
    const B64_VALUES: [&str; 3] = ["sk->>>???~~~ok", "sk->>>???~~~ok!", "sk->>>???~~~ok!!"];

    #[test]
    fn base64_of_a_whole_value_is_masked_with_its_padding() {
        for value in B64_VALUES {
            let r = redactor(&[value]);
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                let encoded = engine.encode(value);
                assert_eq!(
                    r.redact(&format!("x {encoded} y")),
                    "x ******** y",
                    "{encoded}"
                );
            }
        }
    }

    /// What stays of a base64 string with `value` at byte `prefix.len()`: the characters
    /// before the first made only of the value's bits, and from the first made partly of
    /// what follows it.
    fn expected_base64_redaction(encoded: &str, prefix: usize, value: usize) -> String {
        let first = (8 * prefix).div_ceil(6);
        let end = 8 * (prefix + value) / 6;
        format!("{}{MASK}{}", &encoded[..first], &encoded[end..])
    }

    #[test]
    fn base64_inside_a_longer_string_is_masked_at_every_alignment() {
        for value in B64_VALUES {
            let r = redactor(&[value]);
            // Prefixes of 3, 4 and 5 bytes put the value at alignments 0, 1 and 2.
            for prefix in [
                &b"\x01\x02\x03"[..],
                b"\x01\x02\x03\x04",
                b"\x01\x02\x03\x04\x05",
            ] {
                let data = [prefix, value.as_bytes(), b"\xfe\xff-tail"].concat();
                for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                    let encoded = engine.encode(&data);
                    assert_eq!(
                        r.redact(&encoded),
                        expected_base64_redaction(&encoded, prefix.len(), value.len()),
                        "{value} at {} in {encoded}",
                        prefix.len()
                    );
                }
            }
        }
    }

    #[test]
    fn base64_ending_a_longer_string_is_masked_to_its_end() {
        for value in B64_VALUES {
            let r = redactor(&[value]);
            for prefix in [
                &b"\x01\x02\x03"[..],
                b"\x01\x02\x03\x04",
                b"\x01\x02\x03\x04\x05",
            ] {
                let data = [prefix, value.as_bytes()].concat();
                for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                    let encoded = engine.encode(&data);
                    let first = (8 * prefix.len()).div_ceil(6);
                    assert_eq!(r.redact(&encoded), format!("{}{MASK}", &encoded[..first]));
                }
            }
        }
    }

    // ---- hex ----

    #[test]
    fn hex_in_any_letter_case_is_masked() {
        let r = redactor(&[SECRET]);
        let lower = hex_string(SECRET.as_bytes());
        let upper = lower.to_ascii_uppercase();
        let mixed: String = lower
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 3 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        for hex in [lower, upper, mixed] {
            assert_eq!(r.redact(&format!("0x{hex}!")), "0x********!", "{hex}");
        }
    }

    // ---- percent-encoding ----

    #[test]
    fn percent_encoding_is_masked_whichever_characters_are_escaped() {
        let value = "p@ss word/?&=+ü%-42";
        let r = redactor(&[value]);
        let every_byte_upper: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
        let every_byte_lower = every_byte_upper.to_ascii_lowercase();
        let encodings = [
            every_byte_upper,
            every_byte_lower,
            // encodeURIComponent
            "p%40ss%20word%2F%3F%26%3D%2B%C3%BC%25-42".to_owned(),
            // a form: space as `+`, `+` escaped
            "p%40ss+word%2F%3F%26%3D%2B%C3%BC%25-42".to_owned(),
            // escapes in mixed case, `+` left alone, ü left alone (an IRI)
            "p%40ss%20word%2f?%26%3d+ü%25-42".to_owned(),
        ];
        for encoded in encodings {
            assert_eq!(
                r.redact(&format!("q={encoded}&x=1")),
                "q=********&x=1",
                "{encoded}"
            );
        }
    }

    #[test]
    fn base64_in_a_url_is_masked_through_its_escapes() {
        let value = B64_VALUES[0];
        let escaped = STANDARD
            .encode(value)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(
            redactor(&[value]).redact(&format!("https://x/?t={escaped}")),
            "https://x/?t=********"
        );
    }

    // ---- lines ----

    #[test]
    fn each_line_of_a_multi_line_value_is_masked_on_its_own() {
        let value = "-----BEGIN KEY-----\r\nMIIBOgIBAAJBAKj34GkxFhD9\r\nabc\r\n-----END KEY-----\n";
        let r = redactor(&[value]);
        assert_eq!(
            r.redact("line 2 is MIIBOgIBAAJBAKj34GkxFhD9."),
            "line 2 is ********."
        );
        assert_eq!(r.redact("-----END KEY-----"), MASK);
        // A line shorter than six characters is left alone.
        assert_eq!(r.redact("abc"), "abc");
        // The whole value is one mask, and so is the value with other line endings.
        assert_eq!(r.redact(&format!("[{value}]")), "[********]");
        assert_eq!(
            r.redact(&format!("[{}]", value.replace("\r\n", "\n"))),
            "[********\n********\nabc\n********\n]"
        );
    }

    // ---- unicode and escapes ----

    #[test]
    fn unicode_values_are_masked_in_every_form() {
        let value = "pässwörd-🔑-秘密";
        let r = redactor(&[value]);
        let percent: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
        let forms = [
            value.to_owned(),
            STANDARD.encode(value),
            URL_SAFE_NO_PAD.encode(value),
            hex_string(value.as_bytes()),
            percent,
            json_ascii(value, false),
            json_ascii(value, true),
            "p\\u{e4}sswörd-\\u{1F511}-秘密".to_owned(),
        ];
        for form in forms {
            assert_eq!(r.redact(&format!("<{form}>")), "<********>", "{form}");
        }
    }

    #[test]
    fn backslash_escaped_values_are_masked() {
        let value = "pa\"ss\\wo/rd\n\t'é'\u{7}";
        let r = redactor(&[value]);
        let forms = [
            (serde_json::to_string(value).unwrap(), "\"********\""),
            (json_ascii(value, false), MASK),
            (format!("{value:?}"), "\"********\""),
            // Python bytes: `b'pa"ss\\wo/rd\n\t\'\xc3\xa9\'\x07'`
            (
                "b'pa\"ss\\\\wo/rd\\n\\t\\'\\xc3\\xa9\\'\\x07'".to_owned(),
                "b'********'",
            ),
        ];
        for (form, masked) in forms {
            assert_eq!(
                r.redact(&format!("log: {form}")),
                format!("log: {masked}"),
                "{form}"
            );
        }
        let json_line = serde_json::to_string(&json!({ "password": value })).unwrap();
        assert_eq!(r.redact(&json_line), "{\"password\":\"********\"}");
    }

    // ---- overlaps, masks that make needles, scale ----

    #[test]
    fn overlapping_and_touching_needles_are_masked_as_one_stretch() {
        let r = redactor(&["abcdefgh", "fghijklm", "zyxwvu"]);
        assert_eq!(r.redact("<abcdefghijklm>"), "<********>");
        assert_eq!(r.redact("<abcdefghzyxwvu>"), "<********>");
        assert_eq!(r.redact("<abcdefgh zyxwvu>"), "<******** ********>");
        // Found by different automata (verbatim, hex), still one stretch.
        let hex = hex_string(b"zyxwvu");
        assert_eq!(r.redact(&format!("<abcdefgh{hex}>")), "<********>");
    }

    #[test]
    fn a_needle_inside_the_start_of_a_longer_one_is_found() {
        // Reading "xabcdef" follows the longer needle's path; "abcdef" ends inside it.
        let r = redactor(&["xabcdefgh", "abcdef"]);
        assert_eq!(r.redact("xabcdef!"), "x********!");
        assert_eq!(r.redact("xabcdefgh!"), "********!");
    }

    #[test]
    fn a_needle_that_masking_completes_is_masked_too() {
        let r = redactor(&["SECRETX", "*******a"]);
        let out = r.redact("SECRETXa!");
        assert_eq!(out, "*********!");
        assert_eq!(r.redact(&out), out);
    }

    #[test]
    fn masking_that_keeps_completing_needles_masks_the_whole_text() {
        let stars: Vec<String> = ('a'..='j').map(|c| format!("*******{c}")).collect();
        let mut values: Vec<&str> = stars.iter().map(String::as_str).collect();
        values.push("SECRETX");
        assert_eq!(redactor(&values).redact("SECRETXabcdefghij and more"), MASK);
    }

    #[test]
    fn a_mebibyte_of_overlapping_matches_is_one_mask() {
        let values: Vec<String> = (6..300).map(|n| "a".repeat(n)).collect();
        let r = Redactor::new(values.iter().map(String::as_str));
        assert_eq!(r.redact(&"a".repeat(1 << 20)), MASK);
        let sparse = format!(
            "{}{}{}",
            "x".repeat(1 << 19),
            values[10],
            "y".repeat(1 << 19)
        );
        let out = r.redact(&sparse);
        assert_eq!(out.len(), (1 << 20) + MASK.len());
    }

    // ---- JSON ----

    #[test]
    fn json_keys_strings_and_numbers_are_redacted_at_any_depth() {
        let r = redactor(&[SECRET, "123456", "987654.5"]);
        let out = r.redact_json(json!({
            "hunter2-correct-horse": "x",
            "list": ["pw=hunter2-correct-horse", 123456, 1234567, 12345, true, null],
            "nested": { "deeper": [{ "n": 987654.5, "s": "a \"hunter2-correct-horse\"" }] },
        }));
        assert_eq!(
            out,
            json!({
                "********": "x",
                "list": ["pw=********", "********", "********", 12345, true, null],
                "nested": { "deeper": [{ "n": "********", "s": "a \"********\"" }] },
            })
        );
    }

    #[test]
    fn json_strings_are_matched_as_they_are_not_as_escaped() {
        let value = "pa\"ss\\word";
        let out =
            redactor(&[value]).redact_json(json!({ "a": value, "b": [format!("x{value}y")] }));
        assert_eq!(out, json!({ "a": MASK, "b": ["x********y"] }));
    }

    #[test]
    fn json_keys_that_redact_alike_are_all_kept() {
        let r = redactor(&["first-secret", "second-secret"]);
        let out = r.redact_json(json!({ "first-secret": 1, "second-secret": 2, "x": 3 }));
        let Value::Object(entries) = out else {
            panic!("an object stays an object")
        };
        let mut values: Vec<i64> = entries.values().filter_map(Value::as_i64).collect();
        values.sort_unstable();
        assert_eq!(values, [1, 2, 3]);
        assert!(entries.contains_key(MASK) && entries.contains_key("******** (2)"));
    }

    #[test]
    fn json_without_needles_comes_back_unchanged() {
        let value = json!({ "a": [1, 2.5, "text", { "b": null, "c": false }] });
        assert_eq!(redactor(&[SECRET]).redact_json(value.clone()), value);
    }

    // ---- helpers shared with the properties ----

    fn hex_string(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// JSON as Python's `json.dumps` writes it: non-ASCII as `\uXXXX` (surrogate pairs
    /// beyond the BMP), `/` escaped too (as PHP does).
    fn json_ascii(value: &str, upper: bool) -> String {
        let mut out = String::new();
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' => out.push_str("\\/"),
                ' '..='~' => out.push(c),
                _ => {
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        if upper {
                            write!(out, "\\u{unit:04X}").unwrap();
                        } else {
                            write!(out, "\\u{unit:04x}").unwrap();
                        }
                    }
                }
            }
        }
        out
    }

    /// Percent-encoding with `choice` deciding, per character, whether it is escaped and in
    /// which case; `%` is always escaped (as every encoder does), and in a form a space is `+`
    /// and `+` is escaped.
    fn percent_encode(value: &str, choice: u64, form: bool) -> String {
        let mut out = String::new();
        for (i, c) in value.chars().enumerate() {
            let bit = |n: usize| (choice >> ((2 * i + n) % 64)) & 1 == 1;
            if form && c == ' ' {
                out.push('+');
            } else if c == '%' || (form && c == '+') || bit(0) {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    if bit(1) {
                        write!(out, "%{b:02X}").unwrap();
                    } else {
                        write!(out, "%{b:02x}").unwrap();
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Every form a value is promised to be caught in (base64 inside a longer string has a
    /// property of its own), and whether it is caught through a decoded reading.
    fn encodings(value: &str, choice: u64) -> Vec<(&'static str, String, bool)> {
        let lower = hex_string(value.as_bytes());
        let mixed: String = lower
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if (choice >> (i % 64)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        vec![
            ("verbatim", value.to_owned(), false),
            ("hex", lower.clone(), false),
            ("HEX", lower.to_ascii_uppercase(), false),
            ("hEx", mixed, false),
            ("base64", STANDARD.encode(value), false),
            ("base64 unpadded", STANDARD_NO_PAD.encode(value), false),
            ("base64url", URL_SAFE.encode(value), false),
            ("base64url unpadded", URL_SAFE_NO_PAD.encode(value), false),
            (
                "percent, every byte",
                percent_encode(value, u64::MAX, false),
                true,
            ),
            ("percent, some", percent_encode(value, choice, false), true),
            ("form", percent_encode(value, choice, true), true),
            ("json", serde_json::to_string(value).unwrap(), true),
            ("json ascii", json_ascii(value, choice & 1 == 1), true),
            ("rust debug", format!("{value:?}"), true),
        ]
    }

    /// `before` cut at any `%` or `\` among its last 12 characters (the longest escape): a
    /// stray escape introducer right before an encoded value can make the decoder read the
    /// value out of step, a documented limit.
    fn without_escape_tail(mut before: &str) -> &str {
        loop {
            let tail = before.char_indices().rev().nth(11).map_or(0, |(i, _)| i);
            match before[tail..].find(['%', '\\']) {
                Some(i) => before = &before[..tail + i],
                None => return before,
            }
        }
    }

    /// Strings of arbitrary characters, or of ASCII with its control characters.
    fn string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        prop_oneof![
            vec(any::<char>(), len.clone()).prop_map(|c| c.into_iter().collect::<String>()),
            vec(0u8..0x80, len).prop_map(|b| b.into_iter().map(char::from).collect::<String>()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        string(6..24).prop_filter("a value that is redacted", |v: &String| is_needle(v))
    }

    /// Text around a value: arbitrary, or dense in stars, escape introducers and hex digits.
    fn surrounding() -> impl Strategy<Value = String> {
        prop_oneof![string(0..24), "[*%+\\\\a-fA-F0-9 ]{0,24}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_form_of_a_value_is_masked_wherever_it_sits(
            value in value(),
            before in surrounding(),
            after in surrounding(),
            choice in any::<u64>(),
        ) {
            let r = Redactor::new([value.as_str()]);
            for (form, encoded, decoded) in encodings(&value, choice) {
                let before = if decoded { without_escape_tail(&before) } else { &before };
                let out = r.redact(&format!("{before}{encoded}{after}"));
                prop_assert!(!out.contains(&encoded), "{}: {:?} in {:?}", form, encoded, out);
            }
        }

        #[test]
        fn base64_inside_a_longer_string_loses_what_only_the_value_makes(
            value in value(),
            prefix in vec(any::<u8>(), 0..8),
            suffix in vec(any::<u8>(), 0..8),
            before in surrounding(),
            url_safe in any::<bool>(),
            padded in any::<bool>(),
        ) {
            let data = [&prefix[..], value.as_bytes(), &suffix[..]].concat();
            let engine = match (url_safe, padded) {
                (false, true) => STANDARD,
                (false, false) => STANDARD_NO_PAD,
                (true, true) => URL_SAFE,
                (true, false) => URL_SAFE_NO_PAD,
            };
            let encoded = engine.encode(&data);
            let stable = &encoded[(8 * prefix.len()).div_ceil(6)..8 * (prefix.len() + value.len()) / 6];
            let out = Redactor::new([value.as_str()]).redact(&format!("{before}{encoded}"));
            prop_assert!(!out.contains(stable), "{:?} in {:?}", stable, out);
        }

        #[test]
        fn each_line_of_a_multi_line_value_is_masked(
            lines in vec("[^\r\n]{0,12}", 2..5),
            crlf in any::<bool>(),
            before in surrounding(),
            after in surrounding(),
        ) {
            let value = lines.join(if crlf { "\r\n" } else { "\n" });
            let r = Redactor::new([value.as_str()]);
            for line in lines.iter().filter(|l| is_needle(l)) {
                let out = r.redact(&format!("{before}{line}{after}"));
                prop_assert!(!out.contains(line.as_str()), "{:?} in {:?}", line, out);
            }
        }

        #[test]
        fn a_text_without_any_needle_is_never_changed(
            (head, alnum, tail) in ("[^\r\n]{0,8}", "[A-Za-z0-9]", "[^\r\n]{5,10}"),
            text in "[^A-Za-z0-9%+\\\\/=_-]{0,64}",
        ) {
            // The value has a letter or digit, the text has none, nor any character that
            // base64 or hex are made of, nor any escape introducer.
            let value = format!("{head}{alnum}{tail}");
            prop_assert_eq!(Redactor::new([value.as_str()]).redact(&text), text);
        }

        #[test]
        fn redaction_is_idempotent(
            values in vec(value(), 1..3),
            before in surrounding(),
            after in surrounding(),
            form in 0usize..14,
            choice in any::<u64>(),
        ) {
            let r = Redactor::new(values.iter().map(String::as_str));
            let (_, encoded, _) = encodings(&values[0], choice).swap_remove(form);
            for text in [format!("{before}{encoded}{after}"), format!("{before}{after}")] {
                let once = r.redact(&text);
                prop_assert_eq!(r.redact(&once), once);
            }
        }

        #[test]
        fn no_string_or_key_of_redacted_json_holds_the_value(
            value in value(),
            before in surrounding(),
            after in surrounding(),
        ) {
            let r = Redactor::new([value.as_str()]);
            let out = r.redact_json(json!({
                format!("{before}{value}"): [format!("{value}{after}"), { "k": value.clone() }],
                "plain": before.clone(),
            }));
            let mut pending = vec![&out];
            while let Some(node) = pending.pop() {
                match node {
                    Value::String(s) => prop_assert!(!s.contains(value.as_str()), "{:?}", s),
                    Value::Array(items) => pending.extend(items),
                    Value::Object(entries) => {
                        for (key, item) in entries {
                            prop_assert!(!key.contains(value.as_str()), "{:?}", key);
                            pending.push(item);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
