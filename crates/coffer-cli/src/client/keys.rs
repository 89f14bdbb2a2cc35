//! `coffer keys status | rewrap | verify`: key versions in use, re-encryption to the current
//! one, and a walk that opens every value to find those that no longer open.

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::exit::UnreadableValuesError;
use super::http::JsonBody;
use super::{Session, examples, output, parse};

/// `coffer keys …`
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Key versions, which one is current, and how many stored values each holds.
    #[command(after_help = examples::KEYS_STATUS)]
    Status,
    /// Re-encrypt every stored value to the current key version, online, in batches.
    #[command(after_help = examples::KEYS_REWRAP)]
    Rewrap {
        /// Values per request (each batch is one transaction on the server).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch: u32,
    },
    /// Open every stored value and report those that do not open (names and key versions,
    /// never values); exits 6 when there are any.
    #[command(after_help = examples::KEYS_VERIFY)]
    Verify {
        /// Values per request.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch: u32,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyStatus {
    encryption: String,
    keys: Vec<KeyVersion>,
    plaintext_values: u64,
    // A server from before functions' signing secrets were counted sends none.
    #[serde(default)]
    plaintext_signing_secrets: u64,
    #[serde(default)]
    plaintext_orchestration_params: u64,
    unreadable_values: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyVersion {
    version: u32,
    current: bool,
    in_keyring: bool,
    values: u64,
    #[serde(default)]
    signing_secrets: u64,
    #[serde(default)]
    orchestration_params: u64,
    encryptions: u64,
}

/// What a rewrap did with one kind of stored secret.
#[derive(Deserialize, Serialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct RewrapCounts {
    rewrapped: u64,
    already_current: u64,
    unreadable: u64,
    updated_concurrently: u64,
}

impl RewrapCounts {
    fn add(&mut self, other: RewrapCounts) {
        self.rewrapped += other.rewrapped;
        self.already_current += other.already_current;
        self.unreadable += other.unreadable;
        self.updated_concurrently += other.updated_concurrently;
    }

    fn total(&self) -> u64 {
        self.rewrapped + self.already_current + self.unreadable + self.updated_concurrently
    }

