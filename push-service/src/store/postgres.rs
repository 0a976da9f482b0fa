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
}

impl PgStore {
    /// Connects a pool to the database named by a `postgres://` URL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("push-service");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(PgStore { pool })
    }
}

impl_sql_store!(PgStore, "postgres", MIGRATOR);

impl super::Backend for PgStore {
    type Db = sqlx::Postgres;
}

impl_sql_dispatch!(PgStore);
