//! Secret values in NATS JetStream KV: a [`ValueStore`] for
//! `COFFER_SECRETS_BACKEND=nats`.
//!
//! ## Layout
//!
//! - **One bucket per environment incarnation**: `<prefix>_<environment id>`, e.g.
//!   `coffer_env_0123456789abcdef`, or `coffer_env0_prod` for an environment that existed
//!   before incarnations. Both id forms use only `[a-z0-9_-]`, which bucket names allow, so
//!   the id is used verbatim and two incarnations never share a bucket. A bucket is created
//!   (file storage, the configured history and replicas) by the first write into it, and
//!   deleted whole when its environment is purged.
//! - **Key = secret name**, verbatim: a name is `[A-Za-z_][A-Za-z0-9_]*`, a subset of the KV
//!   key alphabet `[-/_=.A-Za-z0-9]` that never starts or ends with `.`, so no encoding is
//!   needed and keys read back as the names they are.
//! - **Version = KV revision** (the stream sequence of the message). Sequences are shared by
//!   every key of a bucket, so a read by number checks that the message found is this key's.
//!
//! ## Entry format, version 1
//!
//! Each KV value is one JSON object (a documented, versioned format that other clients and
//! a migration may read):
//!
//! ```text
//! {"format":1,"kind":"sealed","keyVersion":3,"value":"<iv:ciphertext:tag>",
//!  "revision":2,"createdAt":1767225600000,"updatedAt":1767225601000,
//!  "writeId":"9f86d081884c7d65"}
//! ```
//!
//! - `format`: `1`; a reader refuses any other number as corrupt rather than guess.
//! - `kind`: `sealed` (`value` is the blob sealed under `keyVersion`, AES-256-GCM with the
//!   catalog's associated data; NATS never sees plaintext) or `plain` (dev mode without a
//!   key: `value` is the plaintext and `keyVersion` is `0`).
//! - `revision`: Coffer's revision of the secret (1, 2, 3 …), not the KV revision.
//! - `createdAt`, `updatedAt`: milliseconds since the Unix epoch, UTC.
//! - `writeId`: the write that stored it; the catalog's reference names it too.
//!
//! ## Bucket handles
//!
//! A bucket's handle (its stream) is kept once asked of the server, for at most
//! [`BUCKET_CACHE_CAPACITY`] buckets (beyond that an arbitrary one is dropped), so a read
//! or a listing is one round trip, not two. Another node may delete the bucket (a purged
//! environment): a read through a kept handle then fails at once ("stream not found"),
//! drops the handle and asks the server again, so it answers `None` (or what a bucket
//! created again holds now). Writes and removals ask the server for the bucket first, as
//! before (a write creates a missing bucket): they publish, and a publish into a deleted
//! bucket is not refused but left unanswered until the timeout.
//!
//! ## Failure
//!
//! Every call is bounded by [`NatsValueOptions::timeout`] as a whole and answers
//! [`StoreError::Unavailable`] when NATS cannot be reached (immediately while the client
//! knows it is disconnected; the client reconnects by itself). An entry that does not parse
//! is [`StoreError::Corrupt`]. No message ever holds a value or a credential.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, ErrorCode, kv, stream::Stream};
use async_trait::async_trait;
use coffer_crypto::KeyVersion;
use coffer_store::{
    Environment, Revision, SecretName, StoreError, StoreResult, StoredValue, Timestamp, ValueEntry,
    ValueExpect, ValueStore, ValueVersion,
};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The default bound on every request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default number of versions a bucket keeps per key.
pub const DEFAULT_HISTORY: i64 = 64;
/// The default bucket name prefix.
pub const DEFAULT_BUCKET_PREFIX: &str = "coffer";
/// The most bucket handles a [`NatsValues`] keeps (see the module documentation).
pub const BUCKET_CACHE_CAPACITY: usize = 4096;
/// The versions a key may keep: at least 2 (a read of the version the catalog refers to
/// must survive one newer write that has not committed yet), at most JetStream KV's 64.
pub const HISTORY_RANGE: std::ops::RangeInclusive<i64> = 2..=64;

