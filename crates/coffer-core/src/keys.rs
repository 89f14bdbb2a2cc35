//! Where the keyring comes from: `COFFER_SECRET_KEYS`, `COFFER_SECRET_KEYS_FILE`,
//! `COFFER_MASTER_KEY`, first that is set wins; none set means dev mode. An empty setting
//! counts as unset.
//!
//! Nothing here ever formats a configured value: not the key material, and not the keyring
//! file's path either, since a key pasted into `COFFER_SECRET_KEYS_FILE` by mistake would
//! otherwise be printed as "the path".

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use coffer_crypto::{CryptoError, Key, KeyVersion, Keyring};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The raw key settings, as the binary read them from its environment. An empty value (or
/// one of whitespace only) counts as unset.
#[derive(Default)]
pub struct KeySources {
    /// `COFFER_SECRET_KEYS`: the keyring JSON itself.
    pub secret_keys: Option<SecretString>,
    /// `COFFER_SECRET_KEYS_FILE`: a path to the keyring JSON.
    pub secret_keys_file: Option<PathBuf>,
    /// `COFFER_MASTER_KEY`: one key, version 1.
    pub master_key: Option<SecretString>,
}

/// Why the key settings were refused. Messages name the setting and the version, never the
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    /// The keyring JSON did not parse.
    #[error(
        "{source_name} is not a keyring: expected {{\"currentKeyVersion\": N, \"keys\": {{\"N\": \"<key>\"}}}} ({detail})"
    )]
    Malformed {
        /// The setting it came from.
        source_name: &'static str,
        /// Where parsing failed (position and category only).
        detail: String,
    },
    /// The keyring file could not be read. The path is not part of the error: it is a
    /// configured value that may be key material set in the wrong variable.
    #[error("cannot read the keyring file that COFFER_SECRET_KEYS_FILE names: {error}")]
    File {
        /// The I/O error (its text never includes the path).
        error: std::io::Error,
    },
    /// A key version label that is not a positive integer. The label itself is not shown:
    /// a keyring with label and key swapped would otherwise print the key.
    #[error(
        "{source_name}: a key version label of {chars} characters is not a positive integer without leading zeros (labels are \"1\", \"2\", ...)"
    )]
    BadVersion {
        /// The setting it came from.
        source_name: &'static str,
        /// The offending label's length in characters.
        chars: usize,
    },
    /// A key that is neither 64 hex chars nor a passphrase of 32+ characters.
    #[error("{source_name}: key version {version}: {error}")]
    BadKey {
        /// The setting it came from.
        source_name: &'static str,
        /// The version whose key was refused.
        version: u32,
        /// Why.
        error: CryptoError,
    },
    /// `currentKeyVersion` names a version the keyring lacks, or the ring is empty.
    #[error("{source_name}: currentKeyVersion {current} is not among the keys")]
    NoCurrent {
        /// The setting it came from.
        source_name: &'static str,
        /// The configured current version.
        current: u32,
    },
}

/// Something in the key settings the operator should fix, though start-up goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyWarning {
    /// More than one key setting is set: only the first is used.
    SeveralSources {
        /// The setting that is used.
        used: &'static str,
        /// The settings that are ignored.
        ignored: Vec<&'static str>,
    },
    /// Users other than the owner can access the keyring file.
    SharedKeyringFile {
        /// The file's permission bits.
        mode: u32,
    },
}

impl fmt::Display for KeyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyWarning::SeveralSources { used, ignored } => write!(
                f,
                "several key settings are set: {used} is used, {} ignored; unset the others",
                ignored.join(" and ")
            ),
            KeyWarning::SharedKeyringFile { mode } => write!(
                f,
                "the keyring file that COFFER_SECRET_KEYS_FILE names is accessible to other users (mode {mode:03o}); chmod 600 it"
            ),
        }
    }
}

impl KeySources {
    /// The names of the settings that are set, in order of precedence: the first is used.
    pub fn set_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.secret_keys().is_some() {
            names.push("COFFER_SECRET_KEYS");
        }
        if self.secret_keys_file().is_some() {
            names.push("COFFER_SECRET_KEYS_FILE");
        }
        if self.master_key().is_some() {
            names.push("COFFER_MASTER_KEY");
        }
        names
    }

    fn secret_keys(&self) -> Option<&SecretString> {
        non_blank(self.secret_keys.as_ref())
    }

    fn secret_keys_file(&self) -> Option<&Path> {
        let path = self.secret_keys_file.as_deref()?;
        (!path.as_os_str().is_empty()).then_some(path)
    }

    fn master_key(&self) -> Option<&SecretString> {
        non_blank(self.master_key.as_ref())
    }
}

fn non_blank(value: Option<&SecretString>) -> Option<&SecretString> {
    value.filter(|v| !v.expose_secret().trim().is_empty())
}

