//! The backend every test of this suite runs on (`COFFER_TEST_BACKEND`).

use std::path::Path;
use std::sync::Arc;

use coffer_sqlite::SqliteStore;
use coffer_store::{Catalog, SecretStore};

/// The catalog and the secret store of a fresh database for the test whose temp dir is
/// `dir`.
pub async fn open(dir: &Path) -> (Arc<dyn Catalog>, Arc<dyn SecretStore>) {
    match std::env::var("COFFER_TEST_BACKEND").as_deref() {
        Ok("sqlite") | Err(std::env::VarError::NotPresent) => {
            let store = Arc::new(SqliteStore::open(dir).expect("open the SQLite store"));
            (store.clone(), store)
        }
        Ok(other) => panic!("COFFER_TEST_BACKEND={other}: expected sqlite or postgres"),
        Err(e) => panic!("COFFER_TEST_BACKEND: {e}"),
    }
}
