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

/// The schema the migrations end with, written out whole
/// (`migrations/fresh/postgres.sql`).
const SCHEMA: &str = include_str!("../../../migrations/fresh/postgres.sql");

/// A fresh database is made from [`SCHEMA`] in one transaction, every
/// migration recorded as applied, as the migrator would have recorded it: a
/// node's first start commits once instead of once per migration, and skips
/// what the migrations make only to replace (three tables and their indexes
/// copied into partitioned ones by migration 10, indexes dropped by 12) —
/// its DDL is what a first start on PostgreSQL waits for (BENCHMARKS.md).
/// Any other database — one a migration already touched, or holding tables
/// of its own — is left to the migrator, which then finds nothing (or only
/// what is newer) to apply. Both paths give the same schema
/// (`tests/it/migrations.rs`). True when it made the schema: the migrator's
/// own pass (another lock, two reads) would find nothing to do.
async fn create_fresh(pool: &sqlx::PgPool) -> Result<bool, sqlx::migrate::MigrateError> {
    use sqlx::migrate::Migrate;
    let mut conn = pool.acquire().await?;
    // The migrator's own lock: a node starting beside this one waits, then
    // finds the migrations applied.
    conn.lock().await?;
    let created = make_if_fresh(&mut conn).await;
    let unlocked = conn.unlock().await;
    // The schema's error first: it says more than a failed unlock.
    let created = created?;
    unlocked.map(|()| created)
}

async fn make_if_fresh(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::migrate::MigrateError> {
    use sqlx::migrate::Migrate;
    let fresh: bool = sqlx::query_scalar(
        "SELECT to_regclass('_sqlx_migrations') IS NULL AND NOT EXISTS \
         (SELECT 1 FROM pg_tables WHERE schemaname = current_schema())",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !fresh {
        return Ok(false);
    }
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::Executor::execute(&mut *tx, SCHEMA).await?;
    tx.ensure_migrations_table().await?;
    // Recorded in one statement (one round trip, not one per migration).
    let migrator = migrator();
    let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let descriptions: Vec<&str> = migrator.iter().map(|m| &*m.description).collect();
    let checksums: Vec<&[u8]> = migrator.iter().map(|m| &*m.checksum).collect();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         SELECT version, description, TRUE, checksum, 0 \
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BYTEA[]) AS m (version, description, checksum)",
    )
    .bind(versions)
    .bind(descriptions)
    .bind(checksums)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
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

/// The group writers' connections: as the pool's, with every statement
/// planned once (`plan_cache_mode = force_generic_plan`, sent with the
/// connection's start, no round trip of its own). Left to choose, PostgreSQL
/// planned a small group's one statement again at every group, its arrays'
/// sizes known (0.31 ms to plan, 0.17–0.19 to run, with four clients) and
/// the plan the same each time; a group waits for the one before it, so the
/// planning was in every caller's wait (BENCHMARKS.md, "Planned once").
fn writer_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("plan_cache_mode", "force_generic_plan")])
}

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
        // The group writers' own connections, one each at most, held
        // between groups (`held.rs`): `database_max_connections` is the
        // requests' pool; a node opens up to GROUP_WRITERS more.
        let own = PgPoolOptions::new()
            .max_connections(GROUP_WRITERS as u32)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(writer_options(pool.connect_options().as_ref().clone()));
        let days = std::sync::Arc::new(super::partitions::Days::default());
        let writer = HotWriter::spawn(
            GroupKind::Writes,
            GROUP_WRITERS,
            executor(own, days.clone()),
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
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

    fn migrate(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(async move {
            if create_fresh(pool).await? {
                return Ok(());
            }
            migrator().run(pool).await
        })
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    const PARTITIONED: bool = true;
    const ROW_LOCKS: bool = true;
    const PREPARE_PARTITIONED: bool = false;
    const INSERTS_WITH: bool = true;
    const UPDATES_BY_ROW: bool = true;

    fn write_at_once<'a>(
        conn: &'a mut sqlx::pool::PoolConnection<Self>,
        days: &'a super::partitions::Days,
        known: &'a super::at_once::Known,
        group: super::at_once::Group<'a, 'a>,
    ) -> BoxFuture<'a, Result<Option<Vec<super::batch::Answer>>, StoreError>> {
        Box::pin(super::at_once::write(conn, days, known, group))
    }

    fn chunk_targets<'a>(
        pool: &'a sqlx::Pool<Self>,
        days: &'a super::partitions::Days,
        notification: &'a super::NotificationRow,
        registrations: &'a [String],
    ) -> BoxFuture<'a, Result<Option<Vec<super::PendingDelivery>>, StoreError>> {
        Box::pin(super::chunk_targets::read(
            pool,
            days,
            notification,
            registrations,
        ))
    }

    fn maintain_partitions(
        pool: &sqlx::Pool<Self>,
        now: i64,
        drop_before: Option<i64>,
    ) -> BoxFuture<'_, Result<super::PartitionChange, StoreError>> {
        Box::pin(super::partitions::maintain(pool, now, drop_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writers' connections plan their statements once; the requests'
    /// pool is left as the URL says.
    #[test]
    fn the_writers_connections_plan_once() {
        let url = "postgres://push@db.example/push?options=-c%20statement_timeout%3D5000";
        let pool = PgConnectOptions::from_str(url).expect("url");
        let writer = writer_options(pool.clone());
        let options = writer.get_options().unwrap_or_default();
        assert!(
            options.contains("plan_cache_mode=force_generic_plan"),
            "{options}"
        );
        assert!(options.contains("statement_timeout=5000"), "{options}");
        assert!(!pool
            .get_options()
            .unwrap_or_default()
            .contains("plan_cache_mode"));
    }

    /// The schema file says which migrations it holds; a new migration
    /// without its change in the file fails
    /// `migrations::a_fresh_database_made_at_once_equals_one_migrated_step_by_step`,
    /// and this keeps the file's own account of itself true.
    #[test]
    fn the_fresh_schema_names_the_last_migration() {
        let last = migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .expect("migrations");
        let first_line = SCHEMA.lines().next().unwrap_or_default();
        assert!(
            first_line.contains(&format!("-{last:04} ")),
            "migrations/fresh/postgres.sql does not name migration {last}: {first_line}"
        );
    }
}
