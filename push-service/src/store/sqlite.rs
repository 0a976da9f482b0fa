//! SQLite backend: the embedded default, one file, WAL journal.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::sql::impl_sql_store;
use super::sql_dispatch::{impl_sql_dispatch, NOTIFICATION_COLUMNS};
use super::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Store on a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: super::group::GroupWriter,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite:` URL.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        full_sync: bool,
    ) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed notification survives power loss; NORMAL (WAL): a crash.
            .synchronous(if full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Other(e.into()))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        // One writer: SQLite has one write lock; batches share its commit (and fsync).
        let writer = super::group::GroupWriter::spawn(1, group_executor(pool.clone()));
        Ok(SqliteStore { pool, writer })
    }
}

impl_sql_store!(SqliteStore, "sqlite", MIGRATOR);

impl super::Backend for SqliteStore {
    type Db = sqlx::Sqlite;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
}

impl_sql_dispatch!(SqliteStore);