    fn summary(&self) -> String {
        format!(
            "rewrapped {}, already current {}, unreadable {}, updated concurrently {}",
            self.rewrapped, self.already_current, self.unreadable, self.updated_concurrently
        )
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Rewrap {
    #[serde(flatten)]
    values: RewrapCounts,
    #[serde(default)]
    signing_secrets: RewrapCounts,
    #[serde(default)]
    orchestration_params: RewrapCounts,
    #[serde(skip_serializing)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyStep {
    checked: u64,
    unreadable: Vec<Unreadable>,
    #[serde(default)]
    signing_secrets_checked: u64,
    #[serde(default)]
    unreadable_signing_secrets: Vec<UnreadableSigning>,
    #[serde(default)]
    orchestration_params_checked: u64,
    #[serde(default)]
    unreadable_orchestration_params: Vec<UnreadableParam>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct UnreadableParam {
    environment: String,
    orchestration: String,
    step: String,
    param: String,
    revision: u64,
    key_version: u32,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct UnreadableSigning {
    environment: String,
    function: String,
    revision: u64,
    key_version: u32,
    previous: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Unreadable {
    environment: String,
    name: String,
    revision: u64,
    key_version: u32,
}

/// What `coffer keys verify --json` prints.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Verified {
    checked: u64,
    unreadable: Vec<Unreadable>,
    signing_secrets_checked: u64,
    unreadable_signing_secrets: Vec<UnreadableSigning>,
    orchestration_params_checked: u64,
    unreadable_orchestration_params: Vec<UnreadableParam>,
}

impl Session {
    pub(super) async fn keys(&self, command: KeysCommand) -> Result<()> {
        match command {
            KeysCommand::Status => self.key_status().await,
            KeysCommand::Rewrap { batch } => self.rewrap(batch).await,
            KeysCommand::Verify { batch } => self.verify(batch).await,
        }
    }

    /// A bar over every stored value and signing secret (drawn only when stderr is a
    /// terminal).
    async fn values_bar(&self) -> Result<ProgressBar> {
        let status: KeyStatus = parse(&self.api.get(&["v1", "keys"], &[]).await?)?;
        let total = status.plaintext_values
            + status.plaintext_signing_secrets
            + status.plaintext_orchestration_params
            + status
                .keys
                .iter()
                .map(|k| k.values + k.signing_secrets + k.orchestration_params)
                .sum::<u64>();
        Ok(ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "values {bar:40} {pos}/{len}, {elapsed} elapsed, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ))
    }

    async fn verify(&self, batch: u32) -> Result<()> {
        let bar = self.values_bar().await?;
        let mut found = Verified::default();
        let mut cursor: Option<String> = None;
        loop {
            let body = json!({ "cursor": cursor, "limit": batch });
            let answer = self
                .api
                .post(&["v1", "keys", "verify"], JsonBody::new(&body, 0)?)
                .await?;
            let step: VerifyStep = parse(&answer)?;
            bar.inc(
                step.checked + step.signing_secrets_checked + step.orchestration_params_checked,
            );
            found.checked += step.checked;
            found.unreadable.extend(step.unreadable);
            found.signing_secrets_checked += step.signing_secrets_checked;
            found
                .unreadable_signing_secrets
                .extend(step.unreadable_signing_secrets);
            found.orchestration_params_checked += step.orchestration_params_checked;
            found
                .unreadable_orchestration_params
                .extend(step.unreadable_orchestration_params);
            match step.next_cursor {
                Some(next) if Some(&next) == cursor.as_ref() => {
                    bail!("the server did not advance the verification")
                }
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        bar.finish_and_clear();
        if self.json {
            output::emit(&output::json(
                &serde_json::to_value(&found).unwrap_or(Value::Null),
            )?)?;
        } else {
            let mut text = format!(
                "checked {}: {} unreadable\n",
                output::count(found.checked, "value", "values"),
                found.unreadable.len()
            );
            if !found.unreadable.is_empty() {
                let rows: Vec<Vec<String>> = found
                    .unreadable
                    .iter()
                    .map(|u| {
                        vec![
                            output::printable(&u.environment),
                            output::printable(&u.name),
                            u.revision.to_string(),
                            u.key_version.to_string(),
                        ]
                    })
                    .collect();
                text.push_str(&output::table(
                    &["ENVIRONMENT", "NAME", "REVISION", "KEY-VERSION"],
                    &rows,
                ));
            }
            // Only installations with functions have signing secrets to speak of.
            if found.signing_secrets_checked > 0 {
                text.push_str(&format!(
                    "checked {}: {} unreadable\n",
                    output::count(
                        found.signing_secrets_checked,
                        "function signing secret",
                        "function signing secrets"
                    ),
                    found.unreadable_signing_secrets.len()
                ));
            }
            if !found.unreadable_signing_secrets.is_empty() {
                let rows: Vec<Vec<String>> = found
                    .unreadable_signing_secrets
                    .iter()
                    .map(|u| {
                        vec![
                            output::printable(&u.environment),
                            output::printable(&u.function),
                            u.revision.to_string(),
                            u.key_version.to_string(),
                            if u.previous { "previous" } else { "current" }.to_owned(),
                        ]
                    })
                    .collect();
                text.push_str(&output::table(
                    &[
                        "ENVIRONMENT",
                        "FUNCTION",
                        "REVISION",
                        "KEY-VERSION",
                        "SECRET",
                    ],
                    &rows,
                ));
            }
            // Only installations with orchestrations have encrypted params to speak of.
            if found.orchestration_params_checked > 0 {
                text.push_str(&format!(
                    "checked {}: {} unreadable\n",
                    output::count(
                        found.orchestration_params_checked,
                        "orchestration param",
                        "orchestration params"
                    ),
                    found.unreadable_orchestration_params.len()
                ));
            }
            if !found.unreadable_orchestration_params.is_empty() {
                let rows: Vec<Vec<String>> = found
                    .unreadable_orchestration_params
                    .iter()
                    .map(|u| {
                        vec![
                            output::printable(&u.environment),
                            output::printable(&u.orchestration),
                            output::printable(&u.step),
                            output::printable(&u.param),
                            u.revision.to_string(),
                            u.key_version.to_string(),
                        ]
                    })
                    .collect();
                text.push_str(&output::table(
                    &[
                        "ENVIRONMENT",
                        "ORCHESTRATION",
                        "STEP",
                        "PARAM",
                        "REVISION",
                        "KEY-VERSION",
                    ],
                    &rows,
                ));
            }
            output::emit(&text)?;
        }
        let mut problems = Vec::new();
        if !found.unreadable.is_empty() {
            let n = found.unreadable.len() as u64;
            problems.push(format!(
                "{} cannot be opened with the server's keys; writing a secret again repairs it (or restore the key its version needs)",
                output::count(n, "value", "values")
            ));
        }
        if !found.unreadable_signing_secrets.is_empty() {
            let n = found.unreadable_signing_secrets.len() as u64;
            problems.push(format!(
                "{} cannot be opened with the server's keys, so push deliveries cannot be signed with them; rotating a function's signing secret (POST /v1/environments/{{env}}/functions/{{id}}/signing-secret) repairs it (or restore the key its version needs)",
                output::count(n, "function signing secret", "function signing secrets")
            ));
        }
        if !found.unreadable_orchestration_params.is_empty() {
            let n = found.unreadable_orchestration_params.len() as u64;
            problems.push(format!(
                "{} cannot be opened with the server's keys, so their steps fail; setting one again (\"encrypt\": true in `coffer orchestration update`) repairs it (or restore the key its version needs)",
                output::count(n, "orchestration param", "orchestration params")
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(UnreadableValuesError(problems.join("; ")).into())
    }

    async fn key_status(&self) -> Result<()> {
        let answer = self.api.get(&["v1", "keys"], &[]).await?;
        if self.json {
            return output::emit(&output::json(&answer)?);
        }
        let status: KeyStatus = parse(&answer)?;
        if status.encryption == "disabled" {
            return output::emit(&format!(
                "encryption is disabled (dev mode): values are stored unencrypted ({} now).\n\
                 To enable it, start `coffer serve` with a key, e.g.\n  \
                 export COFFER_MASTER_KEY=$(openssl rand -hex 32)\n\
                 (or a keyring in COFFER_SECRET_KEYS); the values stored so far are encrypted at that start.\n",
                output::count(status.plaintext_values, "value", "values")
            ));
        }
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let rows: Vec<Vec<String>> = status
            .keys
            .iter()
            .map(|k| {
                vec![
                    k.version.to_string(),
                    yes(k.current),
                    yes(k.in_keyring),
                    k.values.to_string(),
                    k.signing_secrets.to_string(),
                    k.orchestration_params.to_string(),
                    k.encryptions.to_string(),
                ]
            })
            .collect();
        let mut text = output::table(
            &[
                "VERSION",
                "CURRENT",
                "IN-KEYRING",
                "VALUES",
                "SIGNING-SECRETS",
                "ORCHESTRATION-PARAMS",
                "ENCRYPTIONS",
            ],
            &rows,
        );
        text.push_str(&format!(
            "plaintext values: {}, plaintext signing secrets: {}, plaintext orchestration params: {}, unreadable values: {}\n",
            status.plaintext_values,
            status.plaintext_signing_secrets,
            status.plaintext_orchestration_params,
            status.unreadable_values
        ));
        output::emit(&text)
    }

    async fn rewrap(&self, batch: u32) -> Result<()> {
        let bar = self.values_bar().await?;
        let mut sum = Rewrap::default();
        loop {
            let body = json!({ "cursor": sum.next_cursor, "limit": batch });
            let answer = self
                .api
                .post(&["v1", "keys", "rewrap"], JsonBody::new(&body, 0)?)
                .await?;
            let step: Rewrap = parse(&answer)?;
            bar.inc(
                step.values.total()
                    + step.signing_secrets.total()
                    + step.orchestration_params.total(),
            );
            sum.values.add(step.values);
            sum.signing_secrets.add(step.signing_secrets);
            sum.orchestration_params.add(step.orchestration_params);
            match step.next_cursor {
                Some(next) if Some(&next) == sum.next_cursor.as_ref() => {
                    bail!("the server did not advance the rewrap")
                }
                Some(next) => sum.next_cursor = Some(next),
                None => break,
            }
        }
        bar.finish_and_clear();
        let unreadable = sum.values.unreadable;
        if unreadable > 0 {
            eprintln!(
                "warning: {} could not be opened and left as {}; `coffer secret list` marks them unreadable and `coffer keys verify` names them (writing one again repairs it)",
                output::count(unreadable, "value", "values"),
                if unreadable == 1 {
                    "it was"
                } else {
                    "they were"
                }
            );
        }
        let unreadable = sum.signing_secrets.unreadable;
        if unreadable > 0 {
            eprintln!(
                "warning: {} could not be opened and left as {}; `coffer keys verify` names them (rotating a function's signing secret repairs it)",
                output::count(
                    unreadable,
                    "function signing secret",
                    "function signing secrets"
                ),
                if unreadable == 1 {
                    "it was"
                } else {
                    "they were"
                }
            );
        }
        let unreadable = sum.orchestration_params.unreadable;
        if unreadable > 0 {
            eprintln!(
                "warning: {} could not be opened and left as {}; `coffer keys verify` names them (setting one again in `coffer orchestration update` repairs it)",
                output::count(unreadable, "orchestration param", "orchestration params"),
                if unreadable == 1 {
                    "it was"
                } else {
                    "they were"
                }
            );
        }
        if self.json {
            return output::emit(&output::json(
                &serde_json::to_value(&sum).unwrap_or(Value::Null),
            )?);
        }
        let mut text = format!("{}\n", sum.values.summary());
        // Only installations with functions have signing secrets to speak of.
        if sum.signing_secrets.total() > 0 {
            text.push_str(&format!(
                "function signing secrets: {}\n",
                sum.signing_secrets.summary()
            ));
        }
        if sum.orchestration_params.total() > 0 {
            text.push_str(&format!(
                "orchestration params: {}\n",
                sum.orchestration_params.summary()
            ));
        }
        output::emit(&text)
    }
}
