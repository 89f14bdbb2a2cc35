//! Throwaway databases for tests of this and other crates (feature `testing`).
//!
//! The server is `COFFER_TEST_DATABASE_URL` (`scripts/postgres.sh` finds or starts one and
//! prints it); without it a test fails, saying how to get one, and never skips. Each
//! [`TestDatabase`] is a database of its own, `coffer_t_<pid>_<n>_<nanos>`, dropped (best
//! effort) with it; `scripts/test.sh` drops any left over.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection;

/// A database of one test's own.
pub struct TestDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the test server.
    ///
    /// # Panics
    /// When `COFFER_TEST_DATABASE_URL` is unset or the server refuses: a test without its
    /// database must fail, loudly.
    pub async fn create() -> TestDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let server_url = std::env::var("COFFER_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "COFFER_TEST_DATABASE_URL is not set: the PostgreSQL tests need a server. \
                 Run `eval \"$(scripts/postgres.sh)\"` (it finds or starts one and prints the \
                 URL), then run the tests again; scripts/test.sh does both."
            )
        });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "coffer_t_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&server_url)
            .await
            .expect("connect to COFFER_TEST_DATABASE_URL");
        // Concurrent CREATE DATABASE can trip over the template being copied: retry a little.
        let mut tries = 0;
        loop {
            match sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
            {
                Ok(_) => break,
                Err(_) if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot create a test database: {e}"),
            }
        }
        let (base, query) = match server_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (server_url.as_str(), String::new()),
        };
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let url = format!("{server}/{name}{query}");
        TestDatabase {
            server_url,
            name,
            url,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&server_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut c).await;
                }
            });
        });
        let _ = dropper.join();
    }
}
