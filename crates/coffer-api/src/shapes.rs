//! JSON shapes of requests and responses (camelCase, RFC 3339 UTC timestamps).

use coffer_core::{
    ApiKeyMeta, Environment, ImportResult, Imported, KeyStatus, Revision, RewrapReport, SecretMeta,
    Timestamp, ValueStatus,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

/// `2026-11-23T04:35:25.123Z`.
pub fn rfc3339(ts: Timestamp) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.millis()) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentJson {
    name: String,
    created_at: String,
}

impl From<&Environment> for EnvironmentJson {
    fn from(e: &Environment) -> Self {
        EnvironmentJson {
            name: e.name.to_string(),
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMetaJson {
    name: String,
    environment: String,
    revision: Revision,
    key_version: u32,
    status: &'static str,
    created_at: String,
    updated_at: String,
}

impl SecretMetaJson {
    pub fn new(m: &SecretMeta, status: ValueStatus) -> Self {
        SecretMetaJson {
            name: m.name.to_string(),
            environment: m.environment.to_string(),
            revision: m.revision,
            key_version: m.key_version,
            status: match status {
                ValueStatus::Ok => "ok",
                ValueStatus::Unreadable => "unreadable",
            },
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RewrapJson {
    rewrapped: u64,
    already_current: u64,
    unreadable: u64,
    updated_concurrently: u64,
    next_cursor: Option<String>,
}

impl RewrapJson {
    pub fn new(r: &RewrapReport, next_cursor: Option<String>) -> Self {
        RewrapJson {
            rewrapped: r.rewrapped,
            already_current: r.already_current,
            unreadable: r.unreadable,
            updated_concurrently: r.updated_concurrently,
            next_cursor,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatusJson {
    encryption: &'static str,
    current_key_version: Option<u32>,
    keys: Vec<KeyVersionJson>,
    plaintext_values: u64,
    unreadable_values: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyVersionJson {
    version: u32,
    current: bool,
    in_keyring: bool,
    values: u64,
    encryptions: u64,
}

impl From<&KeyStatus> for KeyStatusJson {
    fn from(k: &KeyStatus) -> Self {
        KeyStatusJson {
            encryption: if k.current.is_some() {
                "enabled"
            } else {
                "disabled"
            },
            current_key_version: k.current,
            keys: k
                .versions
                .iter()
                .map(|v| KeyVersionJson {
                    version: v.version,
                    current: v.current,
                    in_keyring: v.in_keyring,
                    values: v.values,
                    encryptions: v.encryptions,
                })
                .collect(),
            plaintext_values: k.plaintext_values,
            unreadable_values: k.unreadable_values,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyJson {
    id: String,
    name: String,
    role: &'static str,
    environment: Option<String>,
    /// Only in the response that creates the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    created_at: String,
}

impl From<&ApiKeyMeta> for ApiKeyJson {
    fn from(k: &ApiKeyMeta) -> Self {
        ApiKeyJson {
            id: k.id.to_string(),
            name: k.name.clone(),
            role: k.role.name(),
            environment: k.role.environment().map(ToString::to_string),
            key: None,
            created_at: rfc3339(k.created_at),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub role: String,
    pub environment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PutSecret {
    pub value: SecretString,
    pub expected_revision: Option<Revision>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSecrets {
    pub secrets: Vec<ImportEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportEntry {
    pub name: String,
    pub value: SecretString,
}

/// One secret of an import's answer: its metadata and what happened to it.
#[derive(Serialize)]
pub struct ImportedJson {
    #[serde(flatten)]
    meta: SecretMetaJson,
    result: &'static str,
}

impl From<&Imported> for ImportedJson {
    fn from(i: &Imported) -> Self {
        ImportedJson {
            meta: SecretMetaJson::new(&i.meta, ValueStatus::Ok),
            result: match i.result {
                ImportResult::Created => "created",
                ImportResult::Updated => "updated",
                ImportResult::Unchanged => "unchanged",
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevisionQuery {
    pub expected_revision: Option<Revision>,
}
