//! The engines the store tests run against: SQLite in a temporary
//! directory, and PostgreSQL in a schema of its own (created for the test,
//! dropped after it) on the server `CRISP_RELAY_TEST_DATABASE_URL` names.
//! Without that variable a PostgreSQL test says it is skipped and passes.
//!
//! [`both_engines!`] turns `async fn name(engine: Engine)` into one test
//! per engine: `sqlite::name` and `postgres::name`.

use std::sync::Arc;
use std::time::Duration;

use crisp_relay::clock::Clock;
use crisp_relay::secret::DatabaseUrl;
use crisp_relay::store::{PgStore, SqliteStore, Store};
use sqlx::Connection;

pub const DATABASE_URL_VAR: &str = "CRISP_RELAY_TEST_DATABASE_URL";

/// A lease term for the tests that do not wait for one to run out.
pub const LEASE: Duration = Duration::from_secs(30);

pub enum Engine {
    Sqlite(tempfile::TempDir),
    Postgres(PgSchema),
}

impl Engine {
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh schema, or `None` (after saying so) without a server.
    pub async fn postgres() -> Option<Self> {
        PgSchema::create().await.map(Self::Postgres)
    }

    /// Opens (again) the store of this engine.
    pub async fn open(&self, capacity: usize, clock: Clock) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("relay.db"), capacity, clock)
                    .await
                    .unwrap(),
            ),
            Self::Postgres(schema) => Arc::new(schema.open(capacity, clock).await),
        }
    }

    /// The error opening the store gives.
    pub async fn open_err(&self, capacity: usize, clock: Clock) -> String {
        match self {
            Self::Sqlite(dir) => SqliteStore::open(&dir.path().join("relay.db"), capacity, clock)
                .await
                .unwrap_err()
                .to_string(),
            Self::Postgres(schema) => PgStore::open(&schema.url, LEASE, capacity, clock)
                .await
                .unwrap_err()
                .to_string(),
        }
    }

    /// Marks the store as written by a newer relay (schema `version`).
    pub async fn set_schema_version(&self, version: i64) {
        match self {
            Self::Sqlite(dir) => {
                let path = dir.path().join("relay.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA user_version = {version}"
                )))
                .execute(&mut conn)
                .await
                .unwrap();
                conn.close().await.unwrap();
            }
            Self::Postgres(schema) => {
                schema
                    .execute(&format!(
                        "UPDATE meta SET value = '{version}' WHERE key = 'schema_version'"
                    ))
                    .await
            }
        }
    }
}

/// A PostgreSQL schema of one test's own.
pub struct PgSchema {
    /// The server's URL, as given.
    base: String,
    pub name: String,
    /// The URL whose connections use the schema (`search_path`).
    pub url: DatabaseUrl,
}

impl PgSchema {
    pub async fn create() -> Option<Self> {
        let Ok(base) = std::env::var(DATABASE_URL_VAR) else {
            eprintln!(
                "skipped: {DATABASE_URL_VAR} is not set (see README, \"Running the PostgreSQL tests\")"
            );
            return None;
        };
        let name = format!("crisp_test_{:016x}", fastrand::u64(..));
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = DatabaseUrl::parse(&format!(
            "{base}{sep}options=-c%20search_path%3D{name}&application_name={name}"
        ))
        .unwrap();
        Some(Self { base, name, url })
    }

    pub async fn open(&self, capacity: usize, clock: Clock) -> PgStore {
        self.open_with_lease(capacity, clock, LEASE).await
    }

    pub async fn open_with_lease(&self, capacity: usize, clock: Clock, lease: Duration) -> PgStore {
        PgStore::open(&self.url, lease, capacity, clock)
            .await
            .unwrap()
    }

    /// A connection to the schema, outside any store.
    pub async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(self.url.expose().as_str())
            .await
            .unwrap()
    }

    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // A runtime of its own: the test's may be gone or single-threaded.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("note: could not drop the test schema {}", self.name);
        }
    }
}

/// One `#[tokio::test]` per engine for each `async fn(Engine)` named.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::store_engines::Engine::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(engine) = $crate::store_engines::Engine::postgres().await {
                        super::$name(engine).await
                    }
                }
            )*
        }
    };
}
pub(crate) use both_engines;
