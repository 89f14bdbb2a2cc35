//! Confirmation before a destructive command: asked on a terminal, `--yes` in scripts.
//! Without a terminal and without `--yes` the command is refused, so a script never
//! deletes by accident and never hangs waiting for an answer nobody will type.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};

use super::exit::usage;

/// How the user confirms.
pub enum Ask<'a> {
    /// Type this name back (for what cannot be undone at scale: an environment).
    TypeName(&'a str),
    /// Answer y/N.
    YesNo,
}

/// Asks before `action` (e.g. "delete secret X from prod"), unless `yes`.
pub fn confirm(action: &str, warning: &str, ask: Ask<'_>, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(usage(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes (-y) to confirm"
        )));
    }
    let prompt = match ask {
        Ask::TypeName(name) => format!("{warning}\nType {name} to confirm: "),
        Ask::YesNo => format!("{warning}\n{}? [y/N] ", capitalized(action)),
    };
    let mut stderr = std::io::stderr().lock();
    stderr
        .write_all(prompt.as_bytes())
        .and_then(|()| stderr.flush())
        .context("cannot ask for confirmation")?;
    drop(stderr);
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    let answer = answer.trim();
    let confirmed = match ask {
        Ask::TypeName(name) => answer == name,
        Ask::YesNo => matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"),
    };
    if !confirmed {
        bail!("not confirmed: did not {action}");
    }
    Ok(())
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_confirms_without_asking() {
        assert!(confirm("delete x", "", Ask::YesNo, true).is_ok());
    }

    #[test]
    fn prompts_start_with_a_capital() {
        assert_eq!(capitalized("delete secret A"), "Delete secret A");
        assert_eq!(capitalized(""), "");
    }
}
