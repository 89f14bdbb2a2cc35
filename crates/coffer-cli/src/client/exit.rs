//! One exit-code table for every client command (documented in `docs/CLI.md`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | any other error: the server failed or is unreachable, I/O, declined at a prompt |
//! | 2 | usage: bad arguments or input, refused before any request (clap's errors too) |
//! | 3 | not found: the named environment, secret, config entry or API key does not exist |
//! | 4 | no access: no API key, or the server refused it (401) or its role (403) |
//! | 5 | conflict: a revision conflict, an environment that exists, the last admin key |
//! | 6 | broken: `coffer audit verify` found the audit log's hash chain broken, or `coffer keys verify` found values that do not open |
//! | 126, 127 | `coffer run` could not execute CMD (127: not found), as `env` and shells say it |
//!
//! Once `coffer run` started CMD, it exits with CMD's code instead.

use std::fmt;
use std::process::ExitCode;

use reqwest::StatusCode;

use super::http::ApiError;

/// Exit code for an error with no more specific meaning.
pub const FAILURE: u8 = 1;
/// Exit code for a usage error (clap uses it too).
pub const USAGE: u8 = 2;
/// Exit code when the named thing does not exist.
pub const NOT_FOUND: u8 = 3;
/// Exit code when there is no key or the server refused it.
pub const NO_ACCESS: u8 = 4;
/// Exit code for a conflict with what the server holds.
pub const CONFLICT: u8 = 5;
/// Exit code when a verification finds stored data broken: `coffer audit verify` (the audit
/// log's chain) or `coffer keys verify` (values that do not open).
pub const BROKEN: u8 = 6;

/// An error in what the user typed or piped, found before any request: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// No API key could be found for the address: exit code 4.
#[derive(Debug)]
pub struct NoKeyError(pub String);

impl fmt::Display for NoKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoKeyError {}

/// `coffer audit verify` found a broken chain (the message names the row): exit code 6.
#[derive(Debug)]
pub struct BrokenChainError(pub String);

impl fmt::Display for BrokenChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrokenChainError {}

/// `coffer keys verify` found values that do not open (the report is printed): exit code 6.
#[derive(Debug)]
pub struct UnreadableValuesError(pub String);

impl fmt::Display for UnreadableValuesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnreadableValuesError {}

/// `coffer run` could not start CMD: exit code 127 when it does not exist, 126 when it
/// cannot be executed, as `env`, `nohup` and shells report it.
#[derive(Debug)]
pub struct CommandNotStarted {
    /// What went wrong, naming CMD.
    pub message: String,
    /// [`CommandNotStarted::NOT_FOUND`] or [`CommandNotStarted::NOT_EXECUTABLE`].
    pub code: u8,
}

impl CommandNotStarted {
    /// CMD was not found.
    pub const NOT_FOUND: u8 = 127;
    /// CMD was found but could not be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
}

impl fmt::Display for CommandNotStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandNotStarted {}

/// A usage error with this message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The exit code for `error`, from the first cause in its chain that has a meaning.
pub fn code(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(code_number(error))
}

fn code_number(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<UsageError>() {
            return USAGE;
        }
        if cause.is::<NoKeyError>() {
            return NO_ACCESS;
        }
        if cause.is::<BrokenChainError>() || cause.is::<UnreadableValuesError>() {
            return BROKEN;
        }
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return api_code(api);
        }
        if let Some(not_started) = cause.downcast_ref::<CommandNotStarted>() {
            return not_started.code;
        }
    }
    FAILURE
}

fn api_code(error: &ApiError) -> u8 {
    let code = error.body.as_ref().map(|b| b.code.as_str());
    match error.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => NO_ACCESS,
        // `route_not_found` means an older server or another service: not the user's name.
        StatusCode::NOT_FOUND if code.is_some_and(|c| c != "route_not_found") => NOT_FOUND,
        StatusCode::CONFLICT => CONFLICT,
        // The server refused a name or value the client could not check itself.
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => USAGE,
        _ => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn api(status: u16, code: &str) -> anyhow::Error {
        let body = format!(r#"{{"error": {{"code": "{code}", "message": "m"}}}}"#);
        ApiError::parse(StatusCode::from_u16(status).unwrap(), body.as_bytes()).into()
    }

    #[test]
    fn each_kind_of_error_has_its_code_even_under_context() {
        assert_eq!(code_number(&usage("bad")), USAGE);
        assert_eq!(
            code_number(&Err::<(), _>(usage("bad")).context("outer").unwrap_err()),
            USAGE
        );
        assert_eq!(code_number(&api(404, "secret_not_found")), NOT_FOUND);
        assert_eq!(code_number(&api(404, "route_not_found")), FAILURE);
        assert_eq!(code_number(&api(401, "unauthorized")), NO_ACCESS);
        assert_eq!(code_number(&api(403, "forbidden")), NO_ACCESS);
        assert_eq!(code_number(&api(409, "revision_conflict")), CONFLICT);
        assert_eq!(code_number(&api(422, "invalid_value")), USAGE);
        assert_eq!(code_number(&api(503, "backend_unavailable")), FAILURE);
        assert_eq!(code_number(&anyhow::anyhow!("io")), FAILURE);
        assert_eq!(code_number(&NoKeyError("no key".into()).into()), NO_ACCESS);
        assert_eq!(
            code_number(&BrokenChainError("row 3".into()).into()),
            BROKEN
        );
        assert_eq!(
            code_number(&UnreadableValuesError("2 values".into()).into()),
            BROKEN
        );
        let not_found = CommandNotStarted {
            message: "cannot start x".into(),
            code: CommandNotStarted::NOT_FOUND,
        };
        assert_eq!(code_number(&not_found.into()), 127);
    }
}
