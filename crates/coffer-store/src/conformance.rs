//! The conformance suite every backend must pass, against a real server.
//!
//! A backend's tests invoke [`secret_store_conformance!`](crate::secret_store_conformance),
//! [`catalog_conformance!`](crate::catalog_conformance) and/or
//! [`config_store_conformance!`](crate::config_store_conformance) with an async expression that
//! yields `(Arc<Backend>, guard)`; the guard (a temp dir, a connection, …) lives as long as
//! the test. Each case below becomes one `#[tokio::test]` named after it, on a
//! multi-thread runtime: the `racing_…` cases spawn writers that run truly in parallel, many
//! rounds over, to show that an invariant is held by the store and not by luck.

use std::sync::Arc;

use coffer_crypto::KeyVersion;
use secrecy::{ExposeSecret, SecretString};

use crate::*;

mod orchestrations;
mod runtime;
mod values;
pub use orchestrations::*;
pub use runtime::*;
pub use values::*;

/// Generates one test per secret-store case. `$make` is an async expression yielding
/// `(Arc<impl SecretStore>, impl Sized)`.
#[macro_export]
macro_rules! secret_store_conformance {
    ($make:expr) => {
        $crate::secret_store_conformance!(@cases $make;
            put_creates_at_revision_one, updates_bump_revision_and_keep_created_at,
            preconditions_are_checked_atomically_with_the_write, delete_honours_preconditions,
            get_returns_the_stored_value_verbatim, get_many_reads_each_name_in_order,
            list_is_sorted_scoped_and_paginated,
            list_orders_by_name_or_update_either_way,
            purge_removes_only_that_environment, counts_values_per_key_version,
            concurrent_compare_and_set_loses_no_update, scan_walks_every_environment_in_order,
            replacements_apply_only_at_the_read_revision, batches_apply_all_or_nothing,
            racing_unconditional_puts_get_distinct_revisions);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod secret_store_conformance {
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

/// Generates one test per catalog case. `$make` is an async expression yielding
/// `(Arc<impl Catalog>, impl Sized)`.
#[macro_export]
macro_rules! catalog_conformance {
    ($make:expr) => {
        $crate::catalog_conformance!(@cases $make;
            environments_are_created_listed_and_deleted, api_keys_are_found_by_hash_only,
            deleting_an_environment_removes_its_keys, the_last_admin_key_cannot_be_deleted,
            bootstrap_happens_once, canaries_are_kept_per_version,
            encryption_counts_accumulate_per_version, a_revoked_actor_changes_nothing,
            a_key_of_a_deleted_environment_changes_nothing_in_its_successor,
            a_deleted_incarnation_takes_no_values_and_shows_none,
            racing_revocations_of_the_last_two_admin_keys_leave_one,
            a_scoped_key_racing_its_environments_deletion_lands_with_it_or_not_at_all,
            racing_bootstraps_bootstrap_once);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod catalog_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (catalog, _guard) = $make.await;
                    $crate::conformance::$case(catalog).await;
                }
            )*
        }
    };
}

/// Generates one test per config-store case. `$make` is an async expression yielding
/// `(Arc<impl Catalog>, impl Sized)`: the cases create environments and API
/// keys to check that writes re-check their actor and land only in existing environments.
#[macro_export]
macro_rules! config_store_conformance {
    ($make:expr) => {
        $crate::config_store_conformance!(@cases $make;
            config_put_creates_at_revision_one_and_updates_bump_it,
            config_preconditions_are_checked_atomically_with_the_write,
            config_delete_honours_preconditions,
            config_list_is_sorted_by_bytes_scoped_and_paginated,
            config_concurrent_compare_and_set_loses_no_update,
            config_writes_recheck_the_actor_and_the_environment,
            config_entries_go_with_their_environment,
            racing_unconditional_config_puts_get_distinct_revisions,
            a_write_racing_its_environments_deletion_leaves_nothing_behind,
            a_write_racing_its_keys_revocation_is_journaled_before_it_or_refused);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod config_store_conformance {
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

/// Generates one test per case of the unreadable marks, for a catalog that also holds the
/// values (`Capabilities::values_in_catalog`): marks are pinned to revisions and go with
/// writes in the database. `$make` is an async expression yielding
/// `(Arc<impl Catalog + SecretStore>, impl Sized)`.
#[macro_export]
macro_rules! unreadable_marks_conformance {
    ($make:expr) => {
        $crate::unreadable_marks_conformance!(@cases $make;
            unreadable_marks_are_recorded_counted_and_cleared,
            a_write_or_delete_supersedes_an_unreadable_mark,
            a_mark_of_a_revision_already_replaced_is_not_recorded,
            unreadable_marks_go_with_their_environment,
            a_late_check_of_a_deleted_incarnation_changes_no_mark,
            a_verification_is_audited_and_rechecks_its_actor,
            a_mark_racing_a_write_of_its_secret_never_outlives_it);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod unreadable_marks_conformance {
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

fn env(name: &str) -> EnvName {
    EnvName::new(name).expect("test environment name is valid")
}

/// A fresh incarnation id: unique in this process, which is all one test database sees.
fn test_env_id() -> EnvId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    EnvId::new(&format!("env_{n:016x}")).expect("test environment id is valid")
}

/// How the secret-store cases get an environment to write into. A store in the catalog's
/// database writes only into an incarnation the catalog holds, so for every [`AccessStore`]
/// the suite creates it there (once per name); a store elsewhere implements this by minting
/// an [`Environment`].
#[async_trait::async_trait]
pub trait Environments: Send + Sync {
    /// The environment `name`, as the catalog holds it.
    async fn environment(&self, name: &str) -> Environment;
}

#[async_trait::async_trait]
impl<T: AccessStore> Environments for T {
    async fn environment(&self, name: &str) -> Environment {
        if let Some(existing) = self.get_environment(&env(name)).await.unwrap() {
            return existing;
        }
        let new = Environment {
            name: env(name),
            id: test_env_id(),
            created_at: at(0),
        };
        self.create_environment(&new, &Actor::System).await.unwrap();
        new
    }
}

/// The environment `name` as [`Environments::environment`] gives it.
async fn environment(store: &impl Environments, name: &str) -> Environment {
    store.environment(name).await
}

fn name(raw: &str) -> SecretName {
    SecretName::new(raw).expect("test secret name is valid")
}

fn sealed(version: u32, blob: &str) -> StoredValue {
    StoredValue::Sealed {
        key_version: KeyVersion::new(version).expect("test key version is positive"),
        blob: blob.to_owned(),
    }
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// An unconditional put that must succeed.
async fn set(
    store: &impl SecretStore,
    env: &Environment,
    name: &SecretName,
    value: StoredValue,
    at: Timestamp,
) -> PutOutcome {
    store
        .put(env, name, value, Precondition::None, at, &Actor::System)
        .await
        .expect("put")
}

/// A first put creates the secret at revision 1 with the value's key version.
pub async fn put_creates_at_revision_one(store: Arc<impl SecretStore + Environments>) {
    let (e, n) = (environment(&*store, "a").await, name("API_KEY"));
    let out = set(&*store, &e, &n, sealed(3, "x:y:z"), at(1000)).await;
    assert!(out.created);
    assert_eq!(out.meta.revision, 1);
    assert_eq!(out.meta.key_version, 3);
    assert_eq!(out.meta.created_at, at(1000));
    assert_eq!(out.meta.updated_at, at(1000));
    assert_eq!(store.meta(&e, &n).await.unwrap(), Some(out.meta));
    assert_eq!(store.meta(&e, &name("OTHER")).await.unwrap(), None);
}

/// Each update adds one to the revision and keeps the creation time.
pub async fn updates_bump_revision_and_keep_created_at(
    store: Arc<impl SecretStore + Environments>,
) {
    let (e, n) = (environment(&*store, "a").await, name("TOKEN"));
    set(&*store, &e, &n, sealed(1, "a::b"), at(1)).await;
    let second = set(&*store, &e, &n, sealed(2, "c::d"), at(2)).await;
    assert!(!second.created);
    assert_eq!(second.meta.revision, 2);
    assert_eq!(second.meta.key_version, 2);
    assert_eq!(second.meta.created_at, at(1));
    assert_eq!(second.meta.updated_at, at(2));
}

/// `Absent` and `Revision(n)` are enforced; a conflict reports the current revision.
pub async fn preconditions_are_checked_atomically_with_the_write(
    store: Arc<impl SecretStore + Environments>,
) {
    let (e, n) = (environment(&*store, "a").await, name("CAS"));
    let miss = store
        .put(
            &e,
            &n,
            sealed(1, "a::b"),
            Precondition::Revision(1),
            at(1),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(miss, Err(StoreError::Conflict { current: None })),
        "{miss:?}"
    );
    store
        .put(
            &e,
            &n,
            sealed(1, "a::b"),
            Precondition::Absent,
            at(1),
            &Actor::System,
        )
        .await
        .unwrap();
    let again = store
        .put(
            &e,
            &n,
            sealed(1, "a::b"),
            Precondition::Absent,
            at(2),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { current: Some(1) })),
        "{again:?}"
    );
    let stale = store
        .put(
            &e,
            &n,
            sealed(1, "a::b"),
            Precondition::Revision(7),
            at(2),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(1) })),
        "{stale:?}"
    );
    let ok = store
        .put(
            &e,
            &n,
            sealed(1, "c::d"),
            Precondition::Revision(1),
            at(3),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(ok.meta.revision, 2);
    assert_eq!(
        store.meta(&e, &n).await.unwrap().map(|m| m.revision),
        Some(2)
    );
}

/// Delete removes the secret, reports a missing one, and honours `Revision(n)`.
pub async fn delete_honours_preconditions(store: Arc<impl SecretStore + Environments>) {
    let (e, n) = (environment(&*store, "a").await, name("GONE"));
    assert!(matches!(
        store
            .delete(&e, &n, Precondition::None, &Actor::System)
            .await,
        Err(StoreError::NotFound)
    ));
    set(&*store, &e, &n, sealed(1, "a::b"), at(1)).await;
    let stale = store
        .delete(&e, &n, Precondition::Revision(2), &Actor::System)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(1) })),
        "{stale:?}"
    );
    let gone = store
        .delete(&e, &n, Precondition::Revision(1), &Actor::System)
        .await
        .unwrap();
    assert_eq!(gone.revision, 1);
    assert_eq!(store.meta(&e, &n).await.unwrap(), None);
    let again = set(&*store, &e, &n, sealed(1, "a::b"), at(5)).await;
    assert!(again.created, "a deleted secret starts over at revision 1");
    assert_eq!(again.meta.revision, 1);
}

