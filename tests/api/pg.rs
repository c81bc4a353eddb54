//! A PostgreSQL schema of its own for one test, on the server named by
//! `CRISP_RELAY_TEST_DATABASE_URL` (`.ci/run` sets it to the local server).
//! Without the variable a test says it was skipped and passes: see the
//! README, "Running the PostgreSQL tests".

#![allow(dead_code)]

use sqlx::Connection;

pub const VAR: &str = "CRISP_RELAY_TEST_DATABASE_URL";

/// A fresh schema; its URL connects into it (`search_path`) and names the
/// connections (`application_name`) so a test can cut its own off.
pub struct TestDb {
    /// Connects into the test's schema.
    pub url: String,
    base: String,
    pub schema: String,
}

impl TestDb {
    /// `None` (after saying so on stderr) when the variable is not set.
    pub async fn new(tag: &str) -> Option<Self> {
        let Some(base) = std::env::var(VAR).ok().filter(|v| !v.is_empty()) else {
            // Straight to stderr, past the test harness's capture, so that a
            // passing run still shows what it did not test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {tag}: {VAR} is not set (see README, \"Running the PostgreSQL tests\")"
            );
            return None;
        };
        let schema = format!("crisp_test_{tag}_{:08x}", fastrand::u32(..));
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("{VAR} is set but the server does not answer: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url =
            format!("{base}{sep}options=-c%20search_path%3D{schema}&application_name={schema}");
        Some(Self { url, base, schema })
    }

    /// Runs `sql` on a connection of its own (outside the schema's name).
    pub async fn execute(&self, sql: &str) -> u64 {
        let mut conn = sqlx::PgConnection::connect(&self.base).await.unwrap();
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
        let _ = conn.close().await;
        n
    }

    /// Cuts every connection made with this schema's URL (what a database
    /// restart or a network cut does to the relays); answers how many.
    pub async fn terminate_connections(&self) -> u64 {
        let mut conn = sqlx::PgConnection::connect(&self.base).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&self.schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
        n as u64
    }

    /// Drops the schema (a failed test leaves it, named, to look at).
    pub async fn drop_schema(self) {
        self.execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
    }
}
