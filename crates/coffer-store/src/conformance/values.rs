//! The [`ValueStore`] cases, and [`ExternalSecrets`] in the secret-store cases.
//!
//! A value store's tests invoke [`value_store_conformance!`](crate::value_store_conformance)
//! with an async expression yielding `(Arc<impl ValueStore>, guard)`, against a real server;
//! and [`secret_store_conformance!`](crate::secret_store_conformance) with an
//! [`ExternalSecrets`] over a catalog store and that value store, so that the service's
//! secret store on that backend passes every case the `db` backend passes.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::{at, name, sealed, test_env_id};
use crate::*;

/// Generates one test per value-store case.
#[macro_export]
macro_rules! value_store_conformance {
    ($make:expr) => {
        $crate::value_store_conformance!(@cases $make;
            values_round_trip_with_their_metadata, expectations_are_checked_with_the_write,
            earlier_versions_stay_readable_by_number, remove_takes_every_version,
            remove_up_to_a_version_keeps_newer_ones,
            incarnations_of_one_name_are_kept_apart, names_are_listed_in_byte_order,
            racing_expectations_let_one_writer_win, the_store_answers_a_ping);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod value_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _guard) = $make.await;
                    $crate::conformance::$case(store).await;
                }
            )*
        }
    };
}

#[async_trait::async_trait]
impl<I: AccessStore + SecretStore> super::Environments for ExternalSecrets<I> {
    async fn environment(&self, name: &str) -> Environment {
        super::Environments::environment(&**self.index(), name).await
    }
}

/// A fresh incarnation named `name` (value stores do not check incarnations against a
/// catalog: the catalog is the caller).
fn incarnation(name: &str) -> Environment {
    Environment {
        name: EnvName::new(name).expect("test environment name is valid"),
        id: test_env_id(),
        created_at: at(0),
    }
}

fn entry(value: StoredValue, revision: Revision) -> ValueEntry {
    ValueEntry {
        value,
        revision,
        created_at: at(1_000),
        updated_at: at(1_000 + i64::try_from(revision).unwrap()),
        write_id: format!("{revision:016x}"),
    }
}

fn plain(text: &str) -> StoredValue {
    StoredValue::Plain(SecretString::from(text))
}

/// What a read found, in a form tests compare.
fn shown(
    found: Option<(ValueVersion, ValueEntry)>,
) -> Option<(String, u32, Revision, i64, i64, String)> {
    found.map(|(_, e)| {
        let text = match &e.value {
            StoredValue::Plain(s) => format!("plain:{}", s.expose_secret()),
            StoredValue::Sealed { blob, .. } => format!("sealed:{blob}"),
        };
        (
            text,
            e.value.key_version_number(),
            e.revision,
            e.created_at.millis(),
            e.updated_at.millis(),
            e.write_id,
        )
    })
}

async fn write(
    store: &impl ValueStore,
    env: &Environment,
    n: &SecretName,
    value: ValueEntry,
    expect: ValueExpect,
) -> StoreResult<ValueVersion> {
    let expect = if store.versioned() {
        expect
    } else {
        ValueExpect::Any
    };
    store.write(env, n, &value, expect).await
}

