//! The domain model the storage traits speak: names that were checked once, at the edge,
//! and records that carry them.

use std::fmt;

use coffer_crypto::KeyVersion;
use secrecy::SecretString;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {shown:?} is invalid: {rule}")]
pub struct NameError {
    kind: &'static str,
    shown: String,
    rule: &'static str,
}

impl NameError {
    pub(crate) fn new(kind: &'static str, raw: &str, rule: &'static str) -> Self {
        // Names are not secret, but a caller may paste anything into a path: show a bounded prefix.
        let shown: String = raw.chars().take(64).collect();
        NameError { kind, shown, rule }
    }
}

/// An environment name: `^[a-z0-9][a-z0-9-]{0,62}$`. See [`EnvName::is_reserved`] for the
/// one name that may not be created.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

impl EnvName {
    /// Checks `raw` against the environment-name rule.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        const RULE: &str = "use 1-63 characters: lowercase letters, digits and '-', starting with a letter or digit";
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && b == b'-'));
        if ok {
            Ok(EnvName(raw.to_owned()))
        } else {
            Err(NameError::new("environment name", raw, RULE))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `admin` may not be created: API keys read `ck_<environment or "admin">_…`, so keys
    /// of an environment named `admin` would look like admin keys. (An existing one stays
    /// readable and deletable.)
    pub fn is_reserved(&self) -> bool {
        self.0 == "admin"
    }
}

/// An environment's incarnation: the immutable id it gets when created. Values are bound to
/// it (in their associated data, and in an external store's key path), so a value written
/// into an environment that was deleted and created again under the same name never
/// reappears or opens in the new one.
///
/// Two forms: `env_` and 16 lowercase hex digits, minted at creation; and `env0_<name>`,
/// given by the catalog migration that introduced incarnations to environments that
/// existed before it. Values of such an environment were sealed naming the environment
/// only (see [`EnvId::names_environment_only`]); no environment created since can get such
/// an id, so those values cannot open anywhere else.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvId(String);

impl EnvId {
    /// Checks `raw` is an incarnation id in one of its two forms.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        const RULE: &str = "use env_ and 16 lowercase hex digits";
        let minted = raw.strip_prefix("env_").is_some_and(|hex| {
            hex.len() == 16
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        let migrated = raw
            .strip_prefix(LEGACY_ENV_ID_PREFIX)
            .is_some_and(|name| EnvName::new(name).is_ok());
        if minted || migrated {
            Ok(EnvId(raw.to_owned()))
        } else {
            Err(NameError::new("environment id", raw, RULE))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this environment existed before incarnations (`env0_…`): its values are
    /// bound to the environment's name, as they were sealed.
    pub fn names_environment_only(&self) -> bool {
        self.0.starts_with(LEGACY_ENV_ID_PREFIX)
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id prefix of environments that existed before incarnations (migration 5).
const LEGACY_ENV_ID_PREFIX: &str = "env0_";

/// The rule secret names and config keys share: `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
const IDENTIFIER_RULE: &str =
    "use 1-128 characters: letters, digits and '_', not starting with a digit";

fn is_identifier(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 128
        && raw
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()))
}

/// A secret name: `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// Checks `raw` against the secret-name rule.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        if is_identifier(raw) {
            Ok(SecretName(raw.to_owned()))
        } else {
            Err(NameError::new("secret name", raw, IDENTIFIER_RULE))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a secret listing's search matches: a part of the name, compared without regard to
/// ASCII case. 1–128 characters of the name alphabet (`[A-Za-z0-9_]`), so it never needs
/// escaping in a query. Stored lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameSearch(String);

impl NameSearch {
    /// Checks `raw`: 1–128 characters of `[A-Za-z0-9_]`.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        let fits = (1..=128).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if fits {
            Ok(NameSearch(raw.to_ascii_lowercase()))
        } else {
            Err(NameError::new(
                "name search",
                raw,
                "1-128 characters of [A-Za-z0-9_]",
            ))
        }
    }

    /// The search, lowercased.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` contains it, ignoring ASCII case.
    pub fn matches(&self, name: &str) -> bool {
        name.to_ascii_lowercase().contains(&self.0)
    }
}

/// The order of a secret listing. Names compare as bytes; the orders by update break ties by
/// name, so every order is total and a cursor is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretOrder {
    /// By name, A to z (the default).
    #[default]
    NameAsc,
    /// By name, z to A.
    NameDesc,
    /// Least recently updated first.
    UpdatedAsc,
    /// Most recently updated first.
    UpdatedDesc,
}