/// Where the NATS value store is and how to reach it. `Debug` shows no credential.
#[derive(Clone)]
pub struct NatsValueOptions {
    /// The NATS server(s) (`nats://host:4222`, or several separated by `,`). May hold
    /// credentials (`nats://user:pass@host`), so it is never shown with them.
    pub url: String,
    /// A `.creds` file (user JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// A token.
    pub token: Option<SecretString>,
    /// A user name (with [`NatsValueOptions::password`]).
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<SecretString>,
    /// A PEM file of CA certificates to trust for the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), with [`NatsValueOptions::tls_key`].
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub require_tls: bool,
    /// The bound on each call, connecting included.
    pub timeout: Duration,
    /// The versions each key keeps ([`HISTORY_RANGE`]).
    pub history: i64,
    /// The replicas of each bucket (1 to 5).
    pub replicas: usize,
    /// Buckets are `<prefix>_<environment id>`: letters, digits, `-` and `_`, 1-32.
    pub bucket_prefix: String,
}

impl NatsValueOptions {
    /// The defaults for everything but the URL: no credentials, no TLS settings,
    /// [`DEFAULT_TIMEOUT`], [`DEFAULT_HISTORY`], 1 replica, [`DEFAULT_BUCKET_PREFIX`].
    pub fn new(url: &str) -> Self {
        NatsValueOptions {
            url: url.trim().to_owned(),
            credentials_file: None,
            token: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            timeout: DEFAULT_TIMEOUT,
            history: DEFAULT_HISTORY,
            replicas: 1,
            bucket_prefix: DEFAULT_BUCKET_PREFIX.to_owned(),
        }
    }

    /// The options the `COFFER_NATS_*` variables give (`get` reads one; an empty value is
    /// unset): `Ok(None)` without `COFFER_NATS_URL`. An error names the variable and the
    /// rule, never the value.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let Some(url) = var("COFFER_NATS_URL") else {
            return Ok(None);
        };
        let mut o = NatsValueOptions::new(&url);
        o.credentials_file = var("COFFER_NATS_CREDENTIALS_FILE").map(PathBuf::from);
        o.token = var("COFFER_NATS_TOKEN").map(SecretString::from);
        o.user = var("COFFER_NATS_USER");
        o.password = var("COFFER_NATS_PASSWORD").map(SecretString::from);
        o.tls_ca = var("COFFER_NATS_TLS_CA").map(PathBuf::from);
        o.tls_cert = var("COFFER_NATS_TLS_CERT").map(PathBuf::from);
        o.tls_key = var("COFFER_NATS_TLS_KEY").map(PathBuf::from);
        if let Some(v) = var("COFFER_NATS_REQUIRE_TLS") {
            o.require_tls = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err("COFFER_NATS_REQUIRE_TLS must be true or false".into()),
            };
        }
        if let Some(v) = var("COFFER_NATS_TIMEOUT_MS") {
            let ms: u64 = v.trim().parse().map_err(|_| {
                "COFFER_NATS_TIMEOUT_MS must be a whole number of milliseconds".to_owned()
            })?;
            o.timeout = Duration::from_millis(ms);
        }
        if let Some(v) = var("COFFER_NATS_KV_HISTORY") {
            o.history = v
                .trim()
                .parse()
                .map_err(|_| "COFFER_NATS_KV_HISTORY must be a whole number".to_owned())?;
        }
        if let Some(v) = var("COFFER_NATS_KV_REPLICAS") {
            o.replicas = v
                .trim()
                .parse()
                .map_err(|_| "COFFER_NATS_KV_REPLICAS must be a whole number".to_owned())?;
        }
        o.check().map_err(|e| e.env_message())?;
        Ok(Some(o))
    }

    /// Checks the options make sense together.
    pub fn check(&self) -> Result<(), OptionsError> {
        use OptionsError as E;
        if self.url.is_empty() {
            return Err(E::NoUrl);
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            return Err(E::Timeout);
        }
        if !HISTORY_RANGE.contains(&self.history) {
            return Err(E::History);
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(E::Replicas);
        }
        let prefix_ok = (1..=32).contains(&self.bucket_prefix.len())
            && self
                .bucket_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !prefix_ok {
            return Err(E::BucketPrefix);
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(E::UserWithoutPassword);
        }
        let methods = usize::from(self.token.is_some())
            + usize::from(self.user.is_some())
            + usize::from(self.credentials_file.is_some());
        if methods > 1 {
            return Err(E::SeveralAuthMethods);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(E::CertWithoutKey);
        }
        Ok(())
    }

    /// Every credential string the options hold, to be cut out of any message that might
    /// echo one (a URL's user info included).
    fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &self.token {
            out.push(t.expose_secret().to_owned());
        }
        if let Some(p) = &self.password {
            out.push(p.expose_secret().to_owned());
        }
        for server in self.url.split(',') {
            if let Some((userinfo, _)) = server
                .split_once("://")
                .map_or(server, |(_, rest)| rest)
                .rsplit_once('@')
            {
                // `user:password`, or a token alone.
                out.push(userinfo.to_owned());
                if let Some((_, password)) = userinfo.split_once(':') {
                    out.push(password.to_owned());
                }
            }
        }
        out.retain(|s| !s.is_empty());
        // Longest first, so a password inside a URL goes with the URL's user info.
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }
}

