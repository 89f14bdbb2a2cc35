//! Reading secret material (a value on stdin, a dotenv file, admin.key) into buffers that
//! are wiped when dropped.

use std::io::{ErrorKind, IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result};
use coffer_core::MAX_VALUE_BYTES;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::exit::usage;
use super::output::printable;

/// A secret value from stdin, all of it, minus one trailing `\n` or `\r\n` (the one
/// `echo` or a final Enter adds). Nothing at all on stdin is refused: a forgotten value (a
/// script with stdin at `/dev/null`) must not silently become an empty secret; an empty
/// value is set with an explicit empty line (`echo "" | …`). Reading stops just past
/// [`MAX_VALUE_BYTES`] (plus the newline): a larger input is refused, never held whole.
pub fn value_from_stdin(name: &str) -> Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the value of {name}, then press Ctrl-D on an empty line.");
    }
    let bytes = read_bounded(stdin.lock(), MAX_VALUE_BYTES + 2)
        .context("cannot read the value from stdin")?
        .ok_or_else(too_large)?;
    if bytes.is_empty() {
        return Err(usage(
            "no value: give it as an argument or pipe it on stdin (stdin was empty; for an empty value, pipe an empty line)",
        ));
    }
    let text = std::str::from_utf8(strip_one_newline(&bytes))
        .map_err(|_| usage("the value on stdin is not UTF-8 text"))?;
    check_value_size(text)?;
    Ok(SecretString::from(text))
}

/// Refuses a value over the server's limit before it is sent (the server would refuse it
/// too, but a large one first meets the 1 MiB body limit, whose error misleads).
pub fn check_value_size(value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(too_large());
    }
    Ok(())
}

/// JSON typed on the command line or piped in (`what`: "the value", "--data"). A usage
/// error says where the JSON breaks, never what it holds.
pub fn parse_json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        usage(format!(
            "{what} is not valid JSON (line {}, column {}); quote strings: '\"text\"'",
            e.line(),
            e.column()
        ))
    })
}

fn too_large() -> anyhow::Error {
    usage(format!(
        "the value is over the 64 KiB value limit ({MAX_VALUE_BYTES} bytes of UTF-8); nothing was sent"
    ))
}

/// Reads `input` to its end, or `None` as soon as it holds more than `max` bytes (the rest
/// is left unread).
pub fn read_bounded(input: impl Read, max: usize) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    // `take` one byte past the bound tells "exactly max" from "more".
    let bytes = read_all(input.take(max as u64 + 1))?;
    Ok((bytes.len() <= max).then_some(bytes))
}

/// The whole content of `path` (`-`: stdin).
pub fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    // An import travels in one request of at most 1 MiB of JSON: a bigger file can never
    // be sent, so reading stops just past that instead of taking whatever comes.
    let limit = coffer_api::MAX_BODY_BYTES as u64 + 1;
    let bytes = if path == Path::new("-") {
        read_all(std::io::stdin().lock().take(limit))
    } else {
        std::fs::File::open(path).and_then(|f| read_all(f.take(limit)))
    };
    let bytes = bytes.with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 >= limit {
        anyhow::bail!(
            "{} is larger than {} bytes, more than one import can carry: split it",
            path.display(),
            coffer_api::MAX_BODY_BYTES
        );
    }
    Ok(bytes)
}

/// A JSON or YAML document (`what`: "a function definition (triggers, secrets, …)") from
/// `path` (`-`: stdin): YAML for `.yaml`/`.yml`, JSON for `.json`, and otherwise JSON when
/// it starts with `{`, else YAML. It holds a request body with its camelCase keys; an
/// unknown key is an error, not a setting silently ignored.
///
/// The file may hold values to seal (an orchestration's encrypted parameters): it is read
/// into a wiped buffer, and a parse error names keys and positions but never quotes a
/// value (see [`without_values`]).
pub fn read_document<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let shown = path.display();
    let max = coffer_api::MAX_BODY_BYTES;
    let read = if path == Path::new("-") {
        read_bounded(std::io::stdin().lock(), max)
    } else {
        std::fs::File::open(path).and_then(|f| read_bounded(f, max))
    };
    let bytes = read
        .with_context(|| format!("cannot read {shown}"))?
        .ok_or_else(|| usage(format!("{shown} is larger than {max} bytes: not {what}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| usage(format!("{shown} is not UTF-8")))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let yaml = match extension.as_deref() {
        Some("yaml" | "yml") => true,
        Some("json") => false,
        _ => !text.trim_start().starts_with('{'),
    };
    let parsed = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        usage(format!(
            "{shown} is not {what} ({}): {}",
            if yaml { "YAML" } else { "JSON" },
            printable(&without_values(&e))
        ))
    })
}

