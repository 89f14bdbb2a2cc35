//! What the client prints: aligned tables and one-line confirmations for people, the
//! server's JSON for scripts. Everything goes to stdout through [`emit`]; errors go to
//! stderr from `main`.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

/// Writes `text` to stdout. A closed pipe (`coffer secret list | head -1`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// A count with its noun: "1 value", "3 values", "0 values".
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Pretty JSON with a final newline.
pub fn json(value: &Value) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    text.push('\n');
    Ok(text)
}

/// Columns padded to their widest cell and separated by two spaces; the last column is not
/// padded, so no line ends in spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            // Cells hold server text; `printable` keeps one character per character.
            text.push_str(&printable(cell));
            if i < last {
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
        }
        text.push('\n');
    }
    text
}

/// One record as `label  value` lines, the values aligned (`function show`, `runs show`);
/// a value that spans lines continues under its first line.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (label, value) in rows {
        let pad = width - label.chars().count() + 2;
        text.push_str(label);
        let mut lines = value.split('\n');
        let first = lines.next().unwrap_or_default();
        text.extend(std::iter::repeat_n(' ', pad));
        text.push_str(&printable(first));
        for line in lines {
            text.push('\n');
            text.extend(std::iter::repeat_n(' ', width + 2));
            text.push_str(&printable(line));
        }
        text.push('\n');
    }
    text
}

/// Server text shown in a terminal: control characters (escape sequences) become `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn table_columns_are_aligned_to_the_widest_cell() {
        let text = table(
            &["NAME", "REVISION", "UPDATED"],
            &[
                row(&["DATABASE_URL", "12", "2026-01-01T00:00:00.000Z"]),
                row(&["A", "1", "x"]),
            ],
        );
        assert_eq!(
            text,
            "NAME          REVISION  UPDATED\n\
             DATABASE_URL  12        2026-01-01T00:00:00.000Z\n\
             A             1         x\n"
        );
    }

    #[test]
    fn table_without_rows_is_just_the_header() {
        assert_eq!(table(&["ID", "NAME"], &[]), "ID  NAME\n");
    }

    #[test]
    fn table_width_counts_characters_not_bytes() {
        let text = table(&["N", "X"], &[row(&["é", "1"]), row(&["ab", "2"])]);
        assert_eq!(text, "N   X\né   1\nab  2\n");
    }

    #[test]
    fn fields_align_values_and_indent_continuation_lines() {
        let text = fields(&[
            ("id", "send-invoice".into()),
            ("output", "{\n  \"ok\": true\n}".into()),
        ]);
        assert_eq!(
            text,
            "id      send-invoice\noutput  {\n          \"ok\": true\n        }\n"
        );
    }

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(count(0, "value", "values"), "0 values");
        assert_eq!(count(1, "value", "values"), "1 value");
        assert_eq!(count(2, "value", "values"), "2 values");
    }

    #[test]
    fn printable_replaces_control_characters() {
        assert_eq!(printable("ok\u{1b}[31m\nred"), "ok?[31m?red");
    }

    #[test]
    fn json_is_pretty_with_a_final_newline() {
        let text = json(&serde_json::json!({"a": [1]})).unwrap();
        assert_eq!(text, "{\n  \"a\": [\n    1\n  ]\n}\n");
    }
}