impl fmt::Debug for NatsValueOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("NatsValueOptions")
            .field("url", &redact(&self.url, &self.secrets()))
            .field("credentials_file", &self.credentials_file)
            .field("token", &redacted(self.token.is_some()))
            .field("user", &self.user)
            .field("password", &redacted(self.password.is_some()))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .field("timeout", &self.timeout)
            .field("history", &self.history)
            .field("replicas", &self.replicas)
            .field("bucket_prefix", &self.bucket_prefix)
            .finish()
    }
}

/// Options that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// No URL.
    #[error("the NATS URL is empty")]
    NoUrl,
    /// A zero or absurd timeout.
    #[error("the NATS timeout must be between 1 ms and 10 minutes")]
    Timeout,
    /// History outside [`HISTORY_RANGE`].
    #[error("the NATS KV history must be between 2 and 64")]
    History,
    /// Replicas outside 1-5.
    #[error("the NATS KV replicas must be between 1 and 5")]
    Replicas,
    /// A prefix that cannot start a bucket name.
    #[error("the NATS bucket prefix must be 1-32 letters, digits, '-' and '_'")]
    BucketPrefix,
    /// A user without a password or the other way round.
    #[error("a NATS user needs a password and a password needs a user")]
    UserWithoutPassword,
    /// More than one of token, user and password, credentials file.
    #[error("use one of a NATS token, a user and password, or a credentials file")]
    SeveralAuthMethods,
    /// A client certificate without its key or the other way round.
    #[error("a NATS TLS client certificate needs its key and a key needs its certificate")]
    CertWithoutKey,
}

impl OptionsError {
    /// The message naming the environment variables concerned.
    fn env_message(self) -> String {
        let vars = match self {
            OptionsError::NoUrl => "COFFER_NATS_URL",
            OptionsError::Timeout => "COFFER_NATS_TIMEOUT_MS",
            OptionsError::History => "COFFER_NATS_KV_HISTORY",
            OptionsError::Replicas => "COFFER_NATS_KV_REPLICAS",
            OptionsError::BucketPrefix => "the bucket prefix",
            OptionsError::UserWithoutPassword => "COFFER_NATS_USER / COFFER_NATS_PASSWORD",
            OptionsError::SeveralAuthMethods => {
                "COFFER_NATS_TOKEN / COFFER_NATS_USER / COFFER_NATS_CREDENTIALS_FILE"
            }
            OptionsError::CertWithoutKey => "COFFER_NATS_TLS_CERT / COFFER_NATS_TLS_KEY",
        };
        format!("{vars}: {self}")
    }
}

/// Secret values in NATS JetStream KV, a bucket per environment incarnation. See the
/// module documentation for the layout and the entry format.
pub struct NatsValues {
    client: async_nats::Client,
    js: jetstream::Context,
    timeout: Duration,
    history: i64,
    replicas: usize,
    bucket_prefix: String,
    /// Credentials to cut out of any error message.
    secrets: Vec<String>,
    /// Handles of buckets seen, so that a call need not ask for the bucket's stream first.
    buckets: BucketCache<Arc<kv::Store>>,
}

