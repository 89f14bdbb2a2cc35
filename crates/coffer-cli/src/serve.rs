//! `coffer serve`: reads settings, opens the catalog (the embedded SQLite file, or
//! PostgreSQL with `--database-url`), runs the start-up checks and serves the API until
//! SIGTERM or SIGINT.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_core::keys::{KeySources, key_warnings, load_keyring};
use coffer_core::{Coffer, Encryption, StartupError, StartupOptions, check_admin_seed};
use coffer_postgres::{PgOptions, PgStore};
use coffer_sqlite::SqliteStore;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

/// The file, in the data dir, that holds the first admin key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Options of `coffer serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory: the SQLite file, admin.key and the lock (created 0700; refused if
    /// other users can read or enter it).
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "./.coffer")]
    data_dir: PathBuf,
    /// Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (a name is resolved at
    /// start-up and the first of its addresses that can be bound is used).
    #[arg(long, env = "COFFER_LISTEN", default_value = "127.0.0.1:8720", value_parser = ListenAddr::parse)]
    listen: ListenAddr,
    /// PostgreSQL catalog, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]`:
    /// any number of nodes may share it. Unset: the embedded SQLite file in --data-dir.
    #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PostgreSQL connections this node opens at most; a request that waits longer than
    /// --database-wait-ms for one is answered 503 `overloaded`.
    #[arg(long, env = "COFFER_DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    database_max_connections: u32,
    /// Milliseconds a request waits for a free PostgreSQL connection.
    #[arg(long, env = "COFFER_DATABASE_WAIT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    database_wait_ms: u64,
    /// Milliseconds one PostgreSQL statement may run (its `statement_timeout`); past it the
    /// request is answered 503 `backend_unavailable` and changes nothing.
    #[arg(long, env = "COFFER_DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    database_statement_timeout_ms: u64,
    /// Refuse to start without an encryption key (no dev mode).
    #[arg(long, env = "COFFER_REQUIRE_ENCRYPTION", value_parser = clap::builder::FalseyValueParser::new())]
    require_encryption: bool,
    /// Start even if stored values use a key version the keyring no longer has; those
    /// values stay listed but become unreadable until the key is back or they are rewritten.
    #[arg(long, env = "COFFER_ALLOW_UNREADABLE", value_parser = clap::builder::FalseyValueParser::new())]
    allow_unreadable: bool,
    /// Start although other users can read or enter the data dir (a warning instead of a
    /// refusal).
    #[arg(long, env = "COFFER_ALLOW_SHARED_DATA_DIR", value_parser = clap::builder::FalseyValueParser::new())]
    allow_shared_data_dir: bool,
    /// Refuse to start when the configured secrets backend cannot be used.
    #[arg(long, env = "COFFER_REQUIRE_BACKEND", value_parser = clap::builder::FalseyValueParser::new())]
    require_backend: bool,
    /// Open connections at most; one more is answered 503 `overloaded` and closed (lowered
    /// to fit the open-file limit, with a warning).
    #[arg(long, env = "COFFER_MAX_CONNECTIONS", default_value_t = coffer_api::ServeOptions::DEFAULT.max_connections as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Open connections from one client address at most (default: no limit besides
    /// --max-connections); past it that address's next connection gets 503 `overloaded`.
    #[arg(long, env = "COFFER_MAX_CONNECTIONS_PER_IP", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections_per_ip: Option<u32>,
    /// Seconds a request body may take to arrive once the server reads it (408 after).
    #[arg(long, env = "COFFER_BODY_TIMEOUT_SECS", default_value_t = coffer_api::ServeOptions::DEFAULT.body_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout_secs: u64,
    /// MiB of request bodies held in memory at once across all requests (503 past it).
    #[arg(long, env = "COFFER_BODY_MEMORY_MIB", default_value_t = (coffer_api::ServeOptions::DEFAULT.body_budget_bytes >> 20) as u64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    body_memory_mib: u64,
    /// Publish every event to this NATS server's JetStream (the outbox relay), e.g.
    /// nats://127.0.0.1:4222. Writes never wait on NATS.
    #[arg(long, env = "COFFER_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Do not publish events to NATS although COFFER_NATS_URL is set (a node that uses
    /// NATS for secret values only; one node of a cluster should relay).
    #[arg(long, env = "COFFER_NO_NATS_RELAY", value_parser = clap::builder::FalseyValueParser::new())]
    no_nats_relay: bool,
    /// Prefix for the NATS subjects: `coffer` publishes `coffer.system.secret.A.created`.
    #[arg(long, env = "COFFER_NATS_SUBJECT_PREFIX")]
    nats_subject_prefix: Option<String>,
    /// The JetStream stream capturing `[prefix.]system.>`, created if missing.
    #[arg(long, env = "COFFER_NATS_STREAM", default_value = coffer_nats::DEFAULT_STREAM)]
    nats_stream: String,
    /// Hosts push functions may deliver to besides this machine, comma-separated: exact
    /// names or addresses, or `*.example.com`. A push function hands its declared secrets
    /// to its URL: this list, not the API, decides where they may go.
    #[arg(long, env = "COFFER_PUSH_ALLOWED_HOSTS", value_delimiter = ',')]
    push_allowed_hosts: Vec<String>,
    /// Accept `http://` push URLs to allowed hosts (by default `https://` only; `http://`
    /// to 127.0.0.1, [::1] or localhost is always accepted).
    #[arg(long, env = "COFFER_ALLOW_HTTP_TARGETS", value_parser = clap::builder::FalseyValueParser::new())]
    allow_http_targets: bool,
    /// Days a run is kept after it ended (succeeded or failed); older ones are deleted
    /// hourly (the audit log keeps their history). 0 keeps them forever.
    #[arg(long, env = "COFFER_RUN_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    run_retention_days: u32,
    /// Push deliveries in flight at once on this node (all functions together).
    #[arg(long, env = "COFFER_PUSH_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    push_concurrency: u32,
}

