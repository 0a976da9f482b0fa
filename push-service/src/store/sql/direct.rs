//! Notifications held for the direct channel, and each device's cursor.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::StoreError;

#[async_trait]
impl<DB> crate::store::DirectStore for SqlStore<DB>
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
    async fn insert_direct_event(
        &self,
        registration_id: &str,
        notification_id: &str,
        payload: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO direct_events (registration_id, notification_id, payload, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registration_id, notification_id) DO NOTHING \
             RETURNING seq",
        )
        .bind(registration_id)
        .bind(notification_id)
        .bind(payload)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(seq,)| seq))
    }

    async fn direct_events_after(
        &self,
        registration_id: &str,
        after_seq: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::DirectEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, notification_id, payload, created_at FROM direct_events \
             WHERE registration_id = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
        )
        .bind(registration_id)
        .bind(after_seq)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_direct_cursor(&self, registration_id: &str, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE registrations SET direct_cursor = $2 WHERE id = $1 AND direct_cursor < $2",
        )
        .bind(registration_id)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn direct_cursor(&self, registration_id: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT direct_cursor FROM registrations WHERE id = $1")
                .bind(registration_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(c,)| c).unwrap_or(0))
    }

    async fn delete_expired_direct_events(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM direct_events WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }
}