impl fmt::Debug for NatsValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsValues")
            .field("timeout", &self.timeout)
            .field("history", &self.history)
            .field("replicas", &self.replicas)
            .field("bucket_prefix", &self.bucket_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsValues {
    /// Connects once, bounded by the timeout (the caller decides whether to try again);
    /// once connected, the client reconnects by itself after an outage, for ever, while
    /// calls answer [`StoreError::Unavailable`].
    pub async fn connect(opts: NatsValueOptions) -> StoreResult<NatsValues> {
        opts.check()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let secrets = opts.secrets();
        let fail = |what: &str, e: &dyn fmt::Display| {
            StoreError::Unavailable(redact(
                &format!("cannot connect to NATS: {what}{e}"),
                &secrets,
            ))
        };
        let mut connect = match &opts.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| fail("cannot read the credentials file: ", &e))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(token) = &opts.token {
            connect = connect.token(token.expose_secret().to_owned());
        }
        if let (Some(user), Some(password)) = (&opts.user, &opts.password) {
            connect = connect.user_and_password(user.clone(), password.expose_secret().to_owned());
        }
        if let Some(ca) = &opts.tls_ca {
            connect = connect.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        let connect = connect
            .name("coffer-values")
            .require_tls(opts.require_tls)
            .connection_timeout(opts.timeout)
            .request_timeout(Some(opts.timeout))
            // Unlimited reconnects, at most `timeout` apart (never longer than 4 s, the
            // client's own cap), so that service resumes soon after NATS does.
            .max_reconnects(None)
            .reconnect_delay_callback({
                let cap = opts.timeout.min(Duration::from_secs(4));
                move |attempt| {
                    let exp = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
                    Duration::from_millis(50u64.saturating_mul(2u64.saturating_pow(exp.min(16))))
                        .min(cap)
                }
            });
        let client =
            match tokio::time::timeout(opts.timeout, connect.connect(opts.url.as_str())).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(fail("", &e)),
                Err(_) => {
                    return Err(fail(
                        "",
                        &format_args!("no answer within {} ms", opts.timeout.as_millis()),
                    ));
                }
            };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(opts.timeout);
        Ok(NatsValues {
            client,
            js,
            timeout: opts.timeout,
            history: opts.history,
            replicas: opts.replicas,
            bucket_prefix: opts.bucket_prefix,
            secrets,
            buckets: BucketCache::new(BUCKET_CACHE_CAPACITY),
        })
    }

    /// The bucket holding the values of `env`'s incarnation.
    pub fn bucket_name(&self, env: &Environment) -> String {
        format!("{}_{}", self.bucket_prefix, env.id.as_str())
    }

    /// Runs one call, failing fast while disconnected and bounded by the timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        if !matches!(self.client.connection_state(), State::Connected) {
            return Err(StoreError::Unavailable(format!(
                "NATS is not connected ({what})"
            )));
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "NATS did not answer within {} ms ({what})",
                self.timeout.as_millis()
            ))),
        }
    }

    /// A transport or server failure, with any credential cut out.
    fn unavailable(&self, what: &str, e: &dyn fmt::Display) -> StoreError {
        StoreError::Unavailable(redact(&format!("NATS {what}: {e}"), &self.secrets))
    }

    /// Runs `op` on the bucket's handle (`T::default()` when the bucket does not exist).
    /// A kept handle that fails as unavailable is dropped, and `op` runs once more on the
    /// bucket as the server has it now: the bucket may have been deleted by another node.
    async fn on_bucket<T, F, Fut>(&self, bucket: &str, op: F) -> StoreResult<T>
    where
        T: Default,
        F: Fn(Arc<kv::Store>) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        if let Some(store) = self.buckets.get(bucket) {
            match op(store).await {
                Err(StoreError::Unavailable(_)) => self.buckets.forget(bucket),
                done => return done,
            }
        }
        match self.fetch_bucket(bucket).await? {
            Some(store) => op(store).await,
            None => Ok(T::default()),
        }
    }

    /// The bucket's stream as a KV store, asked of the server (and kept), or `None` when
    /// the bucket does not exist.
    async fn fetch_bucket(&self, bucket: &str) -> StoreResult<Option<Arc<kv::Store>>> {
        let stream_name = format!("KV_{bucket}");
        match self.js.get_stream(&stream_name).await {
            Ok(stream) => Ok(Some(
                self.buckets
                    .keep(bucket, Arc::new(kv_store(bucket, stream))),
            )),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(self.unavailable(&format!("cannot read bucket {bucket}"), &e)),
            },
        }
    }

    /// Writes into the bucket with `op`, the bucket asked of the server (and created if
    /// missing) first, never taken from the kept handles: a publish into the subjects of a
    /// bucket another node deleted is not refused but goes unanswered until the timeout
    /// (nats-server 2.9), so a stale handle would turn a write that creates the bucket again
    /// into an outage. Asking first keeps today's behaviour, at one more round trip.
    async fn write_in_bucket<T, F, Fut>(&self, bucket: &str, op: F) -> StoreResult<T>
    where
        F: FnOnce(Arc<kv::Store>) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        op(self.bucket_for_write(bucket).await?).await
    }

    /// The bucket, asked of the server and created if missing. Two creators racing both
    /// succeed: creating a bucket that exists with the same settings succeeds, and with
    /// other settings (an operator's or an earlier configuration's) the existing bucket is
    /// used as it is.
    async fn bucket_for_write(&self, bucket: &str) -> StoreResult<Arc<kv::Store>> {
        if let Some(store) = self.fetch_bucket(bucket).await? {
            return Ok(store);
        }
        // The stream `create_key_value` would make (it first asks for the account's info,
        // whose shape varies between server versions; the stream's settings do not).
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("Coffer secret values of one environment incarnation".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: self.history,
            storage: jetstream::stream::StorageType::File,
            num_replicas: self.replicas,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        match self.js.create_stream(config).await {
            Ok(stream) => Ok(self
                .buckets
                .keep(bucket, Arc::new(kv_store(bucket, stream)))),
            Err(e) => match self.fetch_bucket(bucket).await? {
                Some(store) => Ok(store),
                None => Err(self.unavailable(&format!("cannot create bucket {bucket}"), &e)),
            },
        }
    }

    /// The entry `msg` holds, or `None` for a delete or purge marker.
    fn decode(
        &self,
        env: &Environment,
        name: &SecretName,
        msg: &jetstream::message::StreamMessage,
    ) -> StoreResult<Option<(ValueVersion, ValueEntry)>> {
        match msg.headers.get("KV-Operation").map(|v| v.as_str()) {
            None | Some("PUT") => {}
            Some("DEL" | "PURGE") => return Ok(None),
            Some(_) => {
                return Err(StoreError::Corrupt(format!(
                    "the NATS entry for {name} in {} at revision {} has an unknown operation",
                    env.name, msg.sequence
                )));
            }
        }
        let corrupt = |why: &str| {
            StoreError::Corrupt(format!(
                "the NATS entry for {name} in {} at revision {} {why}",
                env.name, msg.sequence
            ))
        };
        // serde's message may quote the input, which may be a value: keep only its kind.
        let wire: WireEntry = serde_json::from_slice(&msg.payload)
            .map_err(|e| corrupt(&format!("is not a Coffer entry ({:?} error)", e.classify())))?;
        if wire.format != FORMAT {
            return Err(corrupt(&format!(
                "has format {}, which this version does not read",
                wire.format
            )));
        }
        let value = match wire.kind.as_str() {
            "sealed" => StoredValue::Sealed {
                key_version: KeyVersion::new(wire.key_version)
                    .map_err(|_| corrupt("names key version 0 for a sealed value"))?,
                blob: wire.value,
            },
            "plain" if wire.key_version == 0 => StoredValue::Plain(SecretString::from(wire.value)),
            "plain" => return Err(corrupt("names a key version for a plaintext")),
            _ => return Err(corrupt("has an unknown kind")),
        };
        Ok(Some((
            msg.sequence,
            ValueEntry {
                value,
                revision: wire.revision,
                created_at: Timestamp::from_millis(wire.created_at),
                updated_at: Timestamp::from_millis(wire.updated_at),
                write_id: wire.write_id,
            },
        )))
    }

    /// The live keys of a bucket, parsed as secret names, in byte order.
    async fn live_names(&self, store: &kv::Store) -> StoreResult<Vec<SecretName>> {
        let what = format!("cannot list the keys of bucket {}", store.name);
        let mut keys = store
            .keys()
            .await
            .map_err(|e| self.unavailable(&what, &e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| self.unavailable(&what, &e))?;
            let name = SecretName::new(&key).map_err(|_| {
                StoreError::Corrupt(format!(
                    "bucket {} holds a key that is not a secret name",
                    store.name
                ))
            })?;
            names.push(name);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[async_trait]
impl ValueStore for NatsValues {
    fn backend_name(&self) -> &'static str {
        "nats"
    }

    fn describe(&self) -> String {
        format!(
            "nats (JetStream KV, a bucket per environment, history {}, {} replica{})",
            self.history,
            self.replicas,
            if self.replicas == 1 { "" } else { "s" }
        )
    }

    fn versioned(&self) -> bool {
        true
    }

    fn raw_values(&self) -> bool {
        false
    }

    async fn write(
        &self,
        env: &Environment,
        name: &SecretName,
        entry: &ValueEntry,
        expect: ValueExpect,
    ) -> StoreResult<ValueVersion> {
        let payload = encode(entry)?;
        let bucket = self.bucket_name(env);
        let key = name.as_str();
        let what = format!("cannot write {name} in bucket {bucket}");
        self.bounded(
            "write",
            self.write_in_bucket(&bucket, |store| {
                let (payload, what) = (payload.clone(), &what);
                async move {
                    match expect {
                        ValueExpect::Absent => store.create(key, payload).await.map_err(|e| {
                            if e.kind() == kv::CreateErrorKind::AlreadyExists {
                                StoreError::Conflict { current: None }
                            } else {
                                self.unavailable(what, &e)
                            }
                        }),
                        ValueExpect::Version(v) => {
                            store.update(key, payload, v).await.map_err(|e| {
                                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                                    StoreError::Conflict { current: None }
                                } else {
                                    self.unavailable(what, &e)
                                }
                            })
                        }
                        ValueExpect::Any => store
                            .put(key, payload)
                            .await
                            .map_err(|e| self.unavailable(what, &e)),
                    }
                }
            }),
        )
        .await
    }

    async fn read(
        &self,
        env: &Environment,
        name: &SecretName,
        version: Option<ValueVersion>,
    ) -> StoreResult<Option<(ValueVersion, ValueEntry)>> {
        let bucket = &self.bucket_name(env);
        self.bounded(
            "read",
            self.on_bucket(bucket, |store| async move {
                let subject = format!("{}{}", store.prefix, name.as_str());
                // The stream's message API, not the direct one: for a bucket deleted
                // meanwhile it answers "stream not found" at once (a direct get of a deleted
                // stream goes unanswered until the timeout), and it reads from the leader,
                // so a read sees every acknowledged write.
                let found = match version {
                    None => store.stream.get_last_raw_message_by_subject(&subject).await,
                    Some(v) => store.stream.get_raw_message(v).await,
                };
                let msg = match found {
                    Ok(msg) => msg,
                    Err(e)
                        if e.kind()
                            == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                    {
                        return Ok(None);
                    }
                    Err(e) => {
                        return Err(
                            self.unavailable(&format!("cannot read {name} in bucket {bucket}"), &e)
                        );
                    }
                };
                // A revision is a sequence of the whole bucket: it may be another key's.
                if msg.subject.as_str() != subject {
                    return Ok(None);
                }
                self.decode(env, name, &msg)
            }),
        )
        .await
    }

    async fn remove(
        &self,
        env: &Environment,
        name: &SecretName,
        up_to: Option<ValueVersion>,
    ) -> StoreResult<()> {
        let bucket = &self.bucket_name(env);
        self.bounded("remove", async {
            // Asked of the server, not of the kept handles: a purge is a publish, which a
            // deleted bucket leaves unanswered (see `write_in_bucket`).
            let Some(store) = self.fetch_bucket(bucket).await? else {
                return Ok(());
            };
            let what = format!("cannot remove {name} from bucket {bucket}");
            match up_to {
                // A purge keeps one marker and drops every earlier version of the key.
                None => store
                    .purge(name.as_str())
                    .await
                    .map_err(|e| self.unavailable(&what, &e)),
                // The key's messages below `v + 1` only: a version written after the caller
                // looked stays.
                Some(v) => store
                    .stream
                    .purge()
                    .filter(format!("$KV.{bucket}.{name}"))
                    .sequence(v.saturating_add(1))
                    .await
                    .map(|_| ())
                    .map_err(|e| self.unavailable(&what, &e)),
            }
        })
        .await
    }

    async fn remove_environment(&self, env: &Environment) -> StoreResult<u64> {
        let bucket = self.bucket_name(env);
        let removed = self
            .bounded("remove an environment", async {
                // Asked of the server, not of the kept handles: the count is of what is there.
                self.buckets.forget(&bucket);
                let Some(store) = self.fetch_bucket(&bucket).await? else {
                    return Ok(0);
                };
                let count = self.live_names(&store).await?.len() as u64;
                match self.js.delete_stream(&store.stream_name).await {
                    Ok(_) => Ok(count),
                    Err(e) => match e.kind() {
                        // Another node removed it first.
                        jetstream::context::GetStreamErrorKind::JetStream(js)
                            if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                        {
                            Ok(count)
                        }
                        _ => Err(self.unavailable(&format!("cannot delete bucket {bucket}"), &e)),
                    },
                }
            })
            .await;
        // Whatever happened, the handle kept meanwhile may be of a deleted bucket.
        self.buckets.forget(&bucket);
        removed
    }

    async fn names(&self, env: &Environment) -> StoreResult<Vec<SecretName>> {
        let bucket = self.bucket_name(env);
        self.bounded(
            "list",
            self.on_bucket(
                &bucket,
                |store| async move { self.live_names(&store).await },
            ),
        )
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.bounded("ping", async {
            // The account's JetStream info: a round trip through JetStream with these
            // credentials. Only whether it is an error is read (its shape varies between
            // server versions).
            let reply = self
                .client
                .request("$JS.API.INFO", bytes::Bytes::new())
                .await
                .map_err(|e| self.unavailable("JetStream did not answer", &e))?;
            let body: serde_json::Value = serde_json::from_slice(&reply.payload)
                .map_err(|_| StoreError::Unavailable("JetStream answered garbage".into()))?;
            match body.get("error") {
                None => Ok(()),
                Some(error) => Err(StoreError::Unavailable(format!(
                    "JetStream refused: {}",
                    error
                        .get("description")
                        .and_then(|d| d.as_str())
                        .unwrap_or("unknown error")
                ))),
            }
        })
        .await
    }
}

/// The entry format's version ([module documentation](self)).
const FORMAT: u32 = 1;

/// One KV value, as JSON ([module documentation](self)).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireEntry {
    format: u32,
    kind: String,
    key_version: u32,
    value: String,
    revision: Revision,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    write_id: String,
}

