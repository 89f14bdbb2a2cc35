//! The runtime plane on the wire: the JSON shapes of functions, events, runs, jobs and
//! orchestrations (and the order of a secrets listing), and
//! the `Coffer-Signature` scheme that push deliveries carry.
//!
//! One definition for every side: the server serializes these types (and derives its
//! OpenAPI schemas from them, feature `openapi`), the CLI and the Rust SDK deserialize the
//! same types, so the three cannot drift apart. Request bodies refuse unknown fields (a
//! typo is an error, not a silently ignored setting); documents the server sends (a job,
//! a run) accept new fields, so a client keeps working when the server grows.
//!
//! Secret values appear in exactly one type, [`Secrets`] (inside a [`Job`]), whose `Debug`
//! shows names only and whose values live in `SecretString`s.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod functions;
mod job;
mod listing;
mod orchestrations;
mod runs;
pub mod signature;

pub use functions::*;
pub use job::*;
pub use listing::*;
pub use orchestrations::*;
pub use runs::*;

use serde::{Deserialize, Serialize};

/// For an optional JSON field where `null` is a value: absent is `None`, present (even
/// `null`) is `Some` (with `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// A value shown once (a function's signing secret at registration or rotation): it
/// serializes as the plain string; `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ShownOnce(secrecy::SecretString);

impl ShownOnce {
    /// Wraps `value`.
    pub fn new(value: secrecy::SecretString) -> Self {
        ShownOnce(value)
    }

    /// The value.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl Serialize for ShownOnce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl std::fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShownOnce(<redacted>)")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ShownOnce {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        String::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ShownOnce {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_output_is_an_output_and_an_absent_one_is_none() {
        let null: Complete = serde_json::from_str(r#"{"output": null}"#).unwrap();
        assert_eq!(null.output, Some(serde_json::Value::Null));
        let absent: Complete = serde_json::from_str(r#"{"error": "x"}"#).unwrap();
        assert_eq!(absent.output, None);
        assert_eq!(
            serde_json::to_string(&null).unwrap(),
            r#"{"output":null}"#,
            "it goes back out as null"
        );
    }
}