/// A sealed value and a plaintext one come back exactly, with the revision and timestamps
/// written beside them; an unknown name reads as `None`.
pub async fn values_round_trip_with_their_metadata(store: Arc<impl ValueStore>) {
    let e = incarnation("a");
    let (s, p) = (name("SEALED"), name("PLAIN"));
    write(
        &*store,
        &e,
        &s,
        entry(sealed(7, "iv:ct:tag"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    write(
        &*store,
        &e,
        &p,
        entry(plain("raw ✓ value"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    let got = shown(store.read(&e, &s, None).await.unwrap());
    let id = format!("{:016x}", 1);
    assert_eq!(
        got,
        Some(("sealed:iv:ct:tag".into(), 7, 1, 1_000, 1_001, id.clone()))
    );
    let got = shown(store.read(&e, &p, None).await.unwrap());
    assert_eq!(
        got,
        Some(("plain:raw ✓ value".into(), 0, 1, 1_000, 1_001, id))
    );
    assert!(store.read(&e, &name("NONE"), None).await.unwrap().is_none());
}

/// `Absent` fails over a value, a stale `Version` fails, the latest one applies and gives a
/// new version.
pub async fn expectations_are_checked_with_the_write(store: Arc<impl ValueStore>) {
    if !store.versioned() {
        return; // declared: Coffer refuses expectedRevision and rewrap on this store
    }
    let (e, n) = (incarnation("a"), name("CAS"));
    let v1 = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "a::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    let again = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "b::1"), 1),
        ValueExpect::Absent,
    )
    .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let v2 = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "a::2"), 2),
        ValueExpect::Version(v1),
    )
    .await
    .unwrap();
    assert!(v2 > v1);
    let stale = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "b::2"), 2),
        ValueExpect::Version(v1),
    )
    .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let (latest, got) = store.read(&e, &n, None).await.unwrap().unwrap();
    assert_eq!(latest, v2);
    assert_eq!(got.revision, 2);
    write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "a::3"), 3),
        ValueExpect::Any,
    )
    .await
    .unwrap();
}

/// Each write is a new version; an earlier one is still read by its number (what the
/// catalog's reference names while a newer write has not committed).
pub async fn earlier_versions_stay_readable_by_number(store: Arc<impl ValueStore>) {
    let (e, n) = (incarnation("a"), name("HISTORY"));
    let v1 = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "one::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    let v2 = write(
        &*store,
        &e,
        &n,
        entry(sealed(2, "two::2"), 2),
        ValueExpect::Version(v1),
    )
    .await
    .unwrap();
    let latest = shown(store.read(&e, &n, None).await.unwrap()).unwrap();
    assert_eq!(latest.0, "sealed:two::2");
    if !store.versioned() {
        return;
    }
    let first = shown(store.read(&e, &n, Some(v1)).await.unwrap()).unwrap();
    assert_eq!(
        (first.0.as_str(), first.1, first.2),
        ("sealed:one::1", 1, 1)
    );
    let second = shown(store.read(&e, &n, Some(v2)).await.unwrap()).unwrap();
    assert_eq!((second.0.as_str(), second.2), ("sealed:two::2", 2));
}

/// Removing a name removes every version; removing it again is no error; it can be
/// written again from scratch.
pub async fn remove_takes_every_version(store: Arc<impl ValueStore>) {
    let (e, n) = (incarnation("a"), name("GONE"));
    let v1 = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "x::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "x::2"), 2),
        ValueExpect::Version(v1),
    )
    .await
    .unwrap();
    store.remove(&e, &n, None).await.unwrap();
    store.remove(&e, &n, None).await.unwrap();
    assert!(store.read(&e, &n, None).await.unwrap().is_none());
    if store.versioned() {
        assert!(store.read(&e, &n, Some(v1)).await.unwrap().is_none());
    }
    assert!(store.names(&e).await.unwrap().is_empty());
    write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "y::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    assert_eq!(
        shown(store.read(&e, &n, None).await.unwrap()).unwrap().0,
        "sealed:y::1"
    );
}

