//! The audit log and the replay cache.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::StoreError;

#[async_trait]
impl<DB> crate::store::AuditStore for SqlStore<DB>
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
    async fn audit(&self, entry: &crate::store::AuditEntry) -> Result<(), StoreError> {
        self.writer
            .write(crate::store::batch::Write::Audit(Box::new(entry.clone())))
            .await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        filter: &crate::store::AuditFilter,
    ) -> Result<Vec<crate::store::AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at, actor, action, app_id, target, source, details FROM audit_log \
             WHERE seq > $1 AND ($2 IS NULL OR app_id = $2) AND ($3 IS NULL OR actor = $3) \
             AND ($4 IS NULL OR action = $4) ORDER BY seq LIMIT $5",
        )
        .bind(filter.after)
        .bind(&filter.app_id)
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[async_trait]
impl<DB> crate::store::ReplayStore for SqlStore<DB>
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
    async fn remember_once(
        &self,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(crate::store::batch::Write::RememberOnce {
                key: key.to_owned(),
                expires_at,
                now,
            })
            .await
            .map(crate::store::batch::Answer::applied)
    }
}

/// Whether the write of one replay-cache key also removes the expired keys:
/// now and then, on about one key in 64, so the cache stays small without a
/// sweep of its own.
pub(in crate::store) fn sweep_expired_keys() -> bool {
    rand::random::<u8>() < 4
}
