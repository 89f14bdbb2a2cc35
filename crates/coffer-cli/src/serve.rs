//! `coffer serve`: reads settings, opens the embedded store, runs the start-up checks and
//! serves the API until SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_core::keys::{KeySources, load_keyring};
use coffer_core::{Coffer, StartupOptions};
use coffer_sqlite::SqliteStore;
use secrecy::{ExposeSecret, SecretString};

/// The file, in the data dir, that holds the first admin key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Options of `coffer serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory: the SQLite file, admin.key and the lock (created 0700).
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "./.coffer")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "COFFER_LISTEN", default_value = "127.0.0.1:8720")]
    listen: SocketAddr,
    /// PostgreSQL catalog (not available yet: the embedded SQLite file is used).
    #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Refuse to start without an encryption key (no dev mode).
    #[arg(long, env = "COFFER_REQUIRE_ENCRYPTION", value_parser = clap::builder::FalseyValueParser::new())]
    require_encryption: bool,
    /// Start even if stored values use a key version the keyring no longer has; those
    /// values stay listed but become unreadable until the key is back or they are rewritten.
    #[arg(long, env = "COFFER_ALLOW_UNREADABLE", value_parser = clap::builder::FalseyValueParser::new())]
    allow_unreadable: bool,
    /// Refuse to start when the configured secrets backend cannot be used.
    #[arg(long, env = "COFFER_REQUIRE_BACKEND", value_parser = clap::builder::FalseyValueParser::new())]
    require_backend: bool,
}

/// Runs the server until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.clone();
    init_logging();
    if args.database_url.is_some() {
        bail!(
            "COFFER_DATABASE_URL / --database-url: PostgreSQL is not supported by this build yet"
        );
    }
    match std::env::var("COFFER_SECRETS_BACKEND").ok().as_deref() {
        None | Some("" | "db") => {}
        Some(other) => {
            bail!("COFFER_SECRETS_BACKEND={other}: only `db` is supported by this build")
        }
    }
    let _ = args.require_backend; // Only `db` exists; there is nothing to fall back from yet.

    let keyring = load_keyring(&key_sources()).context("invalid key configuration")?;
    if keyring.is_none() {
        warn_dev_mode(args.require_encryption);
    }
    create_private_dir(&data_dir)?;
    warn_if_shared(&data_dir);
    let _lock = lock_data_dir(&data_dir)?;
    let store = Arc::new(SqliteStore::open(&data_dir).context("cannot open the embedded store")?);
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store,
        keyring,
        require_encryption: args.require_encryption,
        admin_key_seed: std::env::var("COFFER_ADMIN_KEY")
            .ok()
            .map(SecretString::from),
        allow_unreadable: args.allow_unreadable,
    };
    let (coffer, report) = options.start().await?;
    for version in &report.new_canaries {
        tracing::info!(
            key_version = version.get(),
            "sealed a canary for a new key version"
        );
    }
    if report.migrated_plaintext > 0 {
        tracing::info!(
            values = report.migrated_plaintext,
            "encrypted values left unencrypted by dev mode"
        );
    }
    if report.unreadable > 0 {
        tracing::warn!(
            values = report.unreadable,
            "stored values cannot be opened with the configured keys; they are listed as unreadable (writing one again repairs it)"
        );
    }
    for warning in coffer.nonce_warnings() {
        tracing::warn!("{warning}");
    }
    if let Some(first) = report.admin_key {
        let path = data_dir.join(ADMIN_KEY_FILE);
        // Shown before the file is written: the bootstrap is committed, and if the write
        // fails the operator still has the only copy of the key.
        if first.seeded {
            eprintln!("First start: the admin key is COFFER_ADMIN_KEY.");
        } else {
            eprintln!(
                "\nFirst start: created environment `default` and an admin API key.\n\
                 It is shown once here and saved to {} (mode 0600):\n\n    {}\n",
                path.display(),
                first.key.expose_secret()
            );
        }
        write_private_file(&path, first.key.expose_secret())?;
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            addr = %args.listen,
            "listening beyond loopback without TLS: API keys travel in clear text unless a TLS-terminating proxy is in front"
        );
    }
    let status = coffer.status();
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        backend = status.backend,
        encryption = ?status.encryption,
        "coffer is listening"
    );
    let coffer = Arc::new(coffer);
    let counters = tokio::spawn(flush_counters_periodically(coffer.clone()));
    coffer_api::serve(listener, coffer.clone() as Arc<Coffer>, shutdown_signal()).await?;
    counters.abort();
    if let Err(e) = coffer.flush_counters().await {
        tracing::error!(error = %e, "cannot record encryption counts");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Encryption counts reach the catalog every few seconds (and at shutdown): the nonce
/// budget is a lifetime figure, and a few seconds lost to a crash do not matter against 2^31.
async fn flush_counters_periodically(coffer: Arc<Coffer>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    let mut warned = coffer.nonce_warnings().len();
    loop {
        tick.tick().await;
        if let Err(e) = coffer.flush_counters().await {
            tracing::error!(error = %e, "cannot record encryption counts");
        }
        let warnings = coffer.nonce_warnings();
        if warnings.len() > warned {
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
        }
        warned = warnings.len();
    }
}

fn key_sources() -> KeySources {
    let var = |name| std::env::var(name).ok();
    KeySources {
        secret_keys: var("COFFER_SECRET_KEYS").map(SecretString::from),
        secret_keys_file: var("COFFER_SECRET_KEYS_FILE").map(PathBuf::from),
        master_key: var("COFFER_MASTER_KEY").map(SecretString::from),
    }
}

fn warn_dev_mode(fatal: bool) {
    if fatal {
        return; // start-up refuses with its own message
    }
    let bar = "!".repeat(78);
    tracing::warn!(
        "\n{bar}\n!! DEV MODE: no encryption key is set. Secret values are stored UNENCRYPTED.\n\
         !! Set COFFER_MASTER_KEY (openssl rand -hex 32) or COFFER_SECRET_KEYS before real use.\n{bar}"
    );
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// One server per data dir: a second one would contend for SQLite's write lock and could
/// write a different admin key. The lock lasts as long as the returned file is open.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("coffer.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another coffer serve is using the data dir {}",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The data dir holds ciphertext and key hashes; others should not even list it.
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the data dir is accessible to other users; chmod 700 it"
        );
    }
}

fn write_private_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its old mode on open; make sure it is private either way.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    writeln!(file, "{contents}").with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}