impl SecretOrder {
    /// Whether the order is by `updated_at` (its cursor needs the time as well as the name).
    pub fn by_update(self) -> bool {
        matches!(self, SecretOrder::UpdatedAsc | SecretOrder::UpdatedDesc)
    }
}

/// Which secrets of an environment a listing returns, and in what order.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretListing<'a> {
    /// The order.
    pub order: SecretOrder,
    /// Start after this secret in that order: its name and, for the orders by update, its
    /// `updated_at` (ignored by the orders by name).
    pub after: Option<(&'a SecretName, Timestamp)>,
    /// Only names `search` matches.
    pub search: Option<&'a NameSearch>,
}

impl<'a> SecretListing<'a> {
    /// In name order, after `after`, every name.
    pub fn by_name(after: Option<&'a SecretName>) -> Self {
        SecretListing {
            order: SecretOrder::NameAsc,
            after: after.map(|name| (name, Timestamp::from_millis(0))),
            search: None,
        }
    }
}

/// A config key: the secret-name rule, `^[A-Za-z_][A-Za-z0-9_]{0,127}$`. A type of its own
/// so a config key is never passed where a secret name is meant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigKey(String);

impl ConfigKey {
    /// Checks `raw` against the secret-name rule.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        if is_identifier(raw) {
            Ok(ConfigKey(raw.to_owned()))
        } else {
            Err(NameError::new("config key", raw, IDENTIFIER_RULE))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(EnvName, SecretName, ConfigKey, ApiKeyId);

/// A record's revision: 1 for the first write, +1 for each update.
pub type Revision = u64;

/// The largest revision, event id or audit sequence number a store keeps: every backend
/// stores them in signed 64-bit columns. A caller's number past it (an `expectedRevision`,
/// a `Last-Event-ID`) names nothing that can exist and is refused before it reaches a store.
pub const MAX_STORED_NUMBER: u64 = i64::MAX as u64;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// A timestamp from milliseconds since the epoch.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// This time plus `ms` milliseconds (saturating).
    pub fn after_millis(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `2026-11-23T04:35:25.123Z`.
    pub fn rfc3339(self) -> String {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(format).ok())
            .unwrap_or_default()
    }
}

/// A condition a write must meet, checked atomically with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// The record must not exist (`expectedRevision: 0`).
    Absent,
    /// The record must exist at exactly this revision.
    Revision(Revision),
}

impl Precondition {
    /// Maps the API's `expectedRevision` (`0` = must not exist) to a precondition.
    pub fn from_expected(expected: Option<Revision>) -> Self {
        match expected {
            None => Precondition::None,
            Some(0) => Precondition::Absent,
            Some(n) => Precondition::Revision(n),
        }
    }

    /// Whether a record currently at `current` (`None` = absent) meets the precondition.
    pub fn admits(self, current: Option<Revision>) -> bool {
        match self {
            Precondition::None => true,
            Precondition::Absent => current.is_none(),
            Precondition::Revision(n) => current == Some(n),
        }
    }
}

/// A secret value as it is stored: sealed under a key version, or plaintext in dev mode.
pub enum StoredValue {
    /// Dev mode: no key configured, the value is kept as it is.
    Plain(SecretString),
    /// An `iv:ciphertext:tag` blob sealed under `key_version`.
    Sealed {
        /// The key version that sealed the blob.
        key_version: KeyVersion,
        /// The encoded blob.
        blob: String,
    },
}

impl StoredValue {
    /// The stored key version; `0` means plaintext (dev mode).
    pub fn key_version_number(&self) -> u32 {
        match self {
            StoredValue::Plain(_) => 0,
            StoredValue::Sealed { key_version, .. } => key_version.get(),
        }
    }
}

impl fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredValue::Plain(_) => f.write_str("Plain(<redacted>)"),
            StoredValue::Sealed { key_version, .. } => {
                write!(f, "Sealed {{ key_version: {key_version} }}")
            }
        }
    }
}

/// Most names one listing with a search examines: a search that matches few names of a
/// large environment would otherwise read every name for one page (a million names: some
/// 100 ms of a reader). A page that examined this many ends there, with a cursor.
pub const MAX_SEARCH_EXAMINED: usize = 10_000;

/// One page of secret metadata as a store read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretPage {
    /// The secrets, in the listing's order.
    pub items: Vec<SecretMeta>,
    /// When a search examined [`MAX_SEARCH_EXAMINED`] names and found fewer than the page's
    /// limit: the position (name, `updated_at`) of the last name it examined, where the
    /// next page starts.
    pub resume: Option<(SecretName, Timestamp)>,
}

