//! The backend every test of this suite runs on (`COFFER_TEST_BACKEND`).

use std::path::Path;
use std::sync::Arc;

use coffer_sqlite::SqliteStore;

use crate::harness::TestStore;

/// A store on the database `dir` stands for.
pub async fn open(dir: &Path) -> Arc<dyn TestStore> {
    match std::env::var("COFFER_TEST_BACKEND").as_deref() {
        Ok("sqlite") | Err(std::env::VarError::NotPresent) => {
            Arc::new(SqliteStore::open(dir).expect("open the SQLite store"))
        }
        Ok(other) => panic!("COFFER_TEST_BACKEND={other}: expected sqlite or postgres"),
        Err(e) => panic!("COFFER_TEST_BACKEND: {e}"),
    }
}