impl ServeArgs {
    /// The connection and body limits, the connection cap fitted to the open-file limit.
    fn serve_options(&self, open_files: Option<u64>) -> coffer_api::ServeOptions {
        // Descriptors the server needs besides client sockets: the database, its log and
        // index and the read pool, the listener, the runtime's own, a margin (64), and the
        // sockets of connections being refused over the cap.
        const RESERVED_FILES: u64 = 64 + coffer_api::MAX_REFUSING as u64;
        let mut max_connections = self.max_connections as usize;
        if let Some(limit) = open_files {
            let fits = limit.saturating_sub(RESERVED_FILES).max(1) as usize;
            if fits < max_connections {
                tracing::warn!(
                    requested = max_connections,
                    allowed = fits,
                    "the open-file limit is too low for --max-connections; lowering it (raise the hard limit: ulimit -Hn)"
                );
                max_connections = fits;
            }
        }
        coffer_api::ServeOptions {
            max_connections,
            max_connections_per_ip: self.max_connections_per_ip.map(|n| n as usize),
            body_read_timeout: std::time::Duration::from_secs(self.body_timeout_secs),
            body_budget_bytes: (self.body_memory_mib as usize) << 20,
            ..coffer_api::ServeOptions::DEFAULT
        }
    }
}

/// Runs the server until a shutdown signal.
///
/// Order matters: everything that can refuse without side effects (settings, keys, the
/// listen address) comes before the data dir is touched, so a start that fails leaves no
/// half-bootstrapped data dir and shows no admin key that no server will ever accept.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    restrict_umask();
    let data_dir = args.data_dir.clone();
    init_logging();
    let open_files = raise_open_file_limit();
    let (backend, backend_note) =
        crate::backend::choose(|k| std::env::var(k).ok(), args.require_backend)?;

    let relay_url = args
        .nats_url
        .as_deref()
        .filter(|u| !u.is_empty() && !args.no_nats_relay);
    let relay = match relay_url {
        Some(url) => Some(
            coffer_nats::RelayOptions::new(
                url,
                args.nats_subject_prefix.as_deref(),
                Some(&args.nats_stream),
            )
            .context("invalid NATS relay settings")?,
        ),
        None => None,
    };

    let sources = key_sources()?;
    let keyring = load_keyring(&sources).context("invalid key configuration")?;
    if keyring.is_none() && args.require_encryption {
        // Start-up refuses these too, but only after creating the data dir.
        return Err(StartupError::EncryptionRequired.into());
    }
    let admin_key_seed = admin_key_seed()?;
    if let Some(seed) = &admin_key_seed {
        check_admin_seed(seed)?;
    }
    // Installed before the address is announced: a SIGTERM right after start-up is a
    // clean stop, not the default action's kill.
    let shutdown = shutdown_signal();
    let listener = bind(&args.listen).await?;
    for warning in key_warnings(&sources) {
        tracing::warn!("{warning}");
    }
    if keyring.is_none() {
        warn_dev_mode();
    }
    create_private_dir(&data_dir)?;
    check_private_dir(&data_dir, args.allow_shared_data_dir)?;
    let _lock = lock_data_dir(&data_dir)?;
    restrict_existing_files(&data_dir)?;
    let store = Store::open(&args, &data_dir).await?;
    let secrets = match crate::backend::connect(backend).await? {
        Some(values) => Arc::new(coffer_store::ExternalSecrets::new(store.secrets(), values)),
        None => store.secrets(),
    };
    let options = StartupOptions {
        catalog: store.catalog(),
        secrets,
        backend_note,
        keyring,
        require_encryption: args.require_encryption,
        admin_key_seed,
        allow_unreadable: args.allow_unreadable,
    };
    let (mut coffer, report) = options.start().await?;
    coffer.set_runtime_options(coffer_core::runtime::RuntimeOptions {
        push_allowed_hosts: args
            .push_allowed_hosts
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
        allow_http_targets: args.allow_http_targets,
        push_concurrency: args.push_concurrency as usize,
    });
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
    if report.migrated_signing_secrets > 0 {
        tracing::info!(
            signing_secrets = report.migrated_signing_secrets,
            "encrypted function signing secrets left unencrypted by dev mode"
        );
    }
    // The plaintext just replaced is zeroed in coffer.db, but older page images still
    // hold it in coffer.db-wal until a checkpoint truncates the log.
    store.checkpoint("after start-up");
    if report.unreadable > 0 {
        tracing::warn!(
            values = report.unreadable,
            "stored values are known to be unreadable with the configured keys; they are listed as unreadable (writing one again repairs it; `coffer keys verify` names them)"
        );
    }
    if report.unreadable_signing_secrets > 0 {
        tracing::warn!(
            signing_secrets = report.unreadable_signing_secrets,
            "function signing secrets are sealed under a key version the keyring lacks: push deliveries of their functions fail until their signing secret is rotated (`coffer keys verify` names them)"
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

    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "listening beyond loopback without TLS: API keys travel in clear text unless a TLS-terminating proxy is in front"
        );
    }
    // Read-only, but a start that bootstrapped must not fail now: a catalog read that
    // fails here only costs the log line its details.
    match coffer.status().await {
        Ok(status) => {
            let (encryption, current_key_version) = match status.encryption {
                Encryption::Enabled {
                    current_key_version,
                } => ("enabled", Some(current_key_version)),
                Encryption::Disabled => ("disabled", None),
            };
            tracing::info!(
                %addr,
                data_dir = %data_dir.display(),
                backend = %status.backend,
                encryption = %encryption,
                current_key_version,
                "coffer is listening"
            );
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "coffer is listening; its status cannot be read")
        }
    }
    let coffer = Arc::new(coffer);
    let counters = tokio::spawn(flush_counters_periodically(coffer.clone()));
    let pruner = (args.run_retention_days > 0).then(|| {
        let retention = std::time::Duration::from_secs(u64::from(args.run_retention_days) * 86_400);
        tokio::spawn(prune_runs_periodically(coffer.clone(), retention))
    });
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = relay.map(|options| {
        tracing::info!(stream = %options.stream, "publishing events to NATS JetStream");
        let stopped = async move {
            let _ = relay_stopped.await;
        };
        tokio::spawn(coffer_nats::run(store.journal(), options, stopped))
    });
    let (stop_push, push_stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(coffer_core::runtime::push::run(
        coffer.clone(),
        async move {
            let _ = push_stopped.await;
        },
    ));
    // Orchestration runs: this node takes the steps of the runs it leases.
    let (stop_flows, flows_stopped) = tokio::sync::oneshot::channel::<()>();
    let machine = tokio::spawn(coffer_core::orchestrations::engine::run(
        coffer.clone(),
        async move {
            let _ = flows_stopped.await;
        },
    ));
    let options = args.serve_options(open_files);
    coffer_api::serve_with(listener, coffer.clone() as Arc<Coffer>, shutdown, options).await?;
    counters.abort();
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    let _ = stop_flows.send(());
    let _ = machine.await;
    let _ = stop_push.send(());
    let _ = dispatcher.await;
    let _ = stop_relay.send(());
    if let Some(relay) = relay
        && tokio::time::timeout(std::time::Duration::from_secs(10), relay)
            .await
            .is_err()
    {
        tracing::warn!("the NATS relay did not stop within 10 s");
    }
    if let Err(e) = coffer.flush_counters().await {
        tracing::error!(error = %e, "cannot record encryption counts");
    }
    store.checkpoint("at shutdown");
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `--listen`: a host (an IP address or a name to resolve) and a port.
#[derive(Clone, Debug)]
struct ListenAddr {
    host: String,
    port: u16,
}

impl ListenAddr {
    fn parse(text: &str) -> Result<ListenAddr, String> {
        const EXPECTED: &str =
            "expected HOST:PORT, e.g. 127.0.0.1:8720, localhost:8720 or [::1]:8720";
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").ok_or(EXPECTED)?,
            None => {
                let (host, port) = text.rsplit_once(':').ok_or(EXPECTED)?;
                if host.contains(':') {
                    return Err(format!("an IPv6 address goes in brackets: {EXPECTED}"));
                }
                (host, port)
            }
        };
        if host.is_empty() {
            return Err(format!("the host is missing: {EXPECTED}"));
        }
        let port = port
            .parse()
            .map_err(|_| format!("the port must be a number from 0 to 65535: {EXPECTED}"))?;
        Ok(ListenAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Resolves `listen` and binds the first of its addresses that works.
async fn bind(listen: &ListenAddr) -> anyhow::Result<TcpListener> {
    let addrs: Vec<_> = tokio::net::lookup_host((listen.host.as_str(), listen.port))
        .await
        .with_context(|| format!("cannot resolve the listen address {listen}"))?
        .collect();
    let mut first_failure = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot listen here; trying the next address");
                first_failure.get_or_insert((addr, e));
            }
        }
    }
    let Some((addr, error)) = first_failure else {
        bail!("the listen address {listen} resolves to no address");
    };
    let named = if addr.to_string() == listen.to_string() {
        String::new()
    } else {
        format!(" ({listen})")
    };
    if error.kind() == std::io::ErrorKind::AddrInUse {
        bail!(
            "cannot listen on {addr}{named}: the address is already in use (another coffer serve?); choose another with --listen or COFFER_LISTEN"
        );
    }
    Err(error).with_context(|| format!("cannot listen on {addr}{named}"))
}

