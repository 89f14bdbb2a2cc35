//! The backend every test of this suite runs on (`COFFER_TEST_BACKEND`).

use std::path::Path;
use std::sync::Arc;

use coffer_postgres::testing::TestDatabase;
use coffer_postgres::{PgOptions, PgStore};
use coffer_sqlite::SqliteStore;
use coffer_store::{Catalog, SecretStore};

/// The catalog and the secret store of a fresh database for the test whose temp dir is
/// `dir`, and the database to keep as long as the server runs (PostgreSQL).
pub async fn open(dir: &Path) -> (Arc<dyn Catalog>, Arc<dyn SecretStore>, Option<TestDatabase>) {
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
    }
}