impl std::ops::Deref for SecretPage {
    type Target = [SecretMeta];

    fn deref(&self) -> &[SecretMeta] {
        &self.items
    }
}

impl IntoIterator for SecretPage {
    type Item = SecretMeta;
    type IntoIter = std::vec::IntoIter<SecretMeta>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// A page of secret metadata being read: a store pushes the rows of its listing in order,
/// past its cursor, with no search condition of its own, until [`SecretPageFill::push`] says
/// the page is full; the fill keeps the names the search matches.
#[derive(Debug)]
pub struct SecretPageFill<'a> {
    search: Option<&'a NameSearch>,
    limit: usize,
    examined: usize,
    page: SecretPage,
}

impl<'a> SecretPageFill<'a> {
    /// An empty page of up to `limit` secrets matching `search`.
    pub fn new(search: Option<&'a NameSearch>, limit: usize) -> Self {
        SecretPageFill {
            search,
            limit,
            examined: 0,
            page: SecretPage::default(),
        }
    }

    /// Rows the store should read at most: `limit`, or with a search
    /// [`MAX_SEARCH_EXAMINED`].
    pub fn rows(&self) -> usize {
        match self.search {
            None => self.limit,
            Some(_) => MAX_SEARCH_EXAMINED,
        }
    }

    /// Whether the page takes no more rows: stop reading.
    pub fn is_full(&self) -> bool {
        self.page.items.len() >= self.limit || self.examined >= self.rows()
    }

    /// Examines the next row. Returns whether the page is full.
    pub fn push(&mut self, meta: SecretMeta) -> bool {
        self.examined += 1;
        if self.search.is_none_or(|s| s.matches(meta.name.as_str())) {
            self.page.items.push(meta);
        } else if self.examined >= MAX_SEARCH_EXAMINED {
            self.page.resume = Some((meta.name, meta.updated_at));
        }
        self.is_full()
    }

    /// The page read. A search that stopped at [`MAX_SEARCH_EXAMINED`] on a name it kept
    /// resumes after that name.
    pub fn finish(mut self) -> SecretPage {
        if self.search.is_some()
            && self.examined >= MAX_SEARCH_EXAMINED
            && self.page.items.len() < self.limit
            && self.page.resume.is_none()
        {
            self.page.resume = self
                .page
                .items
                .last()
                .map(|m| (m.name.clone(), m.updated_at));
        }
        self.page
    }
}

/// What the management plane may see of a secret: never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMeta {
    /// The environment it belongs to.
    pub environment: EnvName,
    /// The incarnation of that environment it was written into.
    pub environment_id: EnvId,
    /// Its name.
    pub name: SecretName,
    /// Its current revision.
    pub revision: Revision,
    /// The key version of the stored value; `0` = stored unencrypted (dev mode).
    pub key_version: u32,
    /// When revision 1 was written.
    pub created_at: Timestamp,
    /// When the current revision was written.
    pub updated_at: Timestamp,
}

/// A stored secret: its metadata and its stored value.
#[derive(Debug)]
pub struct SecretRecord {
    /// The metadata.
    pub meta: SecretMeta,
    /// The value as stored.
    pub value: StoredValue,
}

/// One re-encrypted value for [`crate::SecretStore::replace_values`].
#[derive(Debug)]
pub struct Replacement {
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was read from.
    pub environment_id: EnvId,
    /// Its name.
    pub name: SecretName,
    /// The revision the value was read at.
    pub revision: Revision,
    /// The stored form that was read. Together with `revision` it pins the exact row: a
    /// secret deleted and created again restarts at revision 1, but its blob (random nonce)
    /// differs, so an old value is never written back over a new one.
    pub previous: StoredValue,
    /// The new stored form of the same value.
    pub value: StoredValue,
}

/// The result of a successful put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// The metadata after the write.
    pub meta: SecretMeta,
    /// Whether the write created the secret (revision 1).
    pub created: bool,
}

/// An environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    /// Its name.
    pub name: EnvName,
    /// Its incarnation, given when it was created and never changed.
    pub id: EnvId,
    /// When it was created.
    pub created_at: Timestamp,
}