/// `get` returns exactly what was stored, sealed or plain.
pub async fn get_returns_the_stored_value_verbatim(store: Arc<impl SecretStore + Environments>) {
    let e = environment(&*store, "a").await;
    set(&*store, &e, &name("S"), sealed(4, "iv:ct:tag"), at(1)).await;
    let plain = StoredValue::Plain(SecretString::from("dev value ✓"));
    store
        .put(
            &e,
            &name("P"),
            plain,
            Precondition::None,
            at(1),
            &Actor::System,
        )
        .await
        .unwrap();
    match store.get(&e, &name("S")).await.unwrap().map(|r| r.value) {
        Some(StoredValue::Sealed { key_version, blob }) => {
            assert_eq!((key_version.get(), blob.as_str()), (4, "iv:ct:tag"));
        }
        other => panic!("expected a sealed value, got {other:?}"),
    }
    match store.get(&e, &name("P")).await.unwrap().map(|r| r.value) {
        Some(StoredValue::Plain(v)) => assert_eq!(v.expose_secret(), "dev value ✓"),
        other => panic!("expected a plain value, got {other:?}"),
    }
    assert!(store.get(&e, &name("NONE")).await.unwrap().is_none());
}

/// `get_many` answers each name in the order asked, as `get` would: set ones with their
/// value, unset ones `None` (a name asked twice gets its record twice), another
/// environment's never.
pub async fn get_many_reads_each_name_in_order(store: Arc<impl SecretStore + Environments>) {
    let (a, b) = (
        environment(&*store, "a").await,
        environment(&*store, "b").await,
    );
    for n in ["S1", "S2", "S3"] {
        set(
            &*store,
            &a,
            &name(n),
            sealed(2, &format!("iv:{n}:tag")),
            at(1),
        )
        .await;
    }
    set(&*store, &b, &name("ONLY_B"), sealed(1, "iv:b:tag"), at(1)).await;
    let asked: Vec<SecretName> = ["S3", "NONE", "S1", "ONLY_B", "S3"]
        .into_iter()
        .map(name)
        .collect();
    let got = store.get_many(&a, &asked).await.unwrap();
    let blobs: Vec<Option<String>> = got
        .iter()
        .map(|r| {
            r.as_ref().map(|r| match &r.value {
                StoredValue::Sealed { blob, .. } => blob.clone(),
                StoredValue::Plain(_) => "plain".into(),
            })
        })
        .collect();
    assert_eq!(
        blobs,
        [
            Some("iv:S3:tag".to_owned()),
            None,
            Some("iv:S1:tag".to_owned()),
            None,
            Some("iv:S3:tag".to_owned()),
        ]
    );
    for (asked, got) in asked.iter().zip(&got) {
        if let Some(record) = got {
            assert_eq!(&record.meta.name, asked);
            assert_eq!(record.meta.environment_id, a.id);
            assert_eq!(record.meta.revision, 1);
        }
    }
    assert!(store.get_many(&a, &[]).await.unwrap().is_empty());
    // The same name in another environment is that environment's; counts that are not a
    // power of two, and a list longer than one query reads, answer the same way.
    set(&*store, &b, &name("S1"), sealed(1, "iv:b1:tag"), at(1)).await;
    let many: Vec<SecretName> = (0..(crate::MAX_GET_MANY + 3))
        .map(|i| name(["S1", "S2", "X", "S3", "Y"][i % 5]))
        .collect();
    let got = store.get_many(&a, &many).await.unwrap();
    assert_eq!(got.len(), many.len());
    for (asked, got) in many.iter().zip(&got) {
        match (asked.as_str(), got) {
            ("X" | "Y", None) => {}
            ("X" | "Y", Some(_)) => panic!("{asked} is set nowhere"),
            (n, Some(r)) => {
                assert_eq!(r.meta.name.as_str(), n);
                assert_eq!(r.meta.environment_id, a.id, "never another environment's");
            }
            (n, None) => panic!("{n} is set in `a`"),
        }
    }
}

