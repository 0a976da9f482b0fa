//! PostgreSQL backend: production and scale-out.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::sql::impl_sql_store;
use super::sql_dispatch::{impl_sql_dispatch, NOTIFICATION_COLUMNS};
use super::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Store on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    writer: super::group::GroupWriter,
}

/// Concurrent group-commit transactions (PostgreSQL commits in parallel).
const GROUP_WRITERS: usize = 4;

impl PgStore {
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
        let writer = super::group::GroupWriter::spawn(GROUP_WRITERS, group_executor(pool.clone()));
        Ok(PgStore { pool, writer })
    }
}

impl_sql_store!(PgStore, "postgres", MIGRATOR);

impl super::Backend for PgStore {
    type Db = sqlx::Postgres;
    const BEGIN_WRITE: &'static str = "BEGIN";
}

impl_sql_dispatch!(PgStore);