/// Files the server creates (the database and its log, the lock, admin.key) are for its
/// own user only, whatever umask it was started with.
fn restrict_umask() {
    use rustix::fs::Mode;
    rustix::process::umask(Mode::RWXG | Mode::RWXO);
}

/// Each connection holds a descriptor; the usual soft limit of 1024 is reached long before
/// the machine's limits are. The hard limit is what the operator allowed.
/// Returns the soft limit now in force (`None`: unlimited).
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = Rlimit {
            current: before.maximum,
            ..before
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(
                error = %e,
                soft = %limit_text(before.current),
                hard = %limit_text(before.maximum),
                "cannot raise the open-file limit to its hard limit"
            );
        }
    }
    let now = getrlimit(Resource::Nofile);
    tracing::info!(
        soft = %limit_text(now.current),
        hard = %limit_text(now.maximum),
        "open-file limit"
    );
    now.current
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

/// Truncates the SQLite log; a failure leaves the server running but says what it means.
/// The catalog this node runs on: the embedded SQLite file, or a PostgreSQL database that
/// other nodes may share. Both hold the secret values too (the `db` backend).
enum Store {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl Store {
    async fn open(args: &ServeArgs, data_dir: &Path) -> anyhow::Result<Store> {
        let Some(url) = args.database_url.as_deref().filter(|u| !u.is_empty()) else {
            let store = SqliteStore::open(data_dir).context("cannot open the embedded store")?;
            return Ok(Store::Sqlite(Arc::new(store)));
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "COFFER_DATABASE_URL / --database-url must start with postgres:// or postgresql://"
            );
        }
        let options = PgOptions {
            max_connections: args.database_max_connections,
            acquire_timeout: std::time::Duration::from_millis(args.database_wait_ms),
            statement_timeout: std::time::Duration::from_millis(args.database_statement_timeout_ms),
            // A stalled node's open transaction is ended as soon as a statement would be.
            idle_in_transaction_timeout: std::time::Duration::from_millis(
                args.database_statement_timeout_ms,
            ),
            ..PgOptions::default()
        };
        // The URL may hold a password: never in a message.
        let store = PgStore::connect(url, options)
            .await
            .context("cannot open the PostgreSQL catalog (COFFER_DATABASE_URL)")?;
        Ok(Store::Postgres(Arc::new(store)))
    }