/// Borrowed form of [`WireEntry`] for writing, so a plaintext is not copied into a
/// `String` that outlives the call.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEntryRef<'a> {
    format: u32,
    kind: &'a str,
    key_version: u32,
    value: &'a str,
    revision: Revision,
    created_at: i64,
    updated_at: i64,
    write_id: &'a str,
}

fn encode(entry: &ValueEntry) -> StoreResult<bytes::Bytes> {
    let (kind, value) = match &entry.value {
        StoredValue::Sealed { blob, .. } => ("sealed", blob.as_str()),
        StoredValue::Plain(s) => ("plain", s.expose_secret()),
    };
    let wire = WireEntryRef {
        format: FORMAT,
        kind,
        key_version: entry.value.key_version_number(),
        value,
        revision: entry.revision,
        created_at: entry.created_at.millis(),
        updated_at: entry.updated_at.millis(),
        write_id: &entry.write_id,
    };
    serde_json::to_vec(&wire)
        .map(bytes::Bytes::from)
        // Serialising strings and numbers cannot fail; say nothing of the value if it did.
        .map_err(|_| StoreError::Corrupt("cannot encode a NATS entry".into()))
}

/// A KV handle over a bucket's stream, without asking the server again.
fn kv_store(bucket: &str, stream: Stream) -> kv::Store {
    kv::Store {
        name: bucket.to_owned(),
        stream_name: format!("KV_{bucket}"),
        prefix: format!("$KV.{bucket}."),
        put_prefix: None,
        use_jetstream_prefix: false,
        stream,
    }
}

