//! Reading secret material (a value on stdin, a dotenv file, admin.key) into buffers that
//! are wiped when dropped.

use std::io::{ErrorKind, IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// A secret value from stdin, all of it, minus one trailing `\n` or `\r\n` (the one
/// `echo` or a final Enter adds). Nothing at all on stdin is refused: a forgotten value (a
/// script with stdin at `/dev/null`) must not silently become an empty secret; an empty
/// value is set with an explicit empty line (`echo "" | …`).
pub fn value_from_stdin(name: &str) -> Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the value of {name}, then press Ctrl-D on an empty line.");
    }
    let bytes = read_all(stdin.lock()).context("cannot read the value from stdin")?;
    if bytes.is_empty() {
        anyhow::bail!(
            "no value: give it as an argument or pipe it on stdin (stdin was empty; for an empty value, pipe an empty line)"
        );
    }
    let text = std::str::from_utf8(strip_one_newline(&bytes))
        .map_err(|_| anyhow!("the value on stdin is not UTF-8 text"))?;
    Ok(SecretString::from(text))
}

/// The whole content of `path` (`-`: stdin).
pub fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = if path == Path::new("-") {
        read_all(std::io::stdin().lock())
    } else {
        std::fs::File::open(path).and_then(read_all)
    };
    bytes.with_context(|| format!("cannot read {}", path.display()))
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
    fn exactly_one_trailing_newline_is_stripped() {
        assert_eq!(strip_one_newline(b"v\n"), b"v");
        assert_eq!(strip_one_newline(b"v\r\n"), b"v");
        assert_eq!(strip_one_newline(b"v\n\n"), b"v\n");
        assert_eq!(strip_one_newline(b"v"), b"v");
        assert_eq!(strip_one_newline(b"\n"), b"");
        assert_eq!(strip_one_newline(b""), b"");
    }

    #[test]
    fn read_all_reads_inputs_larger_than_its_buffer() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(&*read_all(&data[..]).unwrap(), &data);
        assert!(read_all(&b""[..]).unwrap().is_empty());
    }
}
