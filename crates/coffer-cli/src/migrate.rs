//! `coffer backend migrate --to db|nats|vault`: moves every secret value into another
//! store (see `coffer_core::migrate`). It opens the catalog itself, like `coffer serve`
//! (the same `--data-dir` / `--database-url`, and the same variables for the keys and the
//! backends): an embedded catalog is locked while a server uses it, so stop the server
//! first; on PostgreSQL, nodes may keep running (a write racing the migration is never
//! overwritten), but restart them with the new `COFFER_SECRETS_BACKEND` once it is done.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_core::keys::load_keyring;
use coffer_core::migrate::Migration;
use coffer_nats::values::{NatsValueOptions, NatsValues};
use coffer_postgres::{PgOptions, PgStore};
use coffer_sqlite::SqliteStore;
use coffer_store::{Catalog, SecretStore, ValueStore};
use coffer_vault::VaultValues;
use coffer_vault::config::VaultConfig;
use indicatif::{ProgressBar, ProgressStyle};

/// `coffer backend …`.
#[derive(clap::Subcommand)]
pub enum BackendCommand {
    /// Move every secret value into another store: copy, check, switch, then remove the
    /// source copies. Resumable: run it again after a crash.
    #[command(after_help = "Examples:
  COFFER_NATS_URL=nats://127.0.0.1:4222 coffer backend migrate --to nats
  COFFER_VAULT_ADDR=http://127.0.0.1:8200 COFFER_VAULT_TOKEN=… coffer backend migrate --to vault --dry-run
  coffer backend migrate --to db")]
    Migrate(MigrateArgs),
}

/// Options of `coffer backend migrate`.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Where the values go.
    #[arg(long, value_parser = ["db", "nats", "vault"])]
    to: String,
    /// Count and check what would move; copy, switch and remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Data directory of the embedded catalog (as `coffer serve`).
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "./.coffer")]
    data_dir: PathBuf,
    /// PostgreSQL catalog (as `coffer serve`).
    #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// Runs `coffer backend …`.
pub async fn run(command: BackendCommand) -> anyhow::Result<ExitCode> {
    let BackendCommand::Migrate(args) = command;
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let keyring =
        load_keyring(&crate::serve::key_sources()?).context("invalid key configuration")?;
    // Every store a row may refer to: those whose variables are set.
    let mut stores: Vec<Arc<dyn ValueStore>> = Vec::new();
    if let Some(options) = NatsValueOptions::from_env(get).map_err(anyhow::Error::msg)? {
        stores.push(Arc::new(
            NatsValues::connect(options)
                .await
                .context("cannot reach NATS (COFFER_NATS_URL)")?,
        ));
    }
    if get("COFFER_VAULT_ADDR").is_some() {
        let config = VaultConfig::from_env(get)
            .map_err(|missing| anyhow::anyhow!("vault config incomplete: {missing}"))?;
        stores.push(Arc::new(
            VaultValues::connect(config)
                .await
                .context("cannot reach Vault (COFFER_VAULT_ADDR)")?,
        ));
    }
    let target = match args.to.as_str() {
        "db" => None,
        name => Some(
            stores
                .iter()
                .find(|s| s.backend_name() == name)
                .cloned()
                .with_context(|| match name {
                    "nats" => "--to nats needs COFFER_NATS_URL (and its other variables)",
                    _ => "--to vault needs COFFER_VAULT_ADDR (and its other variables)",
                })?,
        ),
    };
    let (catalog, index, _lock): (Arc<dyn Catalog>, Arc<dyn SecretStore>, _) =
        match args.database_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => {
                let store = Arc::new(
                    PgStore::connect(url, PgOptions::default())
                        .await
                        .context("cannot open the PostgreSQL catalog (COFFER_DATABASE_URL)")?,
                );
                (store.clone(), store, None)
            }
            None => {
                if !args.data_dir.join(coffer_sqlite::DB_FILE).exists() {
                    bail!(
                        "no catalog in {}: nothing to migrate",
                        args.data_dir.display()
                    );
                }
                let lock = crate::serve::lock_data_dir(&args.data_dir)?;
                let store = Arc::new(
                    SqliteStore::open(&args.data_dir)
                        .context("cannot open the embedded catalog")?,
                );
                (store.clone(), store, Some(lock))
            }
        };
    let migration = Migration {
        catalog,
        index,
        stores,
        target,
        keyring,
        dry_run: args.dry_run,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("values {bar:40} {pos}/{len}, {elapsed} elapsed, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = migration
        .run(|p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .await?;
    bar.finish_and_clear();
    let to = migration.target_name();
    if args.dry_run {
        println!(
            "dry run: {} secrets, {} already in {to}, {} would move",
            report.total, report.already, report.moved
        );
    } else {
        println!(
            "{} secrets: {} moved to {to} (each checked), {} were there already; {} source copies removed",
            report.total, report.moved, report.already, report.removed
        );
        println!("now (re)start every node with COFFER_SECRETS_BACKEND={to}");
    }
    Ok(ExitCode::SUCCESS)
}
