//! The management plane's shapes that `coffer-wire` does not hold yet: environments, secret
//! metadata, config entries and API keys, as `docs/API.md` documents them.
//!
//! Defined here, minimal and read-tolerant (unknown fields are ignored, so a newer server
//! does not break an older SDK), until they move into `coffer-wire` beside the runtime
//! shapes; their names and fields will stay.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// An environment: a namespace of secrets, config, functions and runs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Environment {
    /// Its name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A secret's metadata. The value is write-only: no answer carries it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SecretMeta {
    /// Its name, `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
    pub name: String,
    /// Its environment.
    pub environment: String,
    /// 1 when created, +1 per update.
    pub revision: u64,
    /// The key version its value is sealed under (`0`: stored unencrypted, dev mode).
    pub key_version: u32,
    /// Whether the value opens with the server's keys.
    pub status: SecretStatus,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its value last changed (RFC 3339).
    pub updated_at: String,
}

/// Whether a secret's value opens with the server's configured keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SecretStatus {
    /// It opens.
    Ok,
    /// It does not (its key version left the keyring); writing the secret again repairs it.
    Unreadable,
    /// A status this SDK does not know yet.
    #[serde(other)]
    Unknown,
}

/// One page of `GET /v1/environments/{env}/secrets`, in name order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SecretPage {
    /// The secrets of this page.
    pub secrets: Vec<SecretMeta>,
    /// Pass it in [`PageRequest::cursor`] for the next page; `None` on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A config entry: plaintext JSON, readable by admin and manage keys.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigEntry {
    /// Its key (the secret-name rule).
    pub key: String,
    /// Its environment.
    pub environment: String,
    /// The JSON that was written.
    pub value: serde_json::Value,
    /// 1 when created, +1 per update.
    pub revision: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// One page of `GET /v1/environments/{env}/config`, in key order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigPage {
    /// The entries of this page.
    pub config: Vec<ConfigEntry>,
    /// Pass it in [`PageRequest::cursor`] for the next page; `None` on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in every environment, except obtaining a value.
    Admin,
    /// Write, list and delete in one environment; never reads a value.
    Manage,
    /// Obtain the declared secrets of one environment's functions (poll, resolve,
    /// complete); nothing else.
    Runtime,
}

/// An API key's description (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ApiKey {
    /// Its id, `ak_<16 hex digits>`.
    pub id: String,
    /// The name it was given.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The environment a `manage` or `runtime` key is scoped to.
    pub environment: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A key just created: its description and the key, shown this once. `Debug` never shows
/// the key.
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct NewApiKey {
    /// Its description.
    #[serde(flatten)]
    pub meta: ApiKey,
    key: SecretString,
}

impl NewApiKey {
    /// The key, for [`Client::new`](crate::Client::new): store it now, it is never shown
    /// again.
    pub fn expose_key(&self) -> &str {
        self.key.expose_secret()
    }

    /// The key, still wrapped.
    pub fn key(&self) -> &SecretString {
        &self.key
    }
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("meta", &self.meta)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The answer to a write that creates or replaces: what is stored now, and whether it was
/// created (HTTP 201) rather than updated (200).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Written<T> {
    /// What is stored now.
    pub value: T,
    /// `true` when the write created it.
    pub created: bool,
}

/// Which page of a listing to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page, 1–1000 (the server's default: 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; `None` for the first.
    pub cursor: Option<String>,
}

/// Which secrets to list (`GET /v1/environments/{env}/secrets`) and in what order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretQuery {
    /// Only names containing this, ignoring ASCII case (1–128 of `[A-Za-z0-9_]`).
    pub search: Option<String>,
    /// The order (the server's default: by name).
    pub sort: Option<coffer_wire::SecretSort>,
    /// Which page (a cursor belongs to its search and sort).
    pub page: PageRequest,
}

/// Which runs to list (`GET /v1/environments/{env}/runs`), newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs of this function.
    pub function_id: Option<String>,
    /// Only runs with this status.
    pub status: Option<coffer_wire::RunStatus>,
    /// Which page.
    pub page: PageRequest,
}

// Request bodies. Values go through `expose_secret` only here, while serializing.

#[derive(Serialize)]
pub(crate) struct CreateEnvironment<'a> {
    pub name: &'a str,
}

#[derive(Serialize)]
pub(crate) struct CreateApiKey<'a> {
    pub name: &'a str,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutSecret<'a> {
    #[serde(serialize_with = "expose")]
    pub value: &'a SecretString,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
}

fn expose<S: serde::Serializer>(value: &&SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.expose_secret())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutConfig<'a> {
    pub value: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct EnvironmentList {
    pub environments: Vec<Environment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
}

/// A listing the client can follow from cursor to cursor.
pub(crate) trait Paged: serde::de::DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Paged for SecretPage {
    type Item = SecretMeta;
    fn into_parts(self) -> (Vec<SecretMeta>, Option<String>) {
        (self.secrets, self.next_cursor)
    }
}

impl Paged for ConfigPage {
    type Item = ConfigEntry;
    fn into_parts(self) -> (Vec<ConfigEntry>, Option<String>) {
        (self.config, self.next_cursor)
    }
}

impl Paged for coffer_wire::FunctionList {
    type Item = coffer_wire::Function;
    fn into_parts(self) -> (Vec<coffer_wire::Function>, Option<String>) {
        (self.functions, self.next_cursor)
    }
}

impl Paged for coffer_wire::RunList {
    type Item = coffer_wire::Run;
    fn into_parts(self) -> (Vec<coffer_wire::Run>, Option<String>) {
        (self.runs, self.next_cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_api_keys_debug_never_shows_the_key() {
        let key: NewApiKey = serde_json::from_str(
            r#"{"id":"ak_0123456789abcdef","name":"w","role":"runtime","environment":"prod",
                "key":"ck_prod_deadbeef","createdAt":"2026-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        assert_eq!(key.expose_key(), "ck_prod_deadbeef");
        assert_eq!(key.meta.role, Role::Runtime);
        assert!(!format!("{key:?}").contains("deadbeef"));
    }

    #[test]
    fn a_put_secret_body_carries_the_value_and_the_precondition() {
        let value = SecretString::from("s3cr3t");
        let body = PutSecret {
            value: &value,
            expected_revision: Some(0),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"value":"s3cr3t","expectedRevision":0}"#
        );
    }

    #[test]
    fn an_unknown_secret_status_still_reads() {
        let meta: SecretMeta = serde_json::from_str(
            r#"{"name":"A","environment":"e","revision":1,"keyVersion":1,"status":"frozen",
                "createdAt":"t","updatedAt":"t","somethingNew":true}"#,
        )
        .unwrap();
        assert_eq!(meta.status, SecretStatus::Unknown);
    }
}
