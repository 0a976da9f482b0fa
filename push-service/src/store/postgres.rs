//! PostgreSQL backend: production and scale-out.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use futures_util::future::BoxFuture;

use super::backend::SqlBackend;
use super::batch::{executor, HotWriter};
use super::group::GroupKind;
use super::sql::SqlStore;
use super::StoreError;

/// The migrations this build carries. A database migrated by a newer build
/// (migrations unknown here) is accepted: they only add, so a rolled-back or
/// not yet upgraded node keeps working on it (docs/OPERATIONS.md).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

/// Store on a PostgreSQL database.
pub type PgStore = SqlStore<sqlx::Postgres>;

/// Group-commit transactions written at once, at most. A group waits for
/// the one being written unless it holds `group::GATHER` writes already, so
/// under a steady load one is written at a time and groups grow with the
/// load (four writers taking whatever was waiting split 16 connections'
/// writes into groups of one or two: 3.0 statements and 1.2 transactions per
/// unicast notification against 1.2 and 0.7), while a burst — a fan-out's
/// holds on the direct channel — is written four groups at a time
/// (BENCHMARKS.md, "One writer").
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
        let days = std::sync::Arc::new(super::partitions::Days::default());
        let writer = HotWriter::spawn(
            GroupKind::Writes,
            GROUP_WRITERS,
            executor(pool.clone(), days.clone()),
        );
        let lookups = super::sql::lookups(pool.clone());
        Ok(SqlStore {
            pool,
            writer,
            days,
            lookups,
        })
    }
}

impl SqlBackend for sqlx::Postgres {
    const NAME: &'static str = "postgres";
    const BEGIN_WRITE: &'static str = "BEGIN";

    fn migrate(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(async move { migrator().run(pool).await })
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    const PARTITIONED: bool = true;
    const PREPARE_PARTITIONED: bool = false;
    const INSERTS_WITH: bool = true;

    fn maintain_partitions(
        pool: &sqlx::Pool<Self>,
        now: i64,
        drop_before: Option<i64>,
    ) -> BoxFuture<'_, Result<super::PartitionChange, StoreError>> {
        Box::pin(super::partitions::maintain(pool, now, drop_before))
    }
}