    fn catalog(&self) -> Arc<dyn coffer_store::Catalog> {
        match self {
            Store::Sqlite(s) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    fn secrets(&self) -> Arc<dyn coffer_store::SecretStore> {
        match self {
            Store::Sqlite(s) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    fn journal(&self) -> Arc<dyn coffer_store::JournalStore> {
        match self {
            Store::Sqlite(s) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// SQLite only: moves the write-ahead log into the database and truncates it (see
    /// `SqliteStore::checkpoint`). PostgreSQL keeps its own log.
    fn checkpoint(&self, when: &str) {
        let Store::Sqlite(store) = self else { return };
        match store.checkpoint() {
            Ok(()) => tracing::debug!("checkpointed and truncated coffer.db-wal {when}"),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot checkpoint coffer.db-wal {when}: contents that writes replaced or deleted can stay in it until the next checkpoint"
            ),
        }
    }
}

/// Encryption counts reach the catalog every few seconds (and at shutdown): the nonce
/// budget is a lifetime figure, and a few seconds lost to a crash do not matter against 2^31.
/// Deletes runs past their retention once an hour (first a minute after start). With
/// several nodes each prunes; a pruning skips rows another one holds.
async fn prune_runs_periodically(coffer: Arc<Coffer>, retention: std::time::Duration) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(3600),
    );
    loop {
        tick.tick().await;
        match coffer.prune_runs(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "deleted runs past their retention"),
            Err(e) => tracing::warn!(error = %e, "cannot prune runs past their retention"),
        }
    }
}

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

/// The key settings. A value that is not UTF-8 is refused, never silently taken as unset
/// (that would start dev mode), and the message names the variable only.
pub(crate) fn key_sources() -> anyhow::Result<KeySources> {
    let text = |name: &str| -> anyhow::Result<Option<SecretString>> {
        match std::env::var_os(name).map(std::ffi::OsString::into_string) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(SecretString::from(value))),
            Some(Err(_)) => bail!("{name} is not valid UTF-8"),
        }
    };
    Ok(KeySources {
        secret_keys: text("COFFER_SECRET_KEYS")?,
        secret_keys_file: std::env::var_os("COFFER_SECRET_KEYS_FILE").map(PathBuf::from),
        master_key: text("COFFER_MASTER_KEY")?,
    })
}

