//! Each registration's inbox of sealed content.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::{InboxContent, InboxEntry, InboxItem, Reseal, StoreError};

/// Items re-sealed per transaction.
const RESEAL_PAGE: i64 = 100;

/// The columns of an [`InboxEntry`].
const ENTRY: &str = "i.registration_id, i.notification_id, i.created_at, i.expires_at, i.size, \
                     i.fetched_at, i.acked_at, i.content IS NOT NULL AS held";
/// The same in a `RETURNING` clause, where SQLite takes no table alias.
const RETURNED: &str = "registration_id, notification_id, created_at, expires_at, size, \
                        fetched_at, acked_at, content IS NOT NULL AS held";
/// An item is shown once its notification is stored (the creation time
/// names the notification's partition on PostgreSQL).
const STORED: &str = "EXISTS (SELECT 1 FROM notifications n \
                      WHERE n.id = i.notification_id AND n.created_at = i.created_at)";

#[async_trait]
impl<DB> crate::store::InboxStore for SqlStore<DB>
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
    async fn put_inbox_items(&self, items: &[InboxItem]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        for item in items {
            sqlx::query(
                "INSERT INTO inbox_items (registration_id, notification_id, app_id, created_at, \
                 expires_at, size, content) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(item.registration_id.as_str())
            .bind(item.notification_id.as_str())
            .bind(item.app_id.as_str())
            .bind(item.created_at)
            .bind(item.expires_at)
            .bind(item.size)
            .bind(item.content.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn drop_inbox_items(&self, notification_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM inbox_items WHERE notification_id = $1")
            .bind(notification_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inbox(
        &self,
        registration_id: &str,
        now: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let sql = format!(
            "SELECT {ENTRY} FROM inbox_items i WHERE i.registration_id = $1 \
             AND i.content IS NOT NULL AND i.expires_at > $2 AND i.notification_id > $3 \
             AND {STORED} ORDER BY i.notification_id LIMIT $4"
        );
        Ok(sqlx::query_as(&sql)
            .bind(registration_id)
            .bind(now)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn fetch_inbox_item(
        &self,
        registration_id: &str,
        notification_id: &str,
        now: i64,
    ) -> Result<Option<InboxContent>, StoreError> {
        // The returned row is the updated one: `fetched_at` is the first
        // fetch's time, this one's when it is the first.
        let sql = format!(
            "UPDATE inbox_items AS i SET fetched_at = COALESCE(i.fetched_at, $3) \
             WHERE i.registration_id = $1 AND i.notification_id = $2 AND i.content IS NOT NULL \
             AND i.expires_at > $3 AND {STORED} RETURNING {RETURNED}, content"
        );
        Ok(sqlx::query_as(&sql)
            .bind(registration_id)
            .bind(notification_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn ack_inbox_item(
        &self,
        registration_id: &str,
        notification_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE inbox_items AS i SET content = NULL, acked_at = $3 \
             WHERE i.registration_id = $1 AND i.notification_id = $2 AND i.content IS NOT NULL \
             AND i.expires_at > $3 AND {STORED}"
        );
        let done = sqlx::query(&sql)
            .bind(registration_id)
            .bind(notification_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn inbox_of_notification(
        &self,
        notification_id: &str,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let sql = format!(
            "SELECT {ENTRY} FROM inbox_items i WHERE i.notification_id = $1 \
             ORDER BY i.registration_id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(notification_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn expire_inbox_items(&self, now: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox_items SET content = NULL WHERE (registration_id, notification_id) IN \
             (SELECT registration_id, notification_id FROM inbox_items \
              WHERE content IS NOT NULL AND expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn reseal_inbox_items(&self, reseal: &Reseal) -> Result<usize, StoreError> {
        let mut changed = 0;
        let mut after = (String::new(), String::new());
        let lock = if <DB as SqlBackend>::NAME == "postgres" {
            " FOR UPDATE"
        } else {
            ""
        };
        loop {
            let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
            let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(&format!(
                "SELECT registration_id, notification_id, content FROM inbox_items \
                 WHERE content IS NOT NULL AND (registration_id, notification_id) > ($1, $2) \
                 ORDER BY registration_id, notification_id LIMIT $3{lock}"
            ))
            .bind(after.0.as_str())
            .bind(after.1.as_str())
            .bind(RESEAL_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let Some((last_registration, last_notification, _)) = rows.last() else {
                return Ok(changed);
            };
            after = (last_registration.clone(), last_notification.clone());
            let full = rows.len() as i64 == RESEAL_PAGE;
            for (registration, notification, sealed) in rows {
                let Some(new) = reseal(&registration, &notification, &sealed).map_err(|e| {
                    StoreError::Conflict(format!(
                        "inbox item {notification} of registration {registration}: {e}"
                    ))
                })?
                else {
                    continue;
                };
                sqlx::query(
                    "UPDATE inbox_items SET content = $3 \
                     WHERE registration_id = $1 AND notification_id = $2 AND content IS NOT NULL",
                )
                .bind(registration.as_str())
                .bind(notification.as_str())
                .bind(new)
                .execute(&mut *tx)
                .await?;
                changed += 1;
            }
            tx.commit().await?;
            if !full {
                return Ok(changed);
            }
        }
    }

    async fn delete_old_inbox_items(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM inbox_items WHERE (registration_id, notification_id) IN \
             (SELECT registration_id, notification_id FROM inbox_items \
              WHERE created_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }
}