/// An API key's opaque id (`ak_…`), used to list and revoke it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    /// Checks `raw` is an id as Coffer issues them: `ak_` and 1-64 lowercase hex digits.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        let ok = raw.strip_prefix("ak_").is_some_and(|hex| {
            !hex.is_empty()
                && hex.len() <= 64
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(ApiKeyId(raw.to_owned()))
        } else {
            Err(NameError::new(
                "API key id",
                raw,
                "ids look like ak_ followed by hex digits",
            ))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One entry of [`crate::SecretStore::put_many`].
#[derive(Debug)]
pub struct BatchPut {
    /// The secret.
    pub name: SecretName,
    /// The new stored value; `None` checks `precondition` without writing.
    pub value: Option<StoredValue>,
    /// What must hold for the batch to apply.
    pub precondition: Precondition,
}

/// On whose behalf a write is made.
///
/// A store re-checks a key actor in the transaction that writes: the key must still exist
/// and (for a scoped key) still belong to the environment it was made for. So a key revoked,
/// or whose environment was deleted, while its request was in flight changes nothing
/// ([`crate::StoreError::ActorRevoked`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Coffer itself: bootstrap, start-up checks, dev-mode migration.
    System,
    /// An API key.
    Key {
        /// Its id.
        id: ApiKeyId,
        /// The environment it is scoped to; `None` for an admin key.
        environment: Option<EnvName>,
        /// Where the request came from (for the audit row).
        origin: crate::Origin,
    },
}

/// What an API key may do, and where.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything in every environment, API keys included.
    Admin,
    /// Write, list and delete in one environment; never reads a value.
    Manage(EnvName),
    /// Resolves declared secrets in one environment; nothing else.
    Runtime(EnvName),
}

impl Role {
    /// The role's name as the API spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manage(_) => "manage",
            Role::Runtime(_) => "runtime",
        }
    }

    /// The environment the role is scoped to; `None` for admin.
    pub fn environment(&self) -> Option<&EnvName> {
        match self {
            Role::Admin => None,
            Role::Manage(env) | Role::Runtime(env) => Some(env),
        }
    }

    /// Rebuilds a role from its stored parts.
    pub fn from_parts(role: &str, environment: Option<EnvName>) -> Result<Self, RoleError> {
        match (role, environment) {
            ("admin", None) => Ok(Role::Admin),
            ("admin", Some(_)) => Err(RoleError::AdminIsGlobal),
            ("manage" | "runtime", None) => Err(RoleError::EnvironmentRequired),
            ("manage", Some(env)) => Ok(Role::Manage(env)),
            ("runtime", Some(env)) => Ok(Role::Runtime(env)),
            _ => Err(RoleError::UnknownRole),
        }
    }
}

/// Why a role could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// Not one of admin, manage, runtime.
    #[error("role must be one of admin, manage, runtime")]
    UnknownRole,
    /// manage and runtime keys belong to one environment.
    #[error("manage and runtime keys need an environment")]
    EnvironmentRequired,
    /// admin keys span every environment.
    #[error("admin keys are not scoped to an environment")]
    AdminIsGlobal,
}

/// An API key as listed: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyMeta {
    /// Its id.
    pub id: ApiKeyId,
    /// A human label.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: Timestamp,
}

/// An API key as stored: its metadata and the SHA-256 (hex) of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The metadata.
    pub meta: ApiKeyMeta,
    /// Lowercase hex SHA-256 of the full key string.
    pub key_hash: String,
}

/// A verification batch as [`crate::KeyStore::record_checks`] audits it: who ran it and
/// what it checked.
#[derive(Clone, Copy, Debug)]
pub struct Verification<'a> {
    /// The actor that ran it (re-checked in the writing transaction).
    pub by: &'a Actor,
    /// How many stored secrets the batch opened: its checks, and the functions' signing
    /// secrets it opened beside them (which have no marks). The `keys.verified` row's count.
    pub checked: u64,
}

/// What opening one stored value found: which secret, at which revision, under which key
/// version, and whether it opened. A walk (`coffer keys verify`, a rewrap, the start-up
/// migration) or a failed resolve hands these to [`crate::KeyStore::record_checks`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueCheck {
    /// The secret's environment.
    pub environment: EnvName,
    /// The environment's incarnation the value was read from: a check of a deleted
    /// incarnation never marks (or clears a mark of) a secret of the same name and revision
    /// in a re-created one.
    pub environment_id: EnvId,
    /// The secret's name.
    pub name: SecretName,
    /// The revision that was opened (or failed to).
    pub revision: Revision,
    /// The key version the value is stored under (`0` = plaintext).
    pub key_version: u32,
    /// Whether it opened.
    pub opened: bool,
}

/// A value recorded in the catalog as unreadable: metadata only, never the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableMark {
    /// The secret's environment.
    pub environment: EnvName,
    /// The secret's name.
    pub name: SecretName,
    /// The revision that did not open; a newer revision is not concerned.
    pub revision: Revision,
    /// The key version that revision is stored under.
    pub key_version: u32,
}

