//! The SQL of every aggregate, written once for both backends. The schemas
//! keep the same column types (TEXT, BIGINT milliseconds, BOOLEAN, bytes) and
//! the statements use `$n` parameters, which SQLite and PostgreSQL both read,
//! so one text serves both; what differs (connecting, migrations, how a
//! write transaction starts) is in [`SqlBackend`], implemented in
//! `sqlite.rs` and `postgres.rs`.
//!
//! Every `impl` here carries the same `where` clause: what sqlx must know of
//! a database for these statements to run on it (it executes on a pool and a
//! transaction, binds and reads these column types, finds columns by index and
//! name). Rust does not carry such bounds along with a trait, so each impl
//! states them.

mod apps;
mod audit;
mod chunks;
mod direct;
mod inbox;
mod inserts;
mod notifications;
mod registrations;
mod retention;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Pool, Type};

pub use super::backend::{Column, SqlBackend};
use super::batch::HotWriter;
use super::StoreError;
pub(super) use audit::sweep_expired_keys;
pub(super) use chunks::{claim_chunks, finish_chunks, insert_first_outcomes};
pub(super) use direct::{hold_direct, record_streamed};
pub(super) use inserts::{creation_times, insert_notifications, Insert};
pub(super) use registrations::{build_acceptances, lookups};

/// The store on one database: a pool, and the group-commit writer of its hot writes.
pub struct SqlStore<DB: SqlBackend> {
    pub(super) pool: Pool<DB>,
    pub(super) writer: HotWriter,
    /// The day partitions the hot statements may name (PostgreSQL).
    pub(super) days: std::sync::Arc<super::partitions::Days>,
    /// The registration lookups of concurrent acceptances, grouped.
    pub(super) lookups: registrations::Lookups,
}

impl<DB: SqlBackend> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
            days: self.days.clone(),
            lookups: self.lookups.clone(),
        }
    }
}

#[async_trait]
impl<DB> super::Store for SqlStore<DB>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        <DB as SqlBackend>::NAME
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        DB::migrate(&self.pool)
            .await
            .map_err(|e| StoreError::Other(e.into()))
    }
}