/// serde's message without the input value it quotes (`invalid type: string "s3cr3t",
/// expected a boolean` becomes `invalid type, expected a boolean`); the names of keys and
/// variants the schema expects, and positions, stay.
pub fn without_values(message: &str) -> String {
    const QUOTING: [&str; 3] = ["invalid type: ", "invalid value: ", "unknown variant "];
    let mut shown = String::new();
    let mut rest = message;
    while let Some((at, marker)) = QUOTING
        .iter()
        .filter_map(|m| rest.find(m).map(|at| (at, *m)))
        .min()
    {
        shown.push_str(&rest[..at]);
        shown.push_str(marker.trim_end().trim_end_matches(':'));
        shown.push_str(" (value not shown)");
        let after = &rest[at + marker.len()..];
        // The value ends where serde says what it expected, or else at the position.
        let end = after
            .find(", expected")
            .or_else(|| after.find(" at line "))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    shown.push_str(rest);
    shown
}

/// Reads `input` to its end. The buffer grows by copying into a fresh wiped-on-drop buffer,
/// so no stale partial copy is left in freed memory.
pub fn read_all(mut input: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    const CHUNK: usize = 8 * 1024;
    let mut buf = Zeroizing::new(Vec::with_capacity(CHUNK));
    let mut chunk = Zeroizing::new([0u8; CHUNK]);
    loop {
        let n = match input.read(&mut chunk[..]) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.len() + n > buf.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((buf.len() + n).max(2 * buf.capacity())));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn strip_one_newline(bytes: &[u8]) -> &[u8] {
    bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_larger_than_one_import_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.env");
        std::fs::write(&big, vec![b'#'; 3 * coffer_api::MAX_BODY_BYTES]).unwrap();
        let err = read_file(&big).unwrap_err().to_string();
        assert!(err.contains("split it"), "{err}");
        let fits = dir.path().join("fits.env");
        std::fs::write(&fits, vec![b'#'; coffer_api::MAX_BODY_BYTES]).unwrap();
        assert_eq!(read_file(&fits).unwrap().len(), coffer_api::MAX_BODY_BYTES);
    }

    #[test]
    fn exactly_one_trailing_newline_is_stripped() {
        assert_eq!(strip_one_newline(b"v\n"), b"v");
        assert_eq!(strip_one_newline(b"v\r\n"), b"v");
        assert_eq!(strip_one_newline(b"v\n\n"), b"v\n");
        assert_eq!(strip_one_newline(b"v"), b"v");
        assert_eq!(strip_one_newline(b"\n"), b"");
        assert_eq!(strip_one_newline(b""), b"");
    }

    #[test]
    fn read_bounded_stops_past_the_bound() {
        let data = vec![7u8; 20_000];
        assert_eq!(
            read_bounded(&data[..], 20_000).unwrap().unwrap().len(),
            20_000
        );
        assert!(read_bounded(&data[..], 19_999).unwrap().is_none());
        let mut endless = std::io::repeat(1);
        assert!(read_bounded(&mut endless, 1000).unwrap().is_none());
    }

    #[test]
    fn values_over_64_kib_are_refused_naming_the_limit() {
        assert!(check_value_size(&"x".repeat(MAX_VALUE_BYTES)).is_ok());
        let e = check_value_size(&"x".repeat(MAX_VALUE_BYTES + 1)).unwrap_err();
        assert!(e.to_string().contains("64 KiB value limit"), "{e}");
    }

    #[test]
    fn parse_errors_never_quote_the_value_but_keep_names_and_positions() {
        let e = serde_json::from_str::<std::collections::BTreeMap<String, bool>>(
            r#"{"encrypt": "canary-Q7"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("canary-Q7"), "serde quotes it: {e}");
        let shown = without_values(&e);
        assert!(!shown.contains("canary"), "{shown}");
        assert!(
            shown.starts_with("invalid type (value not shown), expected a boolean at line 1"),
            "{shown}"
        );
        assert_eq!(
            without_values("unknown variant `canary-Q7`, expected `compute` or `delay`"),
            "unknown variant (value not shown), expected `compute` or `delay`"
        );
        assert_eq!(
            without_values("unknown field `timeout_ms`, expected `mode`"),
            "unknown field `timeout_ms`, expected `mode`"
        );
        assert_eq!(
            without_values("invalid value: string \"x\" at line 2 column 3"),
            "invalid value (value not shown) at line 2 column 3"
        );
    }

    #[test]
    fn read_all_reads_inputs_larger_than_its_buffer() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(&*read_all(&data[..]).unwrap(), &data);
        assert!(read_all(&b""[..]).unwrap().is_empty());
    }
}
