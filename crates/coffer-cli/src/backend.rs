//! Which store keeps secret values (`COFFER_SECRETS_BACKEND`): the catalog's database
//! (`db`, the default), NATS JetStream KV (`nats`) or Vault / OpenBao KV (`vault`).
//!
//! A backend whose configuration is incomplete falls back to `db` with a loud warning, and
//! `/v1/status` says why (`db (vault config incomplete: COFFER_VAULT_ADDR not set)`), unless
//! `--require-backend` makes it a start-up error. A configured backend that does not answer
//! is a start-up error after a bounded retry, never a silent fallback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use coffer_nats::values::{NatsValueOptions, NatsValues};
use coffer_store::ValueStore;
use coffer_vault::VaultValues;
use coffer_vault::config::VaultConfig;

/// How often a start tries to reach the configured backend before it gives up.
pub const CONNECT_ATTEMPTS: u32 = 5;

/// The configured value store, read from the environment.
pub enum Choice {
    /// The catalog's database.
    Db,
    /// NATS JetStream KV.
    Nats(NatsValueOptions),
    /// Vault / OpenBao KV.
    Vault(VaultConfig),
}

impl Choice {
    /// The name `COFFER_SECRETS_BACKEND` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Choice::Db => "db",
            Choice::Nats(_) => "nats",
            Choice::Vault(_) => "vault",
        }
    }
}

/// Reads `COFFER_SECRETS_BACKEND` and its backend's settings through `get`. Returns the
/// choice and, after a fallback to `db`, why (for `/v1/status`).
pub fn choose(
    get: impl Fn(&str) -> Option<String>,
    require_backend: bool,
) -> anyhow::Result<(Choice, Option<String>)> {
    let wanted = get("COFFER_SECRETS_BACKEND").unwrap_or_default();
    let incomplete = match wanted.trim() {
        "" | "db" => return Ok((Choice::Db, None)),
        "nats" => match NatsValueOptions::from_env(&get) {
            Ok(Some(options)) => return Ok((Choice::Nats(options), None)),
            Ok(None) => "nats config incomplete: COFFER_NATS_URL not set".to_owned(),
            Err(e) => bail!("COFFER_SECRETS_BACKEND=nats: {e}"),
        },
        "vault" => match VaultConfig::from_env(&get) {
            Ok(config) => {
                warn_cleartext_token(&get("COFFER_VAULT_ADDR").unwrap_or_default());
                return Ok((Choice::Vault(config), None));
            }
            Err(missing) => format!("vault config incomplete: {missing}"),
        },
        other => bail!("COFFER_SECRETS_BACKEND={other}: expected db, nats or vault"),
    };
    if require_backend {
        bail!("COFFER_SECRETS_BACKEND={wanted}: {incomplete} (--require-backend)");
    }
    tracing::warn!(
        "COFFER_SECRETS_BACKEND={wanted}: {incomplete}; FALLING BACK to the db backend: secret values are kept in the catalog's database"
    );
    Ok((Choice::Db, Some(incomplete)))
}

/// Vault's token travels in a header: over `http://` to another machine, anyone on the path
/// reads it.
fn warn_cleartext_token(addr: &str) {
    let Some(rest) = addr.strip_prefix("http://") else {
        return;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        tracing::warn!(
            "COFFER_VAULT_ADDR is http:// to {host}: the Vault token crosses the network in cleartext; use https://"
        );
    }
}

/// Connects to the chosen value store (`None` for `db`), trying [`CONNECT_ATTEMPTS`]
/// times with a growing pause before it gives up.
pub async fn connect(choice: Choice) -> anyhow::Result<Option<Arc<dyn ValueStore>>> {
    let name = choice.name();
    let mut pause = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let result: anyhow::Result<Option<Arc<dyn ValueStore>>> = match &choice {
            Choice::Db => return Ok(None),
            Choice::Nats(options) => NatsValues::connect(options.clone())
                .await
                .map(|v| Some(Arc::new(v) as Arc<dyn ValueStore>))
                .map_err(anyhow::Error::from),
            Choice::Vault(config) => VaultValues::connect(config.clone())
                .await
                .map(|v| Some(Arc::new(v) as Arc<dyn ValueStore>))
                .map_err(anyhow::Error::from),
        };
        match result {
            Ok(store) => return Ok(store),
            Err(e) if attempt < CONNECT_ATTEMPTS => {
                tracing::warn!(backend = name, attempt, error = %e, "the secrets backend does not answer yet; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => bail!(
                "the {name} secrets backend does not answer after {CONNECT_ATTEMPTS} attempts: {e}"
            ),
        }
    }
}
