//! PostgreSQL backend: production and scale-out.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use futures_util::future::BoxFuture;

use super::backend::SqlBackend;
use super::batch::{executor, HotWriter};
use super::sql::SqlStore;
use super::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Store on a PostgreSQL database.
pub type PgStore = SqlStore<sqlx::Postgres>;

/// Concurrent group-commit transactions (PostgreSQL commits in parallel).
const GROUP_WRITERS: usize = 4;

impl SqlStore<sqlx::Postgres> {
    /// Connects a pool to the database named by a `postgres://` URL.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?.application_name("push-service");
        if let Some(ca) = ca_file {
            options = options.ssl_root_cert(ca);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // A broken connection fails its query (503 / task released) and is
            // dropped; a ping before every acquire doubled the round trips.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let writer = HotWriter::spawn(GROUP_WRITERS, executor(pool.clone()));
        Ok(SqlStore { pool, writer })
    }
}

impl SqlBackend for sqlx::Postgres {
    const NAME: &'static str = "postgres";
    const BEGIN_WRITE: &'static str = "BEGIN";

    fn migrate(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(MIGRATOR.run(pool))
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