/// `COFFER_ADMIN_KEY`; empty counts as unset, like the key variables.
fn admin_key_seed() -> anyhow::Result<Option<SecretString>> {
    match std::env::var_os("COFFER_ADMIN_KEY").map(std::ffi::OsString::into_string) {
        None => Ok(None),
        Some(Ok(seed)) if seed.is_empty() => Ok(None),
        Some(Ok(seed)) => Ok(Some(SecretString::from(seed))),
        Some(Err(_)) => Err(StartupError::BadAdminSeed.into()),
    }
}

fn warn_dev_mode() {
    let bar = "!".repeat(78);
    tracing::warn!(
        "\n{bar}\n!! DEV MODE: no encryption key is set. Secret values are stored UNENCRYPTED.\n\
         !! Set COFFER_MASTER_KEY (openssl rand -hex 32) or COFFER_SECRET_KEYS before real use.\n{bar}"
    );
}

fn init_logging() {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Never below info, whatever COFFER_LOG asks: async-nats logs server addresses (with any
    // credentials in the URL) at debug level, and rmcp whole MCP messages (a set_secret's
    // value, an orchestration's encryptedParams) and HTTP requests (their Authorization).
    // A directive added to the EnvFilter would not do: its most specific directive wins, so
    // `COFFER_LOG=rmcp::service=debug` would lift it. This is a second filter on the layer,
    // and an event must pass both.
    let quiet = filter_fn(|meta| {
        let target = meta.target();
        !((target.starts_with("rmcp") || target.starts_with("async_nats"))
            && *meta.level() > tracing::Level::INFO)
    });
    // Colour only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(filter)
        .with_filter(quiet);
    tracing_subscriber::registry().with(layer).init();
}

/// Resolves at SIGTERM or SIGINT. Both handlers are installed when this is called, not when
/// the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .inspect_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
            .ok()
    };
    let received = |s: Option<Signal>| async move {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let term = received(listen(SignalKind::terminate(), "SIGTERM"));
    let int = received(listen(SignalKind::interrupt(), "SIGINT"));
    async move {
        tokio::select! {
            () = term => tracing::info!("SIGTERM: finishing in-flight requests"),
            () = int => tracing::info!("SIGINT: finishing in-flight requests"),
        }
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
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("coffer.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
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

/// The data dir holds the database (plaintext in dev mode), its log and admin.key; other
/// users must not even enter it. Refused unless the operator said otherwise.
fn check_private_dir(dir: &Path, allow_shared: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    if allow_shared {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = %format!("{mode:03o}"),
            "the data dir is accessible to other users (allowed by --allow-shared-data-dir); chmod 700 it"
        );
        return Ok(());
    }
    bail!(
        "the data dir {} is accessible to other users (mode {mode:03o}) and holds the database and admin.key: \
         run `chmod 700 {}`, or start with --allow-shared-data-dir (COFFER_ALLOW_SHARED_DATA_DIR=1) to accept that",
        dir.display(),
        dir.display()
    )
}

/// Files an older build (or a copy) left readable by others are made private; SQLite
/// gives `coffer.db-wal` and `coffer.db-shm` the mode of `coffer.db`, so this covers them.
/// Only regular files directly in the data dir; symbolic links are left alone.
fn restrict_existing_files(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
            tracing::info!(
                file = %path.display(),
                was = %format!("{mode:03o}"),
                "made a file in the data dir private (0600)"
            );
        }
    }
    Ok(())
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