/// Bucket handles by bucket name, at most `capacity` of them (a handle kept beyond that
/// drops an arbitrary other one: a dropped handle costs one more round trip, never a wrong
/// answer). The lock is never held across an `await`.
struct BucketCache<H> {
    capacity: usize,
    handles: Mutex<HashMap<String, H>>,
}

impl<H: Clone> BucketCache<H> {
    fn new(capacity: usize) -> Self {
        BucketCache {
            capacity,
            handles: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, bucket: &str) -> Option<H> {
        self.lock().get(bucket).cloned()
    }

    /// Keeps `handle` for `bucket` (in place of any older one) and returns it.
    fn keep(&self, bucket: &str, handle: H) -> H {
        let mut handles = self.lock();
        if handles.len() >= self.capacity && !handles.contains_key(bucket) {
            let victim = handles.keys().next().cloned();
            if let Some(victim) = victim {
                handles.remove(&victim);
            }
        }
        handles.insert(bucket.to_owned(), handle.clone());
        handle
    }

    fn forget(&self, bucket: &str) {
        self.lock().remove(bucket);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, H>> {
        // A panic while the lock was held cannot leave a wrong handle behind (each change
        // is one insert or remove), so a poisoned lock is used as it is.
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `text` with every secret replaced by `<redacted>`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_url_means_no_nats_value_store() {
        assert!(
            NatsValueOptions::from_env(env_of(&[("COFFER_NATS_TOKEN", "t")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn env_variables_fill_the_options_with_defaults_for_the_rest() {
        let o = NatsValueOptions::from_env(env_of(&[
            ("COFFER_NATS_URL", "nats://127.0.0.1:4222"),
            ("COFFER_NATS_USER", "coffer"),
            ("COFFER_NATS_PASSWORD", "hunter2-pw"),
            ("COFFER_NATS_REQUIRE_TLS", "true"),
            ("COFFER_NATS_TIMEOUT_MS", "1500"),
            ("COFFER_NATS_KV_HISTORY", "10"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.url, "nats://127.0.0.1:4222");
        assert_eq!(o.user.as_deref(), Some("coffer"));
        assert!(o.require_tls);
        assert_eq!(o.timeout, Duration::from_millis(1500));
        assert_eq!(o.history, 10);
        assert_eq!(o.replicas, 1);
        assert_eq!(o.bucket_prefix, "coffer");
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2-pw"), "{shown}");
        let o = NatsValueOptions::from_env(env_of(&[("COFFER_NATS_URL", "nats://h")]))
            .unwrap()
            .unwrap();
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert_eq!(o.history, DEFAULT_HISTORY);
    }

    #[test]
    fn bad_variables_are_named_and_their_values_never_echoed() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("COFFER_NATS_TIMEOUT_MS", "sekrit-1")],
                "COFFER_NATS_TIMEOUT_MS",
            ),
            (&[("COFFER_NATS_TIMEOUT_MS", "0")], "COFFER_NATS_TIMEOUT_MS"),
            (&[("COFFER_NATS_KV_HISTORY", "1")], "COFFER_NATS_KV_HISTORY"),
            (
                &[("COFFER_NATS_KV_HISTORY", "65")],
                "COFFER_NATS_KV_HISTORY",
            ),
            (
                &[("COFFER_NATS_KV_REPLICAS", "sekrit-2")],
                "COFFER_NATS_KV_REPLICAS",
            ),
            (
                &[("COFFER_NATS_REQUIRE_TLS", "sekrit-3")],
                "COFFER_NATS_REQUIRE_TLS",
            ),
            (
                &[("COFFER_NATS_PASSWORD", "sekrit-4")],
                "COFFER_NATS_PASSWORD",
            ),
            (
                &[
                    ("COFFER_NATS_TOKEN", "sekrit-5"),
                    ("COFFER_NATS_USER", "u"),
                    ("COFFER_NATS_PASSWORD", "sekrit-6"),
                ],
                "COFFER_NATS_TOKEN",
            ),
            (&[("COFFER_NATS_TLS_CERT", "/c.pem")], "COFFER_NATS_TLS_KEY"),
        ];
        for (vars, named) in cases {
            let mut all = vec![("COFFER_NATS_URL", "nats://h")];
            all.extend_from_slice(vars);
            let err = NatsValueOptions::from_env(env_of(&all)).unwrap_err();
            assert!(err.contains(named), "{err}");
            assert!(!err.contains("sekrit"), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let mut o = NatsValueOptions::new("nats://alice:url-secret@127.0.0.1:4222");
        o.token = Some(SecretString::from("tok-secret"));
        let shown = format!("{o:?}");
        assert!(!shown.contains("url-secret"), "{shown}");
        assert!(!shown.contains("tok-secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:4222"), "{shown}");
    }

    #[test]
    fn the_bucket_cache_keeps_at_most_its_capacity_and_the_latest_handle() {
        let cache = BucketCache::new(3);
        for i in 0..10u32 {
            assert_eq!(cache.keep(&format!("b{i}"), i), i);
            assert!(cache.len() <= 3);
            assert_eq!(cache.get(&format!("b{i}")), Some(i), "the handle just kept");
        }
        assert_eq!(cache.len(), 3);
        // Keeping a bucket already kept replaces its handle and drops nothing.
        assert_eq!(cache.keep("b9", 90), 90);
        assert_eq!(cache.get("b9"), Some(90));
        assert_eq!(cache.len(), 3);
        cache.forget("b9");
        assert_eq!(cache.get("b9"), None);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn entries_round_trip_and_unknown_formats_are_refused() {
        let entry = ValueEntry {
            value: StoredValue::Sealed {
                key_version: KeyVersion::new(3).unwrap(),
                blob: "iv:ct:tag".into(),
            },
            revision: 2,
            created_at: Timestamp::from_millis(10),
            updated_at: Timestamp::from_millis(20),
            write_id: "00ff00ff00ff00ff".into(),
        };
        let bytes = encode(&entry).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"format": 1, "kind": "sealed", "keyVersion": 3,
                "value": "iv:ct:tag", "revision": 2, "createdAt": 10, "updatedAt": 20,
                "writeId": "00ff00ff00ff00ff"})
        );
    }
}
