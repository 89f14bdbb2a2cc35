//! Where the keyring comes from: `COFFER_SECRET_KEYS`, `COFFER_SECRET_KEYS_FILE`,
//! `COFFER_MASTER_KEY`, first that is set wins; none set means dev mode.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use coffer_crypto::{CryptoError, Key, KeyVersion, Keyring};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The raw key settings, as the binary read them from its environment.
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
    /// The keyring file could not be read.
    #[error("cannot read COFFER_SECRET_KEYS_FILE {path}: {error}")]
    File {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
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

/// Builds the keyring from the first source that is set; `Ok(None)` means dev mode.
pub fn load_keyring(sources: &KeySources) -> Result<Option<Keyring>, KeyConfigError> {
    if let Some(json) = &sources.secret_keys {
        return parse_keyring_json("COFFER_SECRET_KEYS", json).map(Some);
    }
    if let Some(path) = &sources.secret_keys_file {
        let text = std::fs::read_to_string(path).map_err(|error| KeyConfigError::File {
            path: path.clone(),
            error,
        })?;
        return parse_keyring_json("COFFER_SECRET_KEYS_FILE", &SecretString::from(text)).map(Some);
    }
    if let Some(material) = &sources.master_key {
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
        let detail = format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        );
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
}
