//! A fresh PostgreSQL database per test on the server that `QC_OFFBOARD_TEST_PG` names (for
//! example `postgres://root@127.0.0.1:5432/test`), dropped when the test ends, pass or fail, so
//! that the PostgreSQL tests run in parallel. Without the variable each test prints that it was
//! skipped (on stderr, even when the harness captures output) and passes.

use std::sync::atomic::{AtomicUsize, Ordering};

use qc_offboard::store::postgres::PgStore;
use sqlx::{Connection, Executor, PgConnection};

/// The variable that turns the PostgreSQL tests on.
pub const VAR: &str = "QC_OFFBOARD_TEST_PG";

pub struct TestDb {
    /// The URL of this test's own database.
    pub url: String,
    server: String,
    name: String,
}

impl TestDb {
    /// A new empty database, or `None` (with a line saying so) when `QC_OFFBOARD_TEST_PG` is
    /// unset. Use as `let Some(db) = TestDb::create("name").await else { return };`.
    pub async fn create(test: &str) -> Option<TestDb> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let Some(server) = std::env::var(VAR).ok().filter(|v| !v.is_empty()) else {
            // Straight to stderr, past the test harness's capture, so a run shows what it skipped.
            let line =
                format!("skipped {test}: {VAR} is not set (a URL such as postgres://root@127.0.0.1:5432/test)\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return None;
        };
        let name = format!("qc_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut conn = PgConnection::connect(&server).await.expect("connect to the test server");
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create the test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&server).expect("the test server's URL");
        url.set_path(&format!("/{name}"));
        Some(TestDb { url: url.to_string(), server, name })
    }

    /// The product's store on this database (a "host": each call opens its own pool).
    pub async fn open(&self) -> PgStore {
        PgStore::open(&self.url).await.expect("open the test database")
    }

    /// A connection that bypasses the product, as someone holding the database could open it.
    pub async fn raw(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("raw connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // On a thread of its own: drop runs inside the test's runtime, which cannot block on a
        // future. FORCE ends the connections the test's pools still hold.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&server).await.map_err(std::io::Error::other)?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(std::io::Error::other)?;
                conn.close().await.map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