/// A canary sealed under one key version, proving at startup that the key still opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// The key version that sealed it.
    pub key_version: KeyVersion,
    /// The sealed blob.
    pub blob: String,
}

/// One config entry: plaintext JSON, by design (config is not secret). Its `Debug` shows the
/// value's length only: values are returned to callers, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The environment it belongs to.
    pub environment: EnvName,
    /// Its key.
    pub key: ConfigKey,
    /// The value as serialized JSON text; the service checks it is JSON before storing it.
    pub value: String,
    /// 1 for the first write, +1 for each update.
    pub revision: Revision,
    /// When revision 1 was written.
    pub created_at: Timestamp,
    /// When the current revision was written.
    pub updated_at: Timestamp,
}

impl ConfigEntry {
    /// What it weighs in a page of a listing: its key and value (up to 64 KiB of JSON).
    pub fn weight(&self) -> usize {
        self.key.as_str().len() + self.value.len()
    }
}

impl fmt::Debug for ConfigEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigEntry")
            .field("environment", &self.environment)
            .field("key", &self.key)
            .field("value_bytes", &self.value.len())
            .field("revision", &self.revision)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The result of a successful config put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPutOutcome {
    /// The entry after the write.
    pub entry: ConfigEntry,
    /// Whether the write created it (revision 1).
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_follow_the_rule() {
        for ok in ["default", "a", "prod-eu-1", "0day", &"a".repeat(63)] {
            assert!(EnvName::new(ok).is_ok(), "{ok}");
        }
        assert!(
            EnvName::new("admin").unwrap().is_reserved(),
            "readable, not creatable"
        );
        assert!(!EnvName::new("admins").unwrap().is_reserved());
        for bad in [
            "",
            "-a",
            "Prod",
            "a_b",
            "a b",
            "é",
            &"a".repeat(64),
            "a/b",
            "..",
            "a:b",
        ] {
            assert!(EnvName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_names_follow_the_rule() {
        for ok in ["A", "_", "API_KEY", "a1", &format!("A{}", "b".repeat(127))] {
            assert!(SecretName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "A.B",
            "Ä",
            &"A".repeat(129),
            "A:B",
            "A/B",
        ] {
            assert!(SecretName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_keys_follow_the_secret_name_rule() {
        for raw in ["A", "_", "feature_flags", "1A", "A-B", "", &"A".repeat(129)] {
            assert_eq!(
                ConfigKey::new(raw).is_ok(),
                SecretName::new(raw).is_ok(),
                "{raw}"
            );
        }
        assert!(
            ConfigKey::new("a.b")
                .unwrap_err()
                .to_string()
                .starts_with("config key")
        );
    }

    #[test]
    fn name_errors_show_a_bounded_prefix_only() {
        let long = "x".repeat(10_000) + "!";
        let msg = SecretName::new(&long).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }

    #[test]
    fn preconditions_admit_what_they_say() {
        assert!(Precondition::None.admits(None));
        assert!(Precondition::None.admits(Some(3)));
        assert!(Precondition::Absent.admits(None));
        assert!(!Precondition::Absent.admits(Some(1)));
        assert!(Precondition::Revision(2).admits(Some(2)));
        assert!(!Precondition::Revision(2).admits(Some(3)));
        assert!(!Precondition::Revision(2).admits(None));
        assert_eq!(Precondition::from_expected(Some(0)), Precondition::Absent);
    }

    #[test]
    fn roles_are_scoped_as_documented() {
        let env = EnvName::new("prod").unwrap();
        assert_eq!(Role::from_parts("admin", None), Ok(Role::Admin));
        assert_eq!(
            Role::from_parts("admin", Some(env.clone())),
            Err(RoleError::AdminIsGlobal)
        );
        assert_eq!(
            Role::from_parts("manage", None),
            Err(RoleError::EnvironmentRequired)
        );
        assert_eq!(
            Role::from_parts("runtime", Some(env.clone())),
            Ok(Role::Runtime(env))
        );
        assert_eq!(Role::from_parts("root", None), Err(RoleError::UnknownRole));
    }

    #[test]
    fn config_values_do_not_debug_print() {
        let entry = ConfigEntry {
            environment: EnvName::new("prod").unwrap(),
            key: ConfigKey::new("A").unwrap(),
            value: r#""hunter2""#.to_owned(),
            revision: 1,
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(1),
        };
        assert!(!format!("{entry:?}").contains("hunter2"));
    }

    #[test]
    fn plain_values_do_not_debug_print() {
        let v = StoredValue::Plain(SecretString::from("hunter2"));
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
