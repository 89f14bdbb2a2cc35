//! The backend every test of this suite runs on (`COFFER_TEST_BACKEND`).

use std::path::Path;
use std::sync::Arc;

use coffer_postgres::testing::TestDatabase;
use coffer_postgres::{PgOptions, PgStore};
use coffer_sqlite::SqliteStore;

use crate::harness::TestStore;

/// The database a test's temp dir stands for: created on the first open, the same on
/// every later one (a restart). Kept until the process ends (`scripts/test.sh` drops what
/// is left).
async fn database_for(dir: &Path) -> String {
    static DATABASES: std::sync::Mutex<Vec<(std::path::PathBuf, TestDatabase)>> =
        std::sync::Mutex::new(Vec::new());
    let known = |dbs: &Vec<(std::path::PathBuf, TestDatabase)>| {
        dbs.iter()
            .find(|(d, _)| d == dir)
            .map(|(_, db)| db.url().to_owned())
    };
    if let Some(url) = known(&DATABASES.lock().unwrap()) {
        return url;
    }
    let db = TestDatabase::create().await;
    let url = db.url().to_owned();
    DATABASES.lock().unwrap().push((dir.to_owned(), db));
    url
}

/// A store on the database `dir` stands for.
pub async fn open(dir: &Path) -> Arc<dyn TestStore> {
    match std::env::var("COFFER_TEST_BACKEND").as_deref() {
        Ok("sqlite") | Err(std::env::VarError::NotPresent) => {
            Arc::new(SqliteStore::open(dir).expect("open the SQLite store"))
        }
        Ok("postgres") => {
            let url = database_for(dir).await;
            let store = PgStore::connect(&url, PgOptions::default())
                .await
                .expect("connect to the test database");
            Arc::new(store)
        }
        Ok(other) => panic!("COFFER_TEST_BACKEND={other}: expected sqlite or postgres"),
        Err(e) => panic!("COFFER_TEST_BACKEND: {e}"),
    }
}

/// Another connection holding the write lock the revocation of an API key needs, as a
/// slow transaction of another process would: SQLite's write lock, or on PostgreSQL an
/// `EXCLUSIVE` lock on `api_keys` (reads go on; writes of keys wait).
pub enum KeyWriteLock {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

impl KeyWriteLock {
    pub async fn hold(dir: &Path) -> KeyWriteLock {
        use sqlx::Connection;
        if std::env::var("COFFER_TEST_BACKEND").as_deref() == Ok("postgres") {
            let url = database_for(dir).await;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE api_keys IN EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            KeyWriteLock::Postgres(c)
        } else {
            let c = rusqlite::Connection::open(dir.join(coffer_sqlite::DB_FILE)).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            KeyWriteLock::Sqlite(c)
        }
    }

    pub async fn release(self) {
        match self {
            KeyWriteLock::Sqlite(c) => c.execute_batch("COMMIT").unwrap(),
            KeyWriteLock::Postgres(mut c) => {
                sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    }
}