/// Listing is in name order, scoped to one environment, and pages with `after`.
pub async fn list_is_sorted_scoped_and_paginated(store: Arc<impl SecretStore + Environments>) {
    let (a, b) = (
        environment(&*store, "a").await,
        environment(&*store, "b").await,
    );
    for n in ["C", "A", "E", "B", "D"] {
        set(&*store, &a, &name(n), sealed(1, "x::y"), at(1)).await;
    }
    set(&*store, &b, &name("Z"), sealed(1, "x::y"), at(1)).await;
    let names = |v: SecretPage| {
        v.into_iter()
            .map(|m| m.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            store
                .list(&a, &SecretListing::by_name(None), 100)
                .await
                .unwrap()
        ),
        ["A", "B", "C", "D", "E"]
    );
    assert_eq!(
        names(
            store
                .list(&a, &SecretListing::by_name(None), 2)
                .await
                .unwrap()
        ),
        ["A", "B"]
    );
    assert_eq!(
        names(
            store
                .list(&a, &SecretListing::by_name(Some(&name("B"))), 2)
                .await
                .unwrap()
        ),
        ["C", "D"]
    );
    assert_eq!(
        names(
            store
                .list(&a, &SecretListing::by_name(Some(&name("E"))), 2)
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            store
                .list(&b, &SecretListing::by_name(None), 100)
                .await
                .unwrap()
        ),
        ["Z"]
    );
    // A search keeps the order and the paging, and ignores ASCII case.
    for n in ["STRIPE_KEY", "stripe_webhook", "GITHUB_TOKEN", "OLD_STRIPE"] {
        set(&*store, &a, &name(n), sealed(1, "x::y"), at(1)).await;
    }
    let stripe = crate::NameSearch::new("Stripe").unwrap();
    let searching = |after, limit| {
        let listing = SecretListing {
            after,
            search: Some(&stripe),
            ..SecretListing::default()
        };
        listed(&*store, &a, listing, limit)
    };
    assert_eq!(
        searching(None, 100).await,
        ["OLD_STRIPE", "STRIPE_KEY", "stripe_webhook"]
    );
    let old = name("OLD_STRIPE");
    assert_eq!(searching(Some((&old, at(0))), 1).await, ["STRIPE_KEY"]);
    let none = crate::NameSearch::new("nothing_like_it").unwrap();
    let nothing = SecretListing {
        search: Some(&none),
        ..SecretListing::default()
    };
    assert!(store.list(&a, &nothing, 100).await.unwrap().is_empty());
    let in_b = SecretListing {
        search: Some(&stripe),
        ..SecretListing::default()
    };
    assert!(store.list(&b, &in_b, 100).await.unwrap().is_empty());
    assert!(
        store
            .list(
                &environment(&*store, "c").await,
                &SecretListing::by_name(None),
                100
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// Purging an environment leaves the others alone.
pub async fn purge_removes_only_that_environment(store: Arc<impl SecretStore + Environments>) {
    let (a, b) = (
        environment(&*store, "a").await,
        environment(&*store, "b").await,
    );
    for n in ["X", "Y"] {
        set(&*store, &a, &name(n), sealed(1, "x::y"), at(1)).await;
        set(&*store, &b, &name(n), sealed(1, "x::y"), at(1)).await;
    }
    assert_eq!(store.purge_environment(&a).await.unwrap(), 2);
    assert!(
        store
            .list(&a, &SecretListing::by_name(None), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list(&b, &SecretListing::by_name(None), 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Values are counted per key version, plaintext as version 0.
pub async fn counts_values_per_key_version(store: Arc<impl SecretStore + Environments>) {
    let e = environment(&*store, "a").await;
    let plain = || StoredValue::Plain(SecretString::from("p"));
    set(&*store, &e, &name("A"), sealed(1, "x::y"), at(1)).await;
    set(&*store, &e, &name("B"), sealed(2, "x::y"), at(1)).await;
    set(&*store, &e, &name("C"), sealed(2, "x::y"), at(1)).await;
    set(
        &*store,
        &environment(&*store, "b").await,
        &name("D"),
        plain(),
        at(1),
    )
    .await;
    let counts = store.count_by_key_version().await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [(0, 1), (1, 1), (2, 2)]
    );
}

/// 16 tasks × 25 read-then-compare-and-set updates: the final revision is one plus the
/// number of updates that succeeded, so no acknowledged update was lost.
pub async fn concurrent_compare_and_set_loses_no_update(
    store: Arc<impl SecretStore + Environments>,
) {
    let (e, n) = (environment(&*store, "a").await, name("COUNTER"));
    set(&*store, &e, &n, sealed(1, "x::y"), at(1)).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, e, n) = (store.clone(), e.clone(), n.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = 0u64;
            for _ in 0..25 {
                let current = store
                    .meta(&e, &n)
                    .await
                    .unwrap()
                    .map(|m| m.revision)
                    .unwrap();
                let pre = Precondition::Revision(current);
                match store
                    .put(&e, &n, sealed(1, "x::y"), pre, at(2), &Actor::System)
                    .await
                {
                    Ok(_) => won += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap();
    }
    assert!(won > 0);
    assert_eq!(store.meta(&e, &n).await.unwrap().unwrap().revision, 1 + won);
}

/// A batch applies every entry or none; a check-only entry writes nothing but must hold.
pub async fn batches_apply_all_or_nothing(store: Arc<impl SecretStore + Environments>) {
    if !store.capabilities().atomic_batches {
        return; // declared: the service refuses batches on this backend
    }
    let e = environment(&*store, "a").await;
    set(&*store, &e, &name("KEEP"), sealed(1, "k::k"), at(1)).await;
    let entry = |n: &str, value: Option<StoredValue>, precondition| BatchPut {
        name: name(n),
        value,
        precondition,
    };
    let refused = store
        .put_many(
            &e,
            vec![
                entry("NEW", Some(sealed(1, "n::n")), Precondition::Absent),
                entry("KEEP", None, Precondition::Revision(7)),
            ],
            at(2),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { current: Some(1) })),
        "{refused:?}"
    );
    assert!(
        store.meta(&e, &name("NEW")).await.unwrap().is_none(),
        "rolled back"
    );
    let done = store
        .put_many(
            &e,
            vec![
                entry("NEW", Some(sealed(1, "n::n")), Precondition::Absent),
                entry("KEEP", None, Precondition::Revision(1)),
            ],
            at(3),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert!(
        done[0]
            .as_ref()
            .is_some_and(|o| o.created && o.meta.revision == 1)
    );
    assert!(done[1].is_none());
    assert_eq!(
        store
            .meta(&e, &name("KEEP"))
            .await
            .unwrap()
            .unwrap()
            .updated_at,
        at(1)
    );
}

fn api_key(id: &str, role: Role, hash: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        meta: ApiKeyMeta {
            id: ApiKeyId::new(id).expect("test key id is valid"),
            name: format!("key {id}"),
            role,
            created_at: at(1),
        },
        key_hash: hash.to_owned(),
    }
}

/// Environments are created once, listed in name order and deleted.
pub async fn environments_are_created_listed_and_deleted(catalog: Arc<impl Catalog>) {
    for n in ["staging", "default", "production"] {
        catalog
            .create_environment(
                &Environment {
                    name: env(n),
                    id: test_env_id(),
                    created_at: at(5),
                },
                &Actor::System,
            )
            .await
            .unwrap();
    }
    let dup = catalog
        .create_environment(
            &Environment {
                name: env("default"),
                id: test_env_id(),
                created_at: at(6),
            },
            &Actor::System,
        )
        .await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists)), "{dup:?}");
    let names: Vec<String> = catalog
        .list_environments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(names, ["default", "production", "staging"]);
    let got = catalog
        .get_environment(&env("default"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.created_at, at(5), "a refused duplicate changes nothing");
    catalog
        .delete_environment(&env("staging"), &Actor::System)
        .await
        .unwrap();
    assert_eq!(
        catalog.get_environment(&env("staging")).await.unwrap(),
        None
    );
    let again = catalog
        .delete_environment(&env("staging"), &Actor::System)
        .await;
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
}

/// API keys are found by their hash, listed without it, and deleted by id.
pub async fn api_keys_are_found_by_hash_only(catalog: Arc<impl Catalog>) {
    catalog
        .insert_api_key(&api_key("ak_01", Role::Admin, "h1"), &Actor::System)
        .await
        .unwrap();
    let orphan = catalog
        .insert_api_key(
            &api_key("ak_03", Role::Manage(env("prod")), "h3"),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(orphan, Err(StoreError::NotFound)),
        "a key for a missing environment is refused: {orphan:?}"
    );
    let prod = Environment {
        name: env("prod"),
        id: test_env_id(),
        created_at: at(1),
    };
    catalog
        .create_environment(&prod, &Actor::System)
        .await
        .unwrap();
    let manage = api_key("ak_02", Role::Manage(env("prod")), "h2");
    catalog
        .insert_api_key(&manage, &Actor::System)
        .await
        .unwrap();
    assert_eq!(
        catalog.find_api_key("h2").await.unwrap(),
        Some(manage.meta.clone())
    );
    assert_eq!(catalog.find_api_key("nope").await.unwrap(), None);
    let ids: Vec<String> = catalog
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id.to_string())
        .collect();
    assert_eq!(ids, ["ak_01", "ak_02"]);
    catalog
        .delete_api_key(&manage.meta.id, &Actor::System)
        .await
        .unwrap();
    assert_eq!(catalog.find_api_key("h2").await.unwrap(), None);
    let again = catalog
        .delete_api_key(&manage.meta.id, &Actor::System)
        .await;
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
}

/// Deleting an environment revokes the keys scoped to it, so a namesake environment
/// created later does not inherit them.
pub async fn deleting_an_environment_removes_its_keys(catalog: Arc<impl Catalog>) {
    catalog
        .create_environment(
            &Environment {
                name: env("prod"),
                id: test_env_id(),
                created_at: at(1),
            },
            &Actor::System,
        )
        .await
        .unwrap();
    catalog
        .insert_api_key(&api_key("ak_01", Role::Admin, "h1"), &Actor::System)
        .await
        .unwrap();
    catalog
        .insert_api_key(
            &api_key("ak_02", Role::Runtime(env("prod")), "h2"),
            &Actor::System,
        )
        .await
        .unwrap();
    catalog
        .delete_environment(&env("prod"), &Actor::System)
        .await
        .unwrap();
    assert_eq!(catalog.find_api_key("h2").await.unwrap(), None);
    assert!(catalog.find_api_key("h1").await.unwrap().is_some());
}

/// The last admin key cannot be deleted; one of two can.
pub async fn the_last_admin_key_cannot_be_deleted(catalog: Arc<impl Catalog>) {
    let (a, b) = (
        api_key("ak_0a", Role::Admin, "ha"),
        api_key("ak_0b", Role::Admin, "hb"),
    );
    catalog.insert_api_key(&a, &Actor::System).await.unwrap();
    catalog.insert_api_key(&b, &Actor::System).await.unwrap();
    catalog
        .delete_api_key(&a.meta.id, &Actor::System)
        .await
        .unwrap();
    let last = catalog.delete_api_key(&b.meta.id, &Actor::System).await;
    assert!(matches!(last, Err(StoreError::LastAdminKey)), "{last:?}");
    assert!(catalog.find_api_key("hb").await.unwrap().is_some());
}

/// Bootstrap writes the first environment and admin key exactly once.
pub async fn bootstrap_happens_once(catalog: Arc<impl Catalog>) {
    let first = Environment {
        name: env("default"),
        id: test_env_id(),
        created_at: at(1),
    };
    assert!(
        catalog
            .bootstrap(&first, &api_key("ak_01", Role::Admin, "h1"))
            .await
            .unwrap()
    );
    catalog
        .delete_environment(&env("default"), &Actor::System)
        .await
        .unwrap();
    assert!(
        !catalog
            .bootstrap(&first, &api_key("ak_02", Role::Admin, "h2"))
            .await
            .unwrap()
    );
    assert_eq!(
        catalog.get_environment(&env("default")).await.unwrap(),
        None
    );
    assert_eq!(catalog.find_api_key("h2").await.unwrap(), None);
    assert!(catalog.find_api_key("h1").await.unwrap().is_some());
}

/// One canary per key version; putting a second one keeps the first.
pub async fn canaries_are_kept_per_version(catalog: Arc<impl Catalog>) {
    let v = |n| KeyVersion::new(n).expect("positive");
    catalog
        .put_canary(&Canary {
            key_version: v(1),
            blob: "one".into(),
        })
        .await
        .unwrap();
    catalog
        .put_canary(&Canary {
            key_version: v(2),
            blob: "two".into(),
        })
        .await
        .unwrap();
    catalog
        .put_canary(&Canary {
            key_version: v(1),
            blob: "other".into(),
        })
        .await
        .unwrap();
    let got = catalog.canaries().await.unwrap();
    assert_eq!(
        got,
        [
            Canary {
                key_version: v(1),
                blob: "one".into()
            },
            Canary {
                key_version: v(2),
                blob: "two".into()
            }
        ]
    );
}

/// `scan` visits every record of every environment once, in (environment, name) order,
/// with its value, and resumes after any position.
pub async fn scan_walks_every_environment_in_order(store: Arc<impl SecretStore + Environments>) {
    for (e, n) in [("b", "Y"), ("a", "Z"), ("b", "X"), ("a", "A"), ("c", "M")] {
        store
            .put(
                &environment(&*store, e).await,
                &name(n),
                sealed(1, &format!("{e}:{n}:t")),
                Precondition::None,
                at(1),
                &Actor::System,
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<(EnvName, SecretName)> = None;
    loop {
        let page = store.scan(after.as_ref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.meta.environment.clone(), last.meta.name.clone()));
        for r in &page {
            let StoredValue::Sealed { blob, .. } = &r.value else {
                panic!("sealed")
            };
            assert_eq!(blob, &format!("{}:{}:t", r.meta.environment, r.meta.name));
            seen.push(format!("{}/{}", r.meta.environment, r.meta.name));
        }
    }
    assert_eq!(seen, ["a/A", "a/Z", "b/X", "b/Y", "c/M"]);
}

/// A replacement applies only while the secret is exactly as it was read (revision and stored
/// form), and keeps revision and timestamps; one that lost a race changes nothing — even
/// against a secret deleted and created again, which restarts at revision 1.
pub async fn replacements_apply_only_at_the_read_revision(
    store: Arc<impl SecretStore + Environments>,
) {
    let e = environment(&*store, "a").await;
    set(&*store, &e, &name("STILL"), sealed(1, "old::1"), at(1)).await;
    set(&*store, &e, &name("MOVED"), sealed(1, "old::2"), at(1)).await;
    set(&*store, &e, &name("MOVED"), sealed(2, "new::2"), at(2)).await;
    set(&*store, &e, &name("AGAIN"), sealed(1, "old::3"), at(1)).await;
    store
        .delete(&e, &name("AGAIN"), Precondition::None, &Actor::System)
        .await
        .unwrap();
    set(&*store, &e, &name("AGAIN"), sealed(1, "new::3"), at(3)).await;
    let replace = |n: &str, revision, previous: &str| Replacement {
        environment: e.name.clone(),
        environment_id: e.id.clone(),
        name: name(n),
        revision,
        previous: sealed(1, previous),
        value: sealed(3, "rewrapped::x"),
    };
    let batch = vec![
        replace("STILL", 1, "old::1"),
        replace("MOVED", 1, "old::2"),
        replace("GONE", 1, "old::9"),
        replace("AGAIN", 1, "old::3"),
    ];
    assert_eq!(
        store.replace_values(batch, &Actor::System).await.unwrap(),
        [true, false, false, false]
    );
    match store
        .get(&e, &name("AGAIN"))
        .await
        .unwrap()
        .map(|r| r.value)
    {
        Some(StoredValue::Sealed { blob, .. }) => {
            assert_eq!(blob, "new::3", "an old value never comes back")
        }
        other => panic!("sealed expected, got {other:?}"),
    }
    let still = store.get(&e, &name("STILL")).await.unwrap().unwrap();
    assert_eq!(
        (
            still.meta.revision,
            still.meta.key_version,
            still.meta.updated_at
        ),
        (1, 3, at(1))
    );
    let moved = store.get(&e, &name("MOVED")).await.unwrap().unwrap();
    assert_eq!((moved.meta.revision, moved.meta.key_version), (2, 2));
    match moved.value {
        StoredValue::Sealed { blob, .. } => assert_eq!(blob, "new::2", "the newer write stands"),
        other => panic!("sealed expected, got {other:?}"),
    }
    assert!(store.get(&e, &name("GONE")).await.unwrap().is_none());
}

/// An environment's values live and die with its incarnation, in the catalog's
/// transactions: deleted with it; a write sealed for it after it was deleted (a request in
/// flight) is refused, even once an environment of the same name exists again; and the new
/// one starts empty.
pub async fn a_deleted_incarnation_takes_no_values_and_shows_none(
    store: Arc<impl Catalog + SecretStore>,
) {
    let first = environment(&*store, "prod").await;
    let n = name("A");
    set(&*store, &first, &n, sealed(1, "a::1"), at(1)).await;
    store
        .delete_environment(&first.name, &Actor::System)
        .await
        .unwrap();
    let put = |env: Environment| {
        let (store, n) = (store.clone(), n.clone());
        async move {
            store
                .put(
                    &env,
                    &n,
                    sealed(1, "late::1"),
                    Precondition::None,
                    at(2),
                    &Actor::System,
                )
                .await
        }
    };
    let late = put(first.clone()).await;
    assert!(matches!(late, Err(StoreError::NotFound)), "{late:?}");
    let second = environment(&*store, "prod").await;
    assert_ne!(first.id, second.id, "a new incarnation");
    let again = put(first.clone()).await;
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
    assert!(
        store
            .list(&second, &SecretListing::by_name(None), 10)
            .await
            .unwrap()
            .is_empty(),
        "starts empty"
    );
    assert!(store.get(&second, &n).await.unwrap().is_none());
    assert!(
        store
            .list(&first, &SecretListing::by_name(None), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let batch = vec![BatchPut {
        name: n.clone(),
        value: Some(sealed(1, "late::2")),
        precondition: Precondition::None,
    }];
    let many = store.put_many(&first, batch, at(3), &Actor::System).await;
    assert!(matches!(many, Err(StoreError::NotFound)), "{many:?}");
    let mut seen = 0;
    let mut after = None;
    loop {
        let page = store.scan(after.as_ref(), 100).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.meta.environment.clone(), last.meta.name.clone()));
        seen += page.len();
    }
    assert_eq!(seen, 0, "no value of the old incarnation is walked");
    let fresh = put(second.clone()).await.unwrap();
    assert_eq!(
        (fresh.meta.revision, &fresh.meta.environment_id),
        (1, &second.id)
    );
}

/// Encryption counts start empty and add up per version.
pub async fn encryption_counts_accumulate_per_version(catalog: Arc<impl Catalog>) {
    let v = |n| KeyVersion::new(n).expect("positive");
    assert!(catalog.encryption_counts().await.unwrap().is_empty());
    catalog.add_encryptions(v(1), 5).await.unwrap();
    catalog.add_encryptions(v(1), 7).await.unwrap();
    catalog.add_encryptions(v(2), 1).await.unwrap();
    let counts = catalog.encryption_counts().await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [(v(1), 12), (v(2), 1)]
    );
}

fn key_actor(key: &ApiKeyRecord) -> Actor {
    Actor::Key {
        id: key.meta.id.clone(),
        environment: key.meta.role.environment().cloned(),
        origin: Default::default(),
    }
}

/// A key revoked while its request was in flight: its writes are refused in the writing
/// transaction and change nothing.
pub async fn a_revoked_actor_changes_nothing(catalog: Arc<impl Catalog>) {
    let (a, b) = (
        api_key("ak_0a", Role::Admin, "ha"),
        api_key("ak_0b", Role::Admin, "hb"),
    );
    catalog.insert_api_key(&a, &Actor::System).await.unwrap();
    catalog.insert_api_key(&b, &Actor::System).await.unwrap();
    let leaked = key_actor(&a);
    catalog
        .delete_api_key(&a.meta.id, &key_actor(&b))
        .await
        .unwrap();
    let prod = Environment {
        name: env("prod"),
        id: test_env_id(),
        created_at: at(1),
    };
    let refused = catalog.create_environment(&prod, &leaked).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert_eq!(catalog.get_environment(&env("prod")).await.unwrap(), None);
    let refused = catalog
        .insert_api_key(&api_key("ak_0c", Role::Admin, "hc"), &leaked)
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert_eq!(catalog.find_api_key("hc").await.unwrap(), None);
    let refused = catalog.delete_api_key(&b.meta.id, &leaked).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert!(catalog.find_api_key("hb").await.unwrap().is_some());
}

/// A scoped key dies with its environment: after the environment is deleted and made again
/// under the same name, the old key's writes change nothing there.
pub async fn a_key_of_a_deleted_environment_changes_nothing_in_its_successor(
    catalog: Arc<impl Catalog>,
) {
    let prod = Environment {
        name: env("prod"),
        id: test_env_id(),
        created_at: at(1),
    };
    catalog
        .create_environment(&prod, &Actor::System)
        .await
        .unwrap();
    catalog
        .insert_api_key(&api_key("ak_01", Role::Admin, "h1"), &Actor::System)
        .await
        .unwrap();
    let manage = api_key("ak_02", Role::Manage(env("prod")), "h2");
    catalog
        .insert_api_key(&manage, &Actor::System)
        .await
        .unwrap();
    catalog
        .delete_environment(&env("prod"), &Actor::System)
        .await
        .unwrap();
    catalog
        .create_environment(&prod, &Actor::System)
        .await
        .unwrap();
    let refused = catalog
        .insert_api_key(
            &api_key("ak_03", Role::Runtime(env("prod")), "h3"),
            &key_actor(&manage),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    // The same id scoped elsewhere is not the same key either.
    let elsewhere = Actor::Key {
        id: ApiKeyId::new("ak_01").unwrap(),
        environment: Some(env("prod")),
        origin: Default::default(),
    };
    let refused = catalog.delete_environment(&env("prod"), &elsewhere).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
}

fn config_key(raw: &str) -> ConfigKey {
    ConfigKey::new(raw).expect("test config key is valid")
}

/// An unconditional config put by the system that must succeed.
async fn set_config(
    store: &impl ConfigStore,
    e: &EnvName,
    key: &ConfigKey,
    value: &str,
    ms: i64,
) -> ConfigPutOutcome {
    store
        .put_config(
            e,
            key,
            value.to_owned(),
            Precondition::None,
            at(ms),
            &Actor::System,
        )
        .await
        .expect("put config")
}

/// A first put creates the entry at revision 1; each update adds one, keeps the creation
/// time, and the value comes back verbatim.
pub async fn config_put_creates_at_revision_one_and_updates_bump_it(store: Arc<impl Catalog>) {
    let (e, k) = (env("a"), config_key("feature_flags"));
    assert_eq!(store.get_config(&e, &k).await.unwrap(), None);
    let first = set_config(&*store, &e, &k, r#"{"beta":true}"#, 10).await;
    assert!(first.created);
    assert_eq!(first.entry.revision, 1);
    assert_eq!(first.entry.created_at, at(10));
    assert_eq!(first.entry.updated_at, at(10));
    assert_eq!(store.get_config(&e, &k).await.unwrap(), Some(first.entry));
    let second = set_config(&*store, &e, &k, r#"[1, "two", null]"#, 20).await;
    assert!(!second.created);
    assert_eq!(second.entry.revision, 2);
    assert_eq!(second.entry.created_at, at(10));
    assert_eq!(second.entry.updated_at, at(20));
    let got = store.get_config(&e, &k).await.unwrap().unwrap();
    assert_eq!(got.value, r#"[1, "two", null]"#);
    assert_eq!(got, second.entry);
    assert_eq!(store.get_config(&env("b"), &k).await.unwrap(), None);
}

/// `Absent` and `Revision(n)` are enforced; a conflict reports the current revision.
pub async fn config_preconditions_are_checked_atomically_with_the_write(store: Arc<impl Catalog>) {
    let (e, k) = (env("a"), config_key("CAS"));
    let put = |pre, ms| store.put_config(&e, &k, "1".to_owned(), pre, at(ms), &Actor::System);
    let miss = put(Precondition::Revision(1), 1).await;
    assert!(
        matches!(miss, Err(StoreError::Conflict { current: None })),
        "{miss:?}"
    );
    put(Precondition::Absent, 1).await.unwrap();
    let again = put(Precondition::Absent, 2).await;
    assert!(
        matches!(again, Err(StoreError::Conflict { current: Some(1) })),
        "{again:?}"
    );
    let stale = put(Precondition::Revision(7), 2).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(1) })),
        "{stale:?}"
    );
    let ok = put(Precondition::Revision(1), 3).await.unwrap();
    assert_eq!(ok.entry.revision, 2);
    let stored = store.get_config(&e, &k).await.unwrap().unwrap();
    assert_eq!((stored.revision, stored.updated_at), (2, at(3)));
}

/// Deleting needs the entry to exist and the precondition to hold; it returns the entry.
pub async fn config_delete_honours_preconditions(store: Arc<impl Catalog>) {
    let (e, k) = (env("a"), config_key("GONE"));
    let missing = store
        .delete_config(&e, &k, Precondition::None, &Actor::System)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    set_config(&*store, &e, &k, "true", 1).await;
    set_config(&*store, &e, &k, "false", 2).await;
    let stale = store
        .delete_config(&e, &k, Precondition::Revision(1), &Actor::System)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(2) })),
        "{stale:?}"
    );
    assert!(store.get_config(&e, &k).await.unwrap().is_some());
    let gone = store
        .delete_config(&e, &k, Precondition::Revision(2), &Actor::System)
        .await
        .unwrap();
    assert_eq!((gone.revision, gone.value.as_str()), (2, "false"));
    assert_eq!(store.get_config(&e, &k).await.unwrap(), None);
    // Created again, it starts over at revision 1.
    assert_eq!(set_config(&*store, &e, &k, "1", 3).await.entry.revision, 1);
}

