//! The backend every test of this suite runs on: the catalog `COFFER_TEST_BACKEND` names
//! (`sqlite`, the default, or `postgres`), and the value store `COFFER_TEST_VALUES` names
//! (`db`, the default: values in the catalog; `nats`: JetStream KV on `COFFER_TEST_NATS_URL`;
//! `vault` / `vault-kv1`: OpenBao KV v2 / v1 on `COFFER_TEST_VAULT_ADDR`, root token
//! `COFFER_TEST_VAULT_TOKEN`, under a path of the test's own). `scripts/test.sh` runs the
//! suite on each.

use std::path::Path;
use std::sync::Arc;

use coffer_postgres::testing::TestDatabase;
use coffer_postgres::{PgOptions, PgStore};
use coffer_sqlite::SqliteStore;
use coffer_store::{Catalog, ExternalSecrets, SecretStore, ValueStore};

/// The catalog and the secret store of a fresh database for the test whose temp dir is
/// `dir`, and the database to keep as long as the server runs (PostgreSQL).
pub async fn open(dir: &Path) -> (Arc<dyn Catalog>, Arc<dyn SecretStore>, Option<TestDatabase>) {
    let (catalog, index, database): (Arc<dyn Catalog>, Arc<dyn SecretStore>, _) =
        match std::env::var("COFFER_TEST_BACKEND").as_deref() {
            Ok("sqlite") | Err(std::env::VarError::NotPresent) => {
                let store = Arc::new(SqliteStore::open(dir).expect("open the SQLite store"));
                (store.clone(), store, None)
            }
            Ok("postgres") => {
                let db = TestDatabase::create().await;
                let store = PgStore::connect(db.url(), PgOptions::default())
                    .await
                    .expect("connect to the test database");
                let store = Arc::new(store);
                (store.clone(), store, Some(db))
            }
            Ok(other) => panic!("COFFER_TEST_BACKEND={other}: expected sqlite or postgres"),
            Err(e) => panic!("COFFER_TEST_BACKEND: {e}"),
        };
    let secrets = match values().await {
        Some(values) => Arc::new(ExternalSecrets::new(index, values)) as Arc<dyn SecretStore>,
        None => index,
    };
    (catalog, secrets, database)
}

/// The value store `COFFER_TEST_VALUES` names, if any.
async fn values() -> Option<Arc<dyn ValueStore>> {
    let which = std::env::var("COFFER_TEST_VALUES").unwrap_or_default();
    let required = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("COFFER_TEST_VALUES={which} needs {name} (scripts/test.sh sets it)")
        })
    };
    match which.as_str() {
        "" | "db" => None,
        "nats" => {
            let url = required("COFFER_TEST_NATS_URL");
            let options = coffer_nats::values::NatsValueOptions::from_env(|k| match k {
                "COFFER_NATS_URL" => Some(url.clone()),
                _ => None,
            })
            .expect("NATS settings")
            .expect("a NATS URL");
            let store = coffer_nats::values::NatsValues::connect(options)
                .await
                .expect("connect to the test NATS server");
            Some(Arc::new(store))
        }
        "vault" | "vault-kv1" => {
            let addr = required("COFFER_TEST_VAULT_ADDR");
            let token = required("COFFER_TEST_VAULT_TOKEN");
            // A path of this test's own: environments of every test are named alike.
            let unique = format!(
                "t{}{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            );
            let (version, path) = if which == "vault" {
                ("2", format!("secret/data/{unique}"))
            } else {
                ("1", format!("kv1/{unique}"))
            };
            let config = coffer_vault::config::VaultConfig::from_env(|k| match k {
                "COFFER_VAULT_ADDR" => Some(addr.clone()),
                "COFFER_VAULT_TOKEN" => Some(token.clone()),
                "COFFER_VAULT_KV_VERSION" => Some(version.into()),
                "COFFER_VAULT_SECRET_PATH" => Some(path.clone()),
                "COFFER_VAULT_VALUE_FORMAT" => Some("sealed".into()),
                _ => None,
            })
            .expect("Vault settings");
            let store = coffer_vault::VaultValues::connect(config)
                .await
                .expect("connect to the test OpenBao server");
            Some(Arc::new(store))
        }
        other => panic!("COFFER_TEST_VALUES={other}: expected db, nats, vault or vault-kv1"),
    }
}
