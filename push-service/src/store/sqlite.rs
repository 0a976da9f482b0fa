//! SQLite backend: the embedded default, one file, WAL journal.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

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
    let mut migrator = sqlx::migrate!("../migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// Store on a SQLite file.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

impl SqlStore<sqlx::Sqlite> {
    /// Opens (creating if needed) the database file named by a `sqlite:` URL.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        full_sync: bool,
    ) -> Result<Self, StoreError> {
        // What each connection sets for itself: no lock needed.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // FULL: a committed notification survives power loss; NORMAL (WAL): a crash.
            .synchronous(if full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Tables of a connection's own (the writer's check of a group's
            // registrations, `sqlite_at_once.rs`) and sorts kept in memory,
            // never in a file beside the database.
            .pragma("temp_store", "memory");
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Other(e.into()))?;
            }
        }
        // What the file keeps, set once by a first connection: the WAL journal,
        // and pages freed by retention going back to the file system a batch
        // at a time (`PRAGMA incremental_vacuum`; takes effect on a new file,
        // an older one is converted once by `migrate`). Set again by every
        // connection the pool opens, the journal mode waits for the write
        // lock: under a steady write load one request waited 0.3–4 s for its
        // new connection (BENCHMARKS.md, "Nothing written that is not read").
        let file = options
            .clone()
            .journal_mode(SqliteJournalMode::Wal)
            .auto_vacuum(SqliteAutoVacuum::Incremental);
        sqlx::Connection::close(
            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&file).await?,
        )
        .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        // One writer: SQLite has one write lock; batches share its commit
        // (and fsync). It holds a connection of its own (`held.rs`), also
        // because a connection's page cache is dropped whenever another
        // connection has written since its last transaction: a writer taking
        // any connection of the pool read again, from the file, the pages
        // its last group had just written (BENCHMARKS.md, "A group in one
        // hand-off").
        let own = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let days = std::sync::Arc::new(super::partitions::Days::default());
        let writer = HotWriter::spawn(GroupKind::Writes, 1, executor(own, days.clone()));
        let lookups = super::sql::lookups(pool.clone());
        Ok(SqlStore {
            pool,
            writer,
            days,
            lookups,
        })
    }
}

impl SqlBackend for sqlx::Sqlite {
    const NAME: &'static str = "sqlite";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN DEFERRED";

    fn migrate(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::migrate::MigrateError>> {
        Box::pin(async move {
            migrator().run(pool).await?;
            // A file made before incremental auto-vacuum keeps `none` until a
            // full VACUUM rewrites it: done once, here, at upgrade time.
            let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum").fetch_one(pool).await?;
            if mode != 2 {
                tracing::info!(
                    "converting the SQLite file to incremental auto-vacuum (one VACUUM)"
                );
                sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                    .execute(pool)
                    .await?;
                sqlx::query("VACUUM").execute(pool).await?;
            }
            Ok(())
        })
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    const PARTITIONED: bool = false;
    const ROW_LOCKS: bool = false;
    const PREPARE_PARTITIONED: bool = true;
    const INSERTS_WITH: bool = false;
    const UPDATES_BY_ROW: bool = false;

    fn write_at_once<'a>(
        conn: &'a mut sqlx::pool::PoolConnection<Self>,
        _days: &'a super::partitions::Days,
        known: &'a super::at_once::Known,
        group: super::at_once::Group<'a, 'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<Vec<super::batch::Answer>>, StoreError>>
    {
        Box::pin(super::sqlite_at_once::write(conn, known, group))
    }

    fn chunk_targets<'a>(
        _pool: &'a sqlx::Pool<Self>,
        _days: &'a super::partitions::Days,
        _notification: &'a super::NotificationRow,
        _registrations: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<Option<Vec<super::PendingDelivery>>, StoreError>>
    {
        Box::pin(async { Ok(None) })
    }

    fn maintain_partitions(
        _pool: &sqlx::Pool<Self>,
        _now: i64,
        _drop_before: Option<i64>,
    ) -> BoxFuture<'_, Result<super::PartitionChange, StoreError>> {
        Box::pin(async { Ok(super::PartitionChange::default()) })
    }
}