/// Listing is in byte order of keys (`B` < `_` < `a`), per environment, after a cursor.
pub async fn config_list_is_sorted_by_bytes_scoped_and_paginated(store: Arc<impl Catalog>) {
    let e = env("a");
    for k in ["b", "_x", "B", "a1", "A"] {
        set_config(&*store, &e, &config_key(k), "0", 1).await;
    }
    set_config(&*store, &env("other"), &config_key("A0"), "0", 1).await;
    let keys = |page: Vec<ConfigEntry>| {
        page.into_iter()
            .map(|c| c.key.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let all = store
        .list_config(&e, None, PageSize::rows(100))
        .await
        .unwrap();
    assert!(all.iter().all(|c| c.environment == e));
    assert_eq!(keys(all), ["A", "B", "_x", "a1", "b"]);
    let first = store
        .list_config(&e, None, PageSize::rows(2))
        .await
        .unwrap();
    assert_eq!(keys(first), ["A", "B"]);
    let next = store
        .list_config(&e, Some(&config_key("B")), PageSize::rows(2))
        .await
        .unwrap();
    assert_eq!(keys(next), ["_x", "a1"]);
    let last = store
        .list_config(&e, Some(&config_key("b")), PageSize::rows(2))
        .await
        .unwrap();
    assert!(last.is_empty());
    // A page also ends after the entry that brings its text to its bytes: "A" and "0"
    // weigh 2, so 3 bytes take two entries and 2 bytes one.
    for (bytes, want) in [(1, vec!["A"]), (2, vec!["A"]), (3, vec!["A", "B"])] {
        let page = store
            .list_config(&e, None, PageSize { rows: 10, bytes })
            .await
            .unwrap();
        assert_eq!(keys(page), want, "a page of {bytes} bytes");
    }
    assert!(
        store
            .list_config(&env("empty"), None, PageSize::rows(10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Compare-and-set under contention: every successful write is one revision, none lost.
pub async fn config_concurrent_compare_and_set_loses_no_update(store: Arc<impl Catalog>) {
    let (e, k) = (env("a"), config_key("COUNTER"));
    set_config(&*store, &e, &k, "0", 1).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, e, k) = (store.clone(), e.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = 0u64;
            for _ in 0..20 {
                let current = store.get_config(&e, &k).await.unwrap().unwrap().revision;
                let pre = Precondition::Revision(current);
                match store
                    .put_config(&e, &k, "1".to_owned(), pre, at(2), &Actor::System)
                    .await
                {
                    Ok(_) => won += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap();
    }
    assert!(won > 0);
    let stored = store.get_config(&e, &k).await.unwrap().unwrap();
    assert_eq!(stored.revision, 1 + won);
}

/// A key revoked while its request was in flight, or scoped elsewhere, writes nothing; a
/// key writes only into an environment that exists at the moment of the write.
pub async fn config_writes_recheck_the_actor_and_the_environment(store: Arc<impl Catalog>) {
    let prod = Environment {
        name: env("prod"),
        id: test_env_id(),
        created_at: at(1),
    };
    store
        .create_environment(&prod, &Actor::System)
        .await
        .unwrap();
    let admin = api_key("ak_0a", Role::Admin, "ha");
    let manage = api_key("ak_0b", Role::Manage(env("prod")), "hb");
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    store.insert_api_key(&manage, &Actor::System).await.unwrap();
    let k = config_key("LIMITS");
    let put = |actor: Actor, e: EnvName| {
        let (store, k) = (store.clone(), k.clone());
        async move {
            store
                .put_config(&e, &k, "1".to_owned(), Precondition::None, at(2), &actor)
                .await
        }
    };
    put(key_actor(&manage), env("prod")).await.unwrap();
    let missing = put(key_actor(&admin), env("nowhere")).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert_eq!(store.get_config(&env("nowhere"), &k).await.unwrap(), None);
    let elsewhere = Actor::Key {
        id: manage.meta.id.clone(),
        environment: Some(env("staging")),
        origin: Default::default(),
    };
    let refused = put(elsewhere, env("prod")).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    store
        .delete_api_key(&manage.meta.id, &key_actor(&admin))
        .await
        .unwrap();
    let refused = put(key_actor(&manage), env("prod")).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let refused = store
        .delete_config(&env("prod"), &k, Precondition::None, &key_actor(&manage))
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let kept = store.get_config(&env("prod"), &k).await.unwrap().unwrap();
    assert_eq!(kept.revision, 1, "the revoked key changed nothing");
}

/// Deleting an environment deletes its entries in the same transaction, and creating one
/// clears entries a racing write left under its name: a new environment starts empty.
pub async fn config_entries_go_with_their_environment(store: Arc<impl Catalog>) {
    let prod = Environment {
        name: env("prod"),
        id: test_env_id(),
        created_at: at(1),
    };
    let k = config_key("A");
    store
        .create_environment(&prod, &Actor::System)
        .await
        .unwrap();
    set_config(&*store, &env("prod"), &k, "1", 2).await;
    set_config(&*store, &env("kept"), &k, "1", 2).await;
    store
        .delete_environment(&env("prod"), &Actor::System)
        .await
        .unwrap();
    assert_eq!(store.get_config(&env("prod"), &k).await.unwrap(), None);
    assert!(store.get_config(&env("kept"), &k).await.unwrap().is_some());
    // A system write that raced the deletion and landed afterwards:
    set_config(&*store, &env("prod"), &k, "1", 3).await;
    store
        .create_environment(&prod, &Actor::System)
        .await
        .unwrap();
    assert!(
        store
            .list_config(&env("prod"), None, PageSize::rows(10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Rounds each racing case runs: enough for a check-then-act to lose at least once.
const ROUNDS: usize = 50;

/// Writers racing in one round of the revision cases.
const RACERS: u64 = 6;

/// `RACERS` unconditional puts to one secret at once, round after round: each gets a
/// revision of its own, 1..=RACERS, and the last one stored is the highest.
pub async fn racing_unconditional_puts_get_distinct_revisions(
    store: Arc<impl SecretStore + Environments>,
) {
    let e = environment(&*store, "race").await;
    for round in 0..ROUNDS {
        let n = name(&format!("S{round}"));
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, e, n) = (store.clone(), e.clone(), n.clone());
                tokio::spawn(async move {
                    let out = store
                        .put(
                            &e,
                            &n,
                            sealed(1, "x::y"),
                            Precondition::None,
                            at(1),
                            &Actor::System,
                        )
                        .await
                        .expect("an unconditional put succeeds");
                    (out.meta.revision, out.created)
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.expect("writer"));
        }
        got.sort_unstable();
        let revisions: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (1..=RACERS).collect::<Vec<_>>(), "round {round}");
        assert_eq!(got.iter().filter(|(_, created)| *created).count(), 1);
        let stored = store.meta(&e, &n).await.unwrap().unwrap().revision;
        assert_eq!(stored, RACERS);
    }
}

/// The same for config entries.
pub async fn racing_unconditional_config_puts_get_distinct_revisions(store: Arc<impl Catalog>) {
    let e = env("race");
    for round in 0..ROUNDS {
        let k = config_key(&format!("K{round}"));
        let tasks: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, e, k) = (store.clone(), e.clone(), k.clone());
                tokio::spawn(async move {
                    let out = store
                        .put_config(
                            &e,
                            &k,
                            "1".into(),
                            Precondition::None,
                            at(1),
                            &Actor::System,
                        )
                        .await
                        .expect("an unconditional put succeeds");
                    (out.entry.revision, out.created)
                })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.expect("writer"));
        }
        got.sort_unstable();
        let revisions: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (1..=RACERS).collect::<Vec<_>>(), "round {round}");
        assert_eq!(got.iter().filter(|(_, created)| *created).count(), 1);
        let stored = store.get_config(&e, &k).await.unwrap().unwrap().revision;
        assert_eq!(stored, RACERS);
    }
}

fn admin_ids(keys: &[ApiKeyMeta]) -> Vec<String> {
    keys.iter()
        .filter(|k| k.role == Role::Admin)
        .map(|k| k.id.to_string())
        .collect()
}

/// Two revocations of the only two admin keys at once, round after round: exactly one
/// succeeds, the other is refused as the last admin key, and one admin key remains.
pub async fn racing_revocations_of_the_last_two_admin_keys_leave_one(catalog: Arc<impl Catalog>) {
    let key = |round: usize| {
        api_key(
            &format!("ak_{round:04x}"),
            Role::Admin,
            &format!("h{round}"),
        )
    };
    catalog
        .insert_api_key(&key(ROUNDS), &Actor::System)
        .await
        .unwrap();
    for round in 0..ROUNDS {
        catalog
            .insert_api_key(&key(round), &Actor::System)
            .await
            .unwrap();
        let admins = admin_ids(&catalog.list_api_keys().await.unwrap());
        assert_eq!(admins.len(), 2, "round {round}");
        let tasks: Vec<_> = admins
            .iter()
            .map(|id| {
                let (catalog, id) = (catalog.clone(), ApiKeyId::new(id).unwrap());
                tokio::spawn(async move { catalog.delete_api_key(&id, &Actor::System).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("revoker"));
        }
        let done = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::LastAdminKey)))
            .count();
        assert_eq!((done, refused), (1, 1), "round {round}: {results:?}");
        let left = admin_ids(&catalog.list_api_keys().await.unwrap());
        assert_eq!(left.len(), 1, "round {round}");
    }
}

/// A scoped key created while its environment is deleted, round after round: afterwards
/// either both exist or neither (the key never outlives its environment).
pub async fn a_scoped_key_racing_its_environments_deletion_lands_with_it_or_not_at_all(
    catalog: Arc<impl Catalog>,
) {
    let e = env("race");
    for round in 0..ROUNDS {
        let incarnation = Environment {
            name: e.clone(),
            id: test_env_id(),
            created_at: at(1),
        };
        catalog
            .create_environment(&incarnation, &Actor::System)
            .await
            .unwrap();
        let hash = format!("race{round}");
        let key = api_key(&format!("ak_{round:04x}"), Role::Runtime(e.clone()), &hash);
        let insert = {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.insert_api_key(&key, &Actor::System).await })
        };
        let delete = {
            let (catalog, e) = (catalog.clone(), e.clone());
            tokio::spawn(async move { catalog.delete_environment(&e, &Actor::System).await })
        };
        let inserted = insert.await.expect("inserter");
        assert!(
            matches!(inserted, Ok(()) | Err(StoreError::NotFound)),
            "round {round}: {inserted:?}"
        );
        delete
            .await
            .expect("deleter")
            .expect("the environment existed");
        let key_exists = catalog.find_api_key(&hash).await.unwrap().is_some();
        let env_exists = catalog.get_environment(&e).await.unwrap().is_some();
        assert_eq!(key_exists, env_exists, "round {round}");
        assert!(
            !key_exists,
            "round {round}: the key outlived its environment"
        );
    }
}

/// Many first starts at once on one new catalog: exactly one bootstraps, and its admin key
/// is the only one. (One catalog bootstraps once, so this races many starters in one round
/// rather than two in many.)
pub async fn racing_bootstraps_bootstrap_once(catalog: Arc<impl Catalog>) {
    let starters = 16;
    let tasks: Vec<_> = (0..starters)
        .map(|i| {
            let catalog = catalog.clone();
            tokio::spawn(async move {
                let first = Environment {
                    name: env("default"),
                    id: test_env_id(),
                    created_at: at(1),
                };
                let admin = api_key(&format!("ak_{i:04x}"), Role::Admin, &format!("h{i}"));
                catalog.bootstrap(&first, &admin).await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.expect("starter").expect("bootstrap answers") {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(admin_ids(&catalog.list_api_keys().await.unwrap()).len(), 1);
    assert_eq!(catalog.list_environments().await.unwrap().len(), 1);
}

/// A scoped key's config write racing the deletion of its environment, round after round:
/// the write is refused, or it lands before the deletion and goes with the environment;
/// nothing is left behind either way.
pub async fn a_write_racing_its_environments_deletion_leaves_nothing_behind(
    store: Arc<impl Catalog>,
) {
    let e = env("race");
    let k = config_key("LIMITS");
    for round in 0..ROUNDS {
        let incarnation = Environment {
            name: e.clone(),
            id: test_env_id(),
            created_at: at(1),
        };
        store
            .create_environment(&incarnation, &Actor::System)
            .await
            .unwrap();
        let key = api_key(
            &format!("ak_{round:04x}"),
            Role::Manage(e.clone()),
            &format!("h{round}"),
        );
        store.insert_api_key(&key, &Actor::System).await.unwrap();
        let write = {
            let (store, e, k, actor) = (store.clone(), e.clone(), k.clone(), key_actor(&key));
            tokio::spawn(async move {
                store
                    .put_config(&e, &k, "1".into(), Precondition::None, at(2), &actor)
                    .await
            })
        };
        let delete = {
            let (store, e) = (store.clone(), e.clone());
            tokio::spawn(async move { store.delete_environment(&e, &Actor::System).await })
        };
        let written = write.await.expect("writer");
        assert!(
            matches!(
                written,
                Ok(_) | Err(StoreError::NotFound) | Err(StoreError::ActorRevoked)
            ),
            "round {round}: {written:?}"
        );
        delete
            .await
            .expect("deleter")
            .expect("the environment existed");
        assert_eq!(
            store.get_config(&e, &k).await.unwrap(),
            None,
            "round {round}"
        );
    }
}

/// A key's write racing its revocation, round after round: the write is refused, or the
/// journal records it before the revocation (never a change by a key already revoked).
pub async fn a_write_racing_its_keys_revocation_is_journaled_before_it_or_refused(
    store: Arc<impl Catalog>,
) {
    let e = env("race");
    let incarnation = Environment {
        name: e.clone(),
        id: test_env_id(),
        created_at: at(1),
    };
    store
        .create_environment(&incarnation, &Actor::System)
        .await
        .unwrap();
    let revoker = api_key("ak_ffff", Role::Admin, "revoker");
    store
        .insert_api_key(&revoker, &Actor::System)
        .await
        .unwrap();
    for round in 0..ROUNDS {
        let key = api_key(
            &format!("ak_{round:04x}"),
            Role::Admin,
            &format!("h{round}"),
        );
        store.insert_api_key(&key, &Actor::System).await.unwrap();
        let (before, _) = store.audit_head().await.unwrap();
        let write = {
            let (store, e, actor) = (store.clone(), e.clone(), key_actor(&key));
            tokio::spawn(async move {
                let k = config_key(&format!("K{round}"));
                store
                    .put_config(&e, &k, "1".into(), Precondition::None, at(2), &actor)
                    .await
            })
        };
        let revoke = {
            let (store, id, actor) = (store.clone(), key.meta.id.clone(), key_actor(&revoker));
            tokio::spawn(async move { store.delete_api_key(&id, &actor).await })
        };
        let written = write.await.expect("writer");
        revoke.await.expect("revoker").expect("the key existed");
        let query = AuditQuery {
            after: Some(before),
            ..AuditQuery::default()
        };
        let (rows, _) = store.audit(&query, 100).await.unwrap();
        let position = |action: &str| rows.iter().position(|r| r.action == action);
        let revoked = position("apikey.revoked").expect("the revocation is journaled");
        match written {
            Ok(_) => {
                let put = position("config.created").expect("the write is journaled");
                assert!(
                    put < revoked,
                    "round {round}: written after its key was revoked"
                );
            }
            Err(StoreError::ActorRevoked) => {
                assert_eq!(position("config.created"), None, "round {round}");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

fn check(out: &PutOutcome, opened: bool) -> ValueCheck {
    ValueCheck {
        environment: out.meta.environment.clone(),
        environment_id: out.meta.environment_id.clone(),
        name: out.meta.name.clone(),
        revision: out.meta.revision,
        key_version: out.meta.key_version,
        opened,
    }
}

fn mark_of(out: &PutOutcome) -> UnreadableMark {
    UnreadableMark {
        environment: out.meta.environment.clone(),
        name: out.meta.name.clone(),
        revision: out.meta.revision,
        key_version: out.meta.key_version,
    }
}

async fn marks_of(
    store: &(impl KeyStore + ?Sized),
    e: &str,
    names: &[&str],
) -> Vec<UnreadableMark> {
    let names: Vec<SecretName> = names.iter().map(|n| name(n)).collect();
    let mut marks = store.unreadable_marks(&env(e), &names).await.unwrap();
    marks.sort_by(|a, b| a.name.cmp(&b.name));
    marks
}

async fn prod_with(store: &(impl Catalog + SecretStore), names: &[&str]) -> Vec<PutOutcome> {
    let prod = environment(store, "prod").await;
    let mut outs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let version = if i % 2 == 0 { 1 } else { 2 };
        outs.push(set(store, &prod, &name(n), sealed(version, "blob"), at(2)).await);
    }
    outs
}

/// Checks that did not open mark their secret at that revision, counted per key version;
/// checks that opened clear the marks; marks are read back for the names asked only.
pub async fn unreadable_marks_are_recorded_counted_and_cleared(
    store: Arc<impl Catalog + SecretStore>,
) {
    assert!(store.unreadable_counts().await.unwrap().is_empty());
    let outs = prod_with(&*store, &["A", "B", "C"]).await;
    assert!(marks_of(&*store, "prod", &["A", "B", "C"]).await.is_empty());
    let checks = [
        check(&outs[0], false),
        check(&outs[1], false),
        check(&outs[2], true),
    ];
    store.record_checks(&checks, None).await.unwrap();
    assert_eq!(
        store
            .unreadable_counts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
    assert_eq!(
        marks_of(&*store, "prod", &["A", "B", "C"]).await,
        [mark_of(&outs[0]), mark_of(&outs[1])]
    );
    assert_eq!(marks_of(&*store, "prod", &["B"]).await, [mark_of(&outs[1])]);
    assert!(marks_of(&*store, "other", &["A"]).await.is_empty());
    // Recording the same finding again changes nothing; a value that now opens is cleared.
    store.record_checks(&checks[..1], None).await.unwrap();
    store
        .record_checks(&[check(&outs[1], true)], None)
        .await
        .unwrap();
    assert_eq!(
        marks_of(&*store, "prod", &["A", "B", "C"]).await,
        [mark_of(&outs[0])]
    );
    assert_eq!(
        store
            .unreadable_counts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(1, 1)]
    );
}

/// A new revision (put, batch put) or a deletion removes the secret's mark with it.
pub async fn a_write_or_delete_supersedes_an_unreadable_mark(
    store: Arc<impl Catalog + SecretStore>,
) {
    let outs = prod_with(&*store, &["A", "B", "C", "D"]).await;
    let all: Vec<ValueCheck> = outs.iter().map(|o| check(o, false)).collect();
    store.record_checks(&all, None).await.unwrap();
    assert_eq!(
        marks_of(&*store, "prod", &["A", "B", "C", "D"]).await.len(),
        4
    );
    set(
        &*store,
        &environment(&*store, "prod").await,
        &name("A"),
        sealed(1, "new"),
        at(3),
    )
    .await;
    store
        .delete(
            &environment(&*store, "prod").await,
            &name("B"),
            Precondition::None,
            &Actor::System,
        )
        .await
        .unwrap();
    let batch = vec![
        BatchPut {
            name: name("C"),
            value: Some(sealed(1, "new")),
            precondition: Precondition::Revision(1),
        },
        BatchPut {
            name: name("D"),
            value: None,
            precondition: Precondition::Revision(1),
        },
    ];
    store
        .put_many(
            &environment(&*store, "prod").await,
            batch,
            at(4),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(
        marks_of(&*store, "prod", &["A", "B", "C", "D"]).await,
        [mark_of(&outs[3])],
        "only D, left unchanged by the batch, keeps its mark"
    );
    assert_eq!(
        store
            .unreadable_counts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(2, 1)]
    );
}

/// A walk that read revision 1 reports it unreadable after a write made revision 2: the
/// finding concerns a value that is gone, so no mark is recorded (nor for a deleted secret).
pub async fn a_mark_of_a_revision_already_replaced_is_not_recorded(
    store: Arc<impl Catalog + SecretStore>,
) {
    let outs = prod_with(&*store, &["A", "B"]).await;
    set(
        &*store,
        &environment(&*store, "prod").await,
        &name("A"),
        sealed(1, "new"),
        at(3),
    )
    .await;
    store
        .delete(
            &environment(&*store, "prod").await,
            &name("B"),
            Precondition::None,
            &Actor::System,
        )
        .await
        .unwrap();
    store
        .record_checks(&[check(&outs[0], false), check(&outs[1], false)], None)
        .await
        .unwrap();
    assert!(marks_of(&*store, "prod", &["A", "B"]).await.is_empty());
    assert!(store.unreadable_counts().await.unwrap().is_empty());
}

/// A check read from an incarnation since deleted, recorded after the environment was
/// re-created with a secret of the same name and revision, neither marks that secret nor
/// clears its mark.
pub async fn a_late_check_of_a_deleted_incarnation_changes_no_mark(
    store: Arc<impl Catalog + SecretStore>,
) {
    let old = prod_with(&*store, &["A"]).await;
    store
        .delete_environment(&env("prod"), &Actor::System)
        .await
        .unwrap();
    // Re-created: the same name, a new incarnation, a secret of the same name and revision.
    let new = prod_with(&*store, &["A"]).await;
    assert_eq!(
        (&new[0].meta.name, new[0].meta.revision),
        (&old[0].meta.name, old[0].meta.revision)
    );
    assert_ne!(new[0].meta.environment_id, old[0].meta.environment_id);
    // A check of the old incarnation that failed lands late: it marks nothing.
    store
        .record_checks(&[check(&old[0], false)], None)
        .await
        .unwrap();
    assert!(marks_of(&*store, "prod", &["A"]).await.is_empty());
    // Nor does one that opened clear the new incarnation's mark.
    store
        .record_checks(&[check(&new[0], false)], None)
        .await
        .unwrap();
    store
        .record_checks(&[check(&old[0], true)], None)
        .await
        .unwrap();
    assert_eq!(marks_of(&*store, "prod", &["A"]).await, [mark_of(&new[0])]);
}

/// Deleting an environment removes its marks in the same transaction; creating one of the
/// same name starts without any.
pub async fn unreadable_marks_go_with_their_environment(store: Arc<impl Catalog + SecretStore>) {
    let outs = prod_with(&*store, &["A"]).await;
    let staging = environment(&*store, "staging").await;
    let kept = set(&*store, &staging, &name("A"), sealed(1, "b"), at(2)).await;
    store
        .record_checks(&[check(&outs[0], false), check(&kept, false)], None)
        .await
        .unwrap();
    store
        .delete_environment(&env("prod"), &Actor::System)
        .await
        .unwrap();
    assert!(marks_of(&*store, "prod", &["A"]).await.is_empty());
    assert_eq!(marks_of(&*store, "staging", &["A"]).await, [mark_of(&kept)]);
    assert_eq!(
        store
            .unreadable_counts()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(1, 1)]
    );
}

/// A verification batch appends one `keys.verified` audit row and event with the number of
/// values checked, even when it checked none; a revoked actor records nothing; bookkeeping
/// (no actor) is not audited.
pub async fn a_verification_is_audited_and_rechecks_its_actor(
    store: Arc<impl Catalog + SecretStore>,
) {
    let outs = prod_with(&*store, &["A", "B"]).await;
    let (admin, other) = (
        api_key("ak_0a", Role::Admin, "ha"),
        api_key("ak_0b", Role::Admin, "hb"),
    );
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    store.insert_api_key(&other, &Actor::System).await.unwrap();
    let before = store.last_event_id().await.unwrap();
    store
        .record_checks(&[check(&outs[0], false)], None)
        .await
        .unwrap();
    assert_eq!(store.last_event_id().await.unwrap(), before, "bookkeeping");
    let checks = [check(&outs[0], false), check(&outs[1], true)];
    store
        .record_checks(
            &checks,
            Some(Verification {
                by: &key_actor(&admin),
                checked: 2,
            }),
        )
        .await
        .unwrap();
    store
        .record_checks(
            &[],
            Some(Verification {
                by: &Actor::System,
                checked: 0,
            }),
        )
        .await
        .unwrap();
    let events = store.events_after(before, 10).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.subject.as_str(), e.count, e.actor.key_id.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("system.keys.verified", Some(2), Some("ak_0a")),
            ("system.keys.verified", Some(0), Some("system")),
        ]
    );
    let (rows, _) = store.audit(&AuditQuery::default(), 1000).await.unwrap();
    let verified: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "keys.verified")
        .map(|r| r.count)
        .collect();
    assert_eq!(verified, [2, 0]);
    store
        .delete_api_key(&admin.meta.id, &key_actor(&other))
        .await
        .unwrap();
    let refused = store
        .record_checks(
            &[check(&outs[1], false)],
            Some(Verification {
                by: &key_actor(&admin),
                checked: 1,
            }),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert_eq!(
        marks_of(&*store, "prod", &["B"]).await,
        [],
        "nothing recorded"
    );
}

/// A finding that a value does not open, recorded while a write replaces that value, round
/// after round: whichever commits first, no mark is left afterwards (a mark names a
/// revision that no longer stands only if a write forgot to remove it).
pub async fn a_mark_racing_a_write_of_its_secret_never_outlives_it(
    store: Arc<impl Catalog + SecretStore>,
) {
    let prod = environment(&*store, "prod").await;
    for round in 0..ROUNDS {
        let n = name(&format!("S{round}"));
        let first = set(&*store, &prod, &n, sealed(1, "old"), at(1)).await;
        let record = {
            let (store, checks) = (store.clone(), [check(&first, false)]);
            tokio::spawn(async move { store.record_checks(&checks, None).await })
        };
        let write = {
            let (store, prod, n) = (store.clone(), prod.clone(), n.clone());
            tokio::spawn(async move {
                store
                    .put(
                        &prod,
                        &n,
                        sealed(1, "new"),
                        Precondition::None,
                        at(2),
                        &Actor::System,
                    )
                    .await
            })
        };
        record.await.expect("recorder").expect("recorded");
        let written = write.await.expect("writer").expect("written");
        assert_eq!(written.meta.revision, 2);
        let left = marks_of(&*store, "prod", &[n.as_str()]).await;
        assert!(left.is_empty(), "round {round}: {left:?}");
    }
    assert!(store.unreadable_counts().await.unwrap().is_empty());
}

/// The names `store` lists in `env` as `listing` says.
async fn listed(
    store: &impl SecretStore,
    env: &Environment,
    listing: SecretListing<'_>,
    limit: usize,
) -> Vec<String> {
    let page = store.list(env, &listing, limit).await.unwrap();
    page.into_iter().map(|m| m.name.to_string()).collect()
}

/// Every order (by name or by update, either way) lists every secret once when read page by
/// page from its cursors, ties on `updated_at` broken by name; a search keeps the order.
pub async fn list_orders_by_name_or_update_either_way(store: Arc<impl SecretStore + Environments>) {
    let env = environment(&*store, "a").await;
    // Written in this order at these times: B and D at the same millisecond.
    for (n, t) in [("C", 5), ("A", 9), ("B", 3), ("E", 1), ("D", 3)] {
        set(&*store, &env, &name(n), sealed(1, "x::y"), at(t)).await;
    }
    let cases = [
        (SecretOrder::NameAsc, ["A", "B", "C", "D", "E"]),
        (SecretOrder::NameDesc, ["E", "D", "C", "B", "A"]),
        (SecretOrder::UpdatedAsc, ["E", "B", "D", "C", "A"]),
        (SecretOrder::UpdatedDesc, ["A", "C", "D", "B", "E"]),
    ];
    for (order, want) in cases {
        let mut seen: Vec<SecretMeta> = Vec::new();
        loop {
            let after = seen.last().map(|m| (&m.name, m.updated_at));
            let listing = SecretListing {
                order,
                after,
                search: None,
            };
            let page = store.list(&env, &listing, 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2, "{order:?}");
            seen.extend(page);
        }
        let names: Vec<String> = seen.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(names, want, "{order:?}");
    }
    let d = crate::NameSearch::new("d").unwrap();
    let listing = SecretListing {
        order: SecretOrder::UpdatedDesc,
        after: None,
        search: Some(&d),
    };
    assert_eq!(listed(&*store, &env, listing, 10).await, ["D"]);
}