/// Removing up to a version (what a delete saw) leaves a newer version (a create of the
/// same name that came after it) readable, by number and as the latest.
pub async fn remove_up_to_a_version_keeps_newer_ones(store: Arc<impl ValueStore>) {
    if !store.versioned() {
        return; // declared: without versions a removal takes the value
    }
    let (e, n) = (incarnation("a"), name("RECREATED"));
    let v1 = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "old::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    let v2 = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "new::1"), 1),
        ValueExpect::Version(v1),
    )
    .await
    .unwrap();
    store.remove(&e, &n, Some(v1)).await.unwrap();
    assert!(store.read(&e, &n, Some(v1)).await.unwrap().is_none());
    let (latest, got) = store.read(&e, &n, None).await.unwrap().unwrap();
    assert_eq!(latest, v2);
    assert_eq!(shown(Some((latest, got))).unwrap().0, "sealed:new::1");
    assert!(store.read(&e, &n, Some(v2)).await.unwrap().is_some());
    assert_eq!(store.names(&e).await.unwrap(), std::slice::from_ref(&n));
    store.remove(&e, &n, Some(v2)).await.unwrap();
    assert!(store.read(&e, &n, None).await.unwrap().is_none());
    assert!(store.names(&e).await.unwrap().is_empty());
}

/// Two incarnations of one environment name never see each other's values, count each
/// other's as absent, and removing one incarnation leaves the other's values alone.
pub async fn incarnations_of_one_name_are_kept_apart(store: Arc<impl ValueStore>) {
    let (old, new, other) = (incarnation("prod"), incarnation("prod"), incarnation("dev"));
    let n = name("TOKEN");
    write(
        &*store,
        &old,
        &n,
        entry(sealed(1, "old::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    write(
        &*store,
        &other,
        &n,
        entry(sealed(1, "dev::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    assert!(
        store.read(&new, &n, None).await.unwrap().is_none(),
        "a new incarnation must not read the old one's value"
    );
    assert_eq!(store.remove_environment(&old).await.unwrap(), 1);
    write(
        &*store,
        &new,
        &n,
        entry(sealed(1, "new::1"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    assert_eq!(store.remove_environment(&old).await.unwrap(), 0);
    assert_eq!(
        shown(store.read(&new, &n, None).await.unwrap()).unwrap().0,
        "sealed:new::1",
        "removing the old incarnation must not touch the new one"
    );
    assert_eq!(
        shown(store.read(&other, &n, None).await.unwrap())
            .unwrap()
            .0,
        "sealed:dev::1"
    );
    assert!(store.read(&old, &n, None).await.unwrap().is_none());
}

/// `names` lists one incarnation's secrets in byte order.
pub async fn names_are_listed_in_byte_order(store: Arc<impl ValueStore>) {
    let e = incarnation("a");
    for raw in ["b", "B", "a_1", "A", "a"] {
        write(
            &*store,
            &e,
            &name(raw),
            entry(sealed(1, "v::v"), 1),
            ValueExpect::Absent,
        )
        .await
        .unwrap();
    }
    let names = store.names(&e).await.unwrap();
    let names: Vec<&str> = names.iter().map(SecretName::as_str).collect();
    assert_eq!(names, ["A", "B", "a", "a_1", "b"]);
    assert!(store.names(&incarnation("a")).await.unwrap().is_empty());
}

/// 8 writers expecting the same version: exactly one applies, every time.
pub async fn racing_expectations_let_one_writer_win(store: Arc<impl ValueStore>) {
    if !store.versioned() {
        return;
    }
    let (e, n) = (incarnation("a"), name("RACE"));
    let mut version = write(
        &*store,
        &e,
        &n,
        entry(sealed(1, "r::0"), 1),
        ValueExpect::Absent,
    )
    .await
    .unwrap();
    for round in 0..10u64 {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (store, e, n) = (store.clone(), e.clone(), n.clone());
            tasks.push(tokio::spawn(async move {
                let value = entry(sealed(1, &format!("r::{round}:{w}")), round + 2);
                store
                    .write(&e, &n, &value, ValueExpect::Version(version))
                    .await
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => won.push(v),
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        version = won[0];
    }
}

/// A store that is up answers a ping.
pub async fn the_store_answers_a_ping(store: Arc<impl ValueStore>) {
    store.ping().await.unwrap();
    assert!(!store.describe().is_empty());
    assert!(matches!(store.backend_name(), "nats" | "vault"));
}
