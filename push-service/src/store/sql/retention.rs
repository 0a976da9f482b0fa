//! Retention: deletions in bounded batches, and the figures that show whether
//! they keep up. A batch picks at most `limit` rows by an index and deletes
//! them (a notification's deliveries and chunks with it), so no statement
//! holds locks for long and none scans a whole table. On PostgreSQL two
//! nodes' sweeps skip each other's rows (`SKIP LOCKED`), and whole days of
//! notifications go by their partitions (`partitions.rs`); batches take what
//! a partition did not hold.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::{RetentionStats, StoreError};

/// Tables whose size PostgreSQL reports (the ones that grow with traffic first).
const SIZED_TABLES: [&str; 8] = [
    "notifications",
    "deliveries",
    "fanout_chunks",
    "notification_keys",
    "direct_events",
    "registrations",
    "audit_log",
    "replay_cache",
];

/// Runs one `DELETE` of the rows `pick` selects by `key` (a subquery with
/// `LIMIT`, its `$n` parameters bound from `params` in order), with the row
/// locks skipped by other deleters on PostgreSQL; returns how many went.
async fn delete_picked<DB>(
    pool: &sqlx::Pool<DB>,
    table: &str,
    key: &str,
    pick: &str,
    params: &[i64],
) -> Result<u64, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Column<DB>,
{
    let skip = crate::store::skip_locked::<DB>(table);
    let sql = format!(
        "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {pick}{skip})"
    );
    let mut query = sqlx::query(&sql);
    for param in params {
        query = query.bind(*param);
    }
    Ok(DB::rows_affected(&query.execute(pool).await?))
}

#[async_trait]
impl<DB> crate::store::RetentionStore for SqlStore<DB>
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
    async fn delete_old_notifications(
        &self,
        before: i64,
        now: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // Deliveries and chunks do not follow by a foreign key on PostgreSQL
        // (see the partitioning migration): they go in the same transaction.
        let skip = crate::store::skip_locked::<DB>("notifications");
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let picked: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT id, created_at FROM notifications WHERE created_at < $1 AND expires_at < $2 \
             ORDER BY created_at LIMIT $3{skip}"
        ))
        .bind(before)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        for chunk in picked.chunks(500) {
            let lo = chunk.iter().map(|(_, t)| *t).min().unwrap_or(0);
            let hi = chunk.iter().map(|(_, t)| *t).max().unwrap_or(0);
            let ids = crate::store::placeholders(3, chunk.len());
            for (table, key) in [
                ("deliveries", "notification_id"),
                ("fanout_chunks", "notification_id"),
                ("notifications", "id"),
            ] {
                let sql = format!(
                    "DELETE FROM {table} WHERE created_at BETWEEN $1 AND $2 AND {key} IN ({ids})"
                );
                let mut query = sqlx::query(&sql).bind(lo).bind(hi);
                for (id, _) in chunk {
                    query = query.bind(id.as_str());
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(picked.len() as u64)
    }

    async fn delete_old_keys(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let pick = "created_at < $1 ORDER BY created_at LIMIT $2";
        delete_picked(
            &self.pool,
            "notification_keys",
            "app_id, notifier_id, idempotency_key",
            pick,
            &[before, limit.into()],
        )
        .await
    }

    fn partitioned(&self) -> bool {
        DB::PARTITIONED
    }

    async fn maintain_partitions(
        &self,
        now: i64,
        drop_before: Option<i64>,
    ) -> Result<crate::store::PartitionChange, StoreError> {
        let change = DB::maintain_partitions(&self.pool, now, drop_before).await?;
        self.days.set(change.present.iter().cloned());
        Ok(change)
    }

    async fn delete_expired_direct_events(&self, now: i64, limit: u32) -> Result<u64, StoreError> {
        let pick = "expires_at <= $1 ORDER BY expires_at LIMIT $2";
        delete_picked(
            &self.pool,
            "direct_events",
            "seq",
            pick,
            &[now, limit.into()],
        )
        .await
    }

    async fn delete_audit_before(&self, at: i64, limit: u32) -> Result<u64, StoreError> {
        // The oldest `limit` entries by `seq`, those of them older than `at`:
        // entries are appended in time order (up to the nodes' clock skew),
        // and a window of the key keeps the statement from reading further.
        let pick = "seq < (SELECT MIN(seq) FROM audit_log) + $2 AND at < $1 ORDER BY seq LIMIT $2";
        delete_picked(&self.pool, "audit_log", "seq", pick, &[at, limit.into()]).await
    }

    async fn retention_stats(&self, before: i64, now: i64) -> Result<RetentionStats, StoreError> {
        // Both walk the creation-time index from its oldest end.
        let (oldest,): (Option<i64>,) = sqlx::query_as("SELECT MIN(created_at) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        let due: Option<(i64, i64)> = sqlx::query_as(
            "SELECT created_at, expires_at FROM notifications \
             WHERE created_at < $1 AND expires_at < $2 ORDER BY created_at LIMIT 1",
        )
        .bind(before)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(RetentionStats {
            oldest_created_at: oldest,
            oldest_due: due,
        })
    }

    async fn storage_bytes(&self) -> Result<Vec<(String, i64)>, StoreError> {
        if <DB as SqlBackend>::NAME == "postgres" {
            let mut out = Vec::with_capacity(SIZED_TABLES.len());
            for table in SIZED_TABLES {
                // A partitioned table's size is its partitions'.
                let (bytes,): (i64,) = sqlx::query_as(
                    "SELECT COALESCE(SUM(pg_total_relation_size(relid)), 0)::BIGINT \
                     FROM pg_partition_tree($1::regclass)",
                )
                .bind(table)
                .fetch_one(&self.pool)
                .await?;
                out.push((table.to_owned(), bytes));
            }
            Ok(out)
        } else {
            // Per-table sizes would read every page (dbstat); the file's are free.
            let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size")
                .fetch_one(&self.pool)
                .await?;
            let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
                .fetch_one(&self.pool)
                .await?;
            let (free,): (i64,) = sqlx::query_as("PRAGMA freelist_count")
                .fetch_one(&self.pool)
                .await?;
            Ok(vec![
                ("all".to_owned(), pages * page_size),
                ("free".to_owned(), free * page_size),
            ])
        }
    }

    async fn compact(&self, pages: u32) -> Result<(), StoreError> {
        if <DB as SqlBackend>::NAME == "sqlite" {
            // Runs only on a file in incremental auto-vacuum mode (see `sqlite.rs`).
            sqlx::query(&format!("PRAGMA incremental_vacuum({pages})"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