/// What to tell the operator about the key settings: several set (which one wins), a
/// keyring file that others can read. Never fails: a file that cannot be inspected here is
/// reported by [`load_keyring`].
pub fn key_warnings(sources: &KeySources) -> Vec<KeyWarning> {
    use std::os::unix::fs::PermissionsExt;
    let mut warnings = Vec::new();
    let names = sources.set_names();
    if let [used, ignored @ ..] = names.as_slice()
        && !ignored.is_empty()
    {
        warnings.push(KeyWarning::SeveralSources {
            used,
            ignored: ignored.to_vec(),
        });
    }
    if names.first() == Some(&"COFFER_SECRET_KEYS_FILE")
        && let Some(path) = sources.secret_keys_file()
        && let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warnings.push(KeyWarning::SharedKeyringFile {
            mode: meta.permissions().mode() & 0o777,
        });
    }
    warnings
}

/// Builds the keyring from the first source that is set; `Ok(None)` means dev mode.
pub fn load_keyring(sources: &KeySources) -> Result<Option<Keyring>, KeyConfigError> {
    if let Some(json) = sources.secret_keys() {
        return parse_keyring_json("COFFER_SECRET_KEYS", json).map(Some);
    }
    if let Some(path) = sources.secret_keys_file() {
        let text = std::fs::read_to_string(path).map_err(|error| KeyConfigError::File { error })?;
        return parse_keyring_json("COFFER_SECRET_KEYS_FILE", &SecretString::from(text)).map(Some);
    }
    if let Some(material) = sources.master_key() {
        let key = Key::from_material(material.expose_secret().trim()).map_err(|error| {
            KeyConfigError::BadKey {
                source_name: "COFFER_MASTER_KEY",
                version: 1,
                error,
            }
        })?;
        return Ok(Some(Keyring::single(key)));
    }
    Ok(None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeyringJson {
    current_key_version: u32,
    keys: HashMap<String, SecretString>,
}

fn parse_keyring_json(
    source_name: &'static str,
    json: &SecretString,
) -> Result<Keyring, KeyConfigError> {
    let parsed: KeyringJson = serde_json::from_str(json.expose_secret()).map_err(|e| {
        // serde's messages can quote the input; report only where and what kind of error.
        let what = match e.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong type or unknown field",
            serde_json::error::Category::Eof => "unexpected end",
        };
        let detail = format!("{what} at line {} column {}", e.line(), e.column());
        KeyConfigError::Malformed {
            source_name,
            detail,
        }
    })?;
    let mut keys = BTreeMap::new();
    for (label, material) in &parsed.keys {
        let version: KeyVersion = label.parse().map_err(|_| KeyConfigError::BadVersion {
            source_name,
            chars: label.chars().count(),
        })?;
        let key = Key::from_material(material.expose_secret().trim()).map_err(|error| {
            KeyConfigError::BadKey {
                source_name,
                version: version.get(),
                error,
            }
        })?;
        keys.insert(version, key);
    }
    let current =
        KeyVersion::new(parsed.current_key_version).map_err(|_| KeyConfigError::NoCurrent {
            source_name,
            current: parsed.current_key_version,
        })?;
    Keyring::new(current, keys).map_err(|_| KeyConfigError::NoCurrent {
        source_name,
        current: parsed.current_key_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn json(s: &str) -> KeySources {
        KeySources {
            secret_keys: Some(SecretString::from(s)),
            ..KeySources::default()
        }
    }

    #[test]
    fn nothing_set_means_dev_mode() {
        assert!(load_keyring(&KeySources::default()).unwrap().is_none());
    }

    #[test]
    fn master_key_is_version_one() {
        let src = KeySources {
            master_key: Some(HEX.into()),
            ..KeySources::default()
        };
        let ring = load_keyring(&src).unwrap().unwrap();
        assert_eq!(ring.current().get(), 1);
    }

    #[test]
    fn keyring_json_takes_precedence_and_names_the_current_version() {
        let mut src = json(&format!(
            r#"{{"currentKeyVersion": 2, "keys": {{"1": "{HEX}", "2": "a passphrase of at least thirty-two characters"}}}}"#
        ));
        src.master_key = Some(HEX.into());
        let ring = load_keyring(&src).unwrap().unwrap();
        assert_eq!(ring.current().get(), 2);
        assert_eq!(
            ring.versions().map(KeyVersion::get).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn short_keys_are_refused_without_echoing_them() {
        let src = json(r#"{"currentKeyVersion": 1, "keys": {"1": "tooshort-secret"}}"#);
        let msg = load_keyring(&src).unwrap_err().to_string();
        assert!(msg.contains("key version 1"), "{msg}");
        assert!(!msg.contains("tooshort-secret"), "{msg}");
    }

    #[test]
    fn a_key_in_the_label_slot_is_refused_without_echoing_it() {
        let swapped = json(&format!(
            r#"{{"currentKeyVersion": 1, "keys": {{"{HEX}": "1"}}}}"#
        ));
        let msg = load_keyring(&swapped).unwrap_err().to_string();
        assert!(!msg.contains(HEX), "{msg}");
        assert!(msg.contains("64 characters"), "{msg}");
        let padded = json(&format!(
            r#"{{"currentKeyVersion": 1, "keys": {{"01": "{HEX}"}}}}"#
        ));
        assert!(matches!(
            load_keyring(&padded),
            Err(KeyConfigError::BadVersion { chars: 2, .. })
        ));
    }

    #[test]
    fn malformed_json_is_refused_without_echoing_it() {
        for bad in [
            r#"{"currentKeyVersion": "hunter2-hunter2", "keys": {}}"#,
            r#"{"currentKeyVersion": 1, "keys": {"1": "x"}, "extra": "hunter2-hunter2"}"#,
            "hunter2-hunter2",
        ] {
            let msg = load_keyring(&json(bad)).unwrap_err().to_string();
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn current_version_must_exist_and_versions_must_be_positive() {
        let src = json(&format!(
            r#"{{"currentKeyVersion": 3, "keys": {{"1": "{HEX}"}}}}"#
        ));
        assert!(matches!(
            load_keyring(&src),
            Err(KeyConfigError::NoCurrent { current: 3, .. })
        ));
        let src = json(&format!(
            r#"{{"currentKeyVersion": 1, "keys": {{"0": "{HEX}"}}}}"#
        ));
        assert!(matches!(
            load_keyring(&src),
            Err(KeyConfigError::BadVersion { .. })
        ));
    }

    #[test]
    fn keyring_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(
            &path,
            format!(r#"{{"currentKeyVersion": 1, "keys": {{"1": "{HEX}"}}}}"#),
        )
        .unwrap();
        let src = KeySources {
            secret_keys_file: Some(path),
            ..KeySources::default()
        };
        assert!(load_keyring(&src).unwrap().is_some());
    }

    #[test]
    fn empty_settings_count_as_unset() {
        let blank = KeySources {
            secret_keys: Some("".into()),
            secret_keys_file: Some(PathBuf::new()),
            master_key: Some(" \n".into()),
        };
        assert!(load_keyring(&blank).unwrap().is_none(), "dev mode");
        assert!(blank.set_names().is_empty());
        let master_after_empty_json = KeySources {
            secret_keys: Some("".into()),
            master_key: Some(HEX.into()),
            ..KeySources::default()
        };
        assert!(load_keyring(&master_after_empty_json).unwrap().is_some());
        assert!(key_warnings(&master_after_empty_json).is_empty());
    }

    #[test]
    fn an_unreadable_keyring_file_is_named_by_its_variable_never_by_its_path() {
        // Key material pasted into the _FILE variable by mistake.
        let src = KeySources {
            secret_keys_file: Some(PathBuf::from(HEX)),
            ..KeySources::default()
        };
        let err = load_keyring(&src).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(&HEX[..16]), "{text}");
        }
        assert!(err.to_string().contains("COFFER_SECRET_KEYS_FILE"), "{err}");
    }

    #[test]
    fn malformed_json_says_what_went_wrong_in_words() {
        let msg = load_keyring(&json("{")).unwrap_err().to_string();
        assert!(msg.contains("unexpected end at line 1"), "{msg}");
        assert!(!msg.contains("Eof"), "{msg}");
    }

    #[test]
    fn several_settings_warn_naming_the_one_used() {
        let src = KeySources {
            secret_keys_file: Some(PathBuf::from("/nonexistent")),
            master_key: Some(HEX.into()),
            ..json("{}")
        };
        let warnings = key_warnings(&src);
        assert_eq!(
            warnings,
            [KeyWarning::SeveralSources {
                used: "COFFER_SECRET_KEYS",
                ignored: vec!["COFFER_SECRET_KEYS_FILE", "COFFER_MASTER_KEY"],
            }]
        );
        let text = warnings[0].to_string();
        assert!(text.contains("COFFER_SECRET_KEYS is used"), "{text}");
        assert!(!text.contains(HEX), "{text}");
    }

    #[test]
    fn a_keyring_file_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(
            &path,
            format!(r#"{{"currentKeyVersion": 1, "keys": {{"1": "{HEX}"}}}}"#),
        )
        .unwrap();
        let src = KeySources {
            secret_keys_file: Some(path.clone()),
            ..KeySources::default()
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(key_warnings(&src).is_empty());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            key_warnings(&src),
            [KeyWarning::SharedKeyringFile { mode: 0o644 }]
        );
        let text = key_warnings(&src)[0].to_string();
        assert!(
            text.contains("mode 644") && !text.contains("keys.json"),
            "{text}"
        );
    }
}
