//! Notifications and their deliveries: acceptance, fan-out, attempts, the sweep.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::delivery::{DeliveryState, ProviderKind};
use crate::store::batch::{DeliveryClaim, Write};
use crate::store::StoreError;

#[async_trait]
impl<DB> crate::store::NotificationStore for SqlStore<DB>
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
    async fn insert_notification(
        &self,
        n: &crate::store::NotificationRow,
        registrations: &[String],
        redrive_at: i64,
        audit: Option<&crate::store::AuditEntry>,
    ) -> Result<(), StoreError> {
        let inserted = self
            .writer
            .write(Write::InsertNotification {
                row: Box::new(n.clone()),
                registrations: registrations.to_vec(),
                redrive_at,
                audit: audit.map(|a| Box::new(a.clone())),
            })
            .await?
            .applied();
        if inserted {
            Ok(())
        } else {
            Err(crate::store::StoreError::Conflict(
                "notification already exists".into(),
            ))
        }
    }

    async fn accept_notification(
        &self,
        acceptance: crate::store::Acceptance,
    ) -> Result<(), StoreError> {
        if self
            .writer
            .write(Write::Accept(Box::new(acceptance)))
            .await?
            .applied()
        {
            Ok(())
        } else {
            Err(StoreError::Conflict("notification already exists".into()))
        }
    }

    async fn get_notification(
        &self,
        id: &str,
    ) -> Result<Option<crate::store::NotificationRow>, StoreError> {
        let (lo, hi) = crate::ids::created_span([id]);
        Ok(sqlx::query_as(
            "SELECT id, app_id, notifier_id, idempotency_key, request_hash, targets, content, \
             expires_at, state, created_at, response, expand_cursor, updated_at FROM notifications \
             WHERE id = $1 AND created_at BETWEEN $2 AND $3",
        )
        .persistent(DB::PREPARE_PARTITIONED)
        .bind(id)
        .bind(lo)
        .bind(hi)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn find_idempotent(
        &self,
        app_id: &str,
        notifier_id: &str,
        key: &str,
    ) -> Result<Option<crate::store::NotificationRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT n.id, n.app_id, n.notifier_id, n.idempotency_key, n.request_hash, n.targets, \
             n.content, n.expires_at, n.state, n.created_at, n.response, n.expand_cursor, \
             n.updated_at FROM notification_keys k JOIN notifications n \
             ON n.id = k.notification_id AND n.created_at = k.created_at \
             WHERE k.app_id = $1 AND k.notifier_id = $2 AND k.idempotency_key = $3",
        )
        .bind(app_id)
        .bind(notifier_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn count_targets(
        &self,
        app_id: &str,
        aliases: Option<&[String]>,
    ) -> Result<i64, StoreError> {
        let (count,): (i64,) =
            match aliases {
                None => sqlx::query_as(
                    "SELECT COUNT(*) FROM registrations WHERE app_id = $1 AND status = 'active'",
                )
                .bind(app_id)
                .fetch_one(&self.pool)
                .await?,
                Some(aliases) => {
                    let sql = format!(
                        "SELECT COUNT(DISTINCT r.id) FROM aliases a JOIN registrations r \
                     ON r.id = a.registration_id WHERE a.app_id = $1 AND r.status = 'active' \
                     AND a.alias IN ({})",
                        crate::store::placeholders(2, aliases.len())
                    );
                    let mut query = sqlx::query_as(&sql).bind(app_id);
                    for alias in aliases {
                        query = query.bind(alias);
                    }
                    query.fetch_one(&self.pool).await?
                }
            };
        Ok(count)
    }

    async fn finish_expansion(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let (lo, hi) = crate::ids::created_span([id]);
        sqlx::query(
            "UPDATE notifications SET state = 'dispatching', updated_at = $2 \
             WHERE id = $1 AND created_at BETWEEN $3 AND $4",
        )
        .bind(id)
        .bind(now)
        .bind(lo)
        .bind(hi)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn task_deliveries(
        &self,
        notification_id: &str,
        registrations: &[String],
    ) -> Result<
        Option<(
            crate::store::NotificationRow,
            Vec<crate::store::PendingDelivery>,
        )>,
        crate::store::StoreError,
    > {
        if registrations.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT n.id, n.app_id, n.notifier_id, n.idempotency_key, n.request_hash, n.targets, \
             n.content, n.expires_at, n.state, n.created_at, n.response, n.expand_cursor, n.updated_at, \
             d.registration_id, d.attempts, r.provider, r.token, r.environment, \
             r.status AS registration_status FROM notifications n \
             JOIN deliveries d ON d.notification_id = n.id \
             LEFT JOIN registrations r ON r.id = d.registration_id \
             WHERE n.id = $1 AND n.created_at BETWEEN $2 AND $3 AND d.created_at = n.created_at \
             AND d.state = 'queued' AND d.registration_id IN ({})",
            crate::store::placeholders(4, registrations.len())
        );
        let (lo, hi) = crate::ids::created_span([notification_id]);
        let mut query = sqlx::query_as::<_, crate::store::TaskRow>(&sql)
            .persistent(DB::PREPARE_PARTITIONED)
            .bind(notification_id)
            .bind(lo)
            .bind(hi);
        for id in registrations {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let mut pending = vec![first.delivery];
        pending.extend(rows.map(|row| row.delivery));
        Ok(Some((first.notification, pending)))
    }

    async fn claim_delivery(&self, claim: DeliveryClaim) -> Result<bool, StoreError> {
        self.writer
            .write(Write::ClaimDelivery(claim))
            .await
            .map(crate::store::batch::Answer::applied)
    }

    async fn update_delivery(
        &self,
        update: crate::store::DeliveryUpdate,
    ) -> Result<(), StoreError> {
        self.writer.write(Write::UpdateDelivery(update)).await?;
        Ok(())
    }

    async fn claim_overdue(
        &self,
        now: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE deliveries SET next_attempt_at = $2 \
             WHERE state = 'queued' AND next_attempt_at <= $1 AND (notification_id, registration_id) IN \
             (SELECT notification_id, registration_id FROM deliveries \
              WHERE state = 'queued' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3) \
             RETURNING notification_id, registration_id",
        )
        .bind(now)
        .bind(redrive_at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn wake_waiting(
        &self,
        app_id: &str,
        provider: ProviderKind,
        waiting_after: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // On PostgreSQL the rows are locked as they are picked, skipping any
        // another transaction holds (a group's outcome, another node waking
        // the same deliveries): the wake never waits for a lock, so it is in
        // no deadlock. Waiting, several nodes' wakes and their writers'
        // outcomes locked the same rows in different orders, and PostgreSQL
        // broke the cycle a second later by failing the wake (RELIABILITY.md,
        // "Re-run with ids in time order"). A skipped row is being written
        // already; the sweep's recovery window wakes it if it still waits.
        let skip = crate::store::skip_locked::<DB>("d");
        Ok(sqlx::query_as(&format!(
            "UPDATE deliveries SET next_attempt_at = $4 \
             WHERE state = 'queued' AND next_attempt_at > $3 AND (notification_id, registration_id) IN \
             (SELECT d.notification_id, d.registration_id FROM deliveries d \
              JOIN registrations r ON r.id = d.registration_id \
              WHERE d.state = 'queued' AND d.next_attempt_at > $3 AND r.app_id = $1 AND r.provider = $2 \
              ORDER BY d.next_attempt_at LIMIT $5{skip}) \
             RETURNING notification_id, registration_id",
        ))
        .bind(app_id)
        .bind(provider.as_str())
        .bind(waiting_after)
        .bind(redrive_at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn expire_overdue(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'expired', reason = 'ttl', updated_at = $1 \
             WHERE ((state = 'queued' AND next_attempt_at <= $1) OR state = 'held') AND EXISTS \
             (SELECT 1 FROM notifications n WHERE n.id = deliveries.notification_id \
              AND n.created_at = deliveries.created_at AND n.expires_at <= $1)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn claim_stalled_expansions(
        &self,
        before: i64,
        redrive_at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE notifications SET updated_at = $2 \
             WHERE state = 'expanding' AND updated_at <= $1 RETURNING id",
        )
        .bind(before)
        .bind(redrive_at)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn delivery_counts(
        &self,
        notification_id: &str,
    ) -> Result<Vec<(DeliveryState, i64)>, StoreError> {
        // Rows and chunks in one snapshot: a chunk closing between two reads
        // would count its failures twice or not at all.
        let mut tx = self.pool.begin_with(DB::BEGIN_SNAPSHOT).await?;
        let counts = counts_in::<DB>(&mut tx, notification_id).await?;
        tx.commit().await?;
        Ok(counts)
    }

    async fn delivery_status(
        &self,
        notification_id: &str,
        after: &str,
        limit: i64,
        skip_sent: bool,
    ) -> Result<(Vec<(DeliveryState, i64)>, Vec<crate::store::DeliveryRow>), StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_SNAPSHOT).await?;
        let counts = counts_in::<DB>(&mut tx, notification_id).await?;
        let page = page_in::<DB>(&mut tx, notification_id, after, limit, skip_sent).await?;
        tx.commit().await?;
        Ok((counts, page))
    }

    async fn delivery_page(
        &self,
        notification_id: &str,
        after: &str,
        limit: i64,
        skip_sent: bool,
    ) -> Result<Vec<crate::store::DeliveryRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        page_in::<DB>(&mut conn, notification_id, after, limit, skip_sent).await
    }

    async fn queue_stats(
        &self,
        waiting_after: i64,
    ) -> Result<(Vec<(String, i64, i64)>, Option<i64>), StoreError> {
        let rows: Vec<(String, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT n.app_id, COUNT(*), \
             COALESCE(SUM(CASE WHEN d.next_attempt_at > $1 THEN 1 ELSE 0 END), 0), \
             MIN(d.updated_at) \
             FROM deliveries d JOIN notifications n \
             ON n.id = d.notification_id AND n.created_at = d.created_at \
             WHERE d.state = 'queued' GROUP BY n.app_id",
        )
        .bind(waiting_after)
        .fetch_all(&self.pool)
        .await?;
        // Chunks of fan-outs not yet run count with their registrations.
        let chunks = super::chunks::chunk_stats(&self.pool, waiting_after).await?;
        let oldest = rows.iter().chain(&chunks).filter_map(|r| r.3).min();
        let mut apps = std::collections::BTreeMap::<String, (i64, i64)>::new();
        for (app, queued, waiting, _) in rows.into_iter().chain(chunks) {
            let entry = apps.entry(app).or_default();
            entry.0 += queued;
            entry.1 += waiting;
        }
        Ok((
            apps.into_iter().map(|(a, (q, w))| (a, q, w)).collect(),
            oldest,
        ))
    }
}

/// A notification's deliveries counted by state: its rows, and its fan-out
/// chunks' successes and waiting registrations.
async fn counts_in<DB>(
    conn: &mut DB::Connection,
    notification_id: &str,
) -> Result<Vec<(DeliveryState, i64)>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let (lo, hi) = crate::ids::created_span([notification_id]);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, COUNT(*) FROM deliveries \
         WHERE notification_id = $1 AND created_at BETWEEN $2 AND $3 GROUP BY state",
    )
    .bind(notification_id)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut *conn)
    .await?;
    // A fan-out's successes are counted per chunk, not in rows.
    let total = rows.iter().map(|(_, n)| n).sum();
    let (sent, queued) = super::chunks::chunk_counts::<DB>(conn, notification_id, total).await?;
    // A state this node does not know (written by a newer one) is left
    // out of the counts, as the status API always did.
    let mut counts: Vec<(DeliveryState, i64)> = rows
        .into_iter()
        .filter_map(|(name, n)| DeliveryState::parse(&name).map(|state| (state, n)))
        .collect();
    for (state, n) in [(DeliveryState::Sent, sent), (DeliveryState::Queued, queued)] {
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, count)) => *count += n,
            None if n > 0 => counts.push((state, n)),
            None => {}
        }
    }
    Ok(counts)
}

/// A keyset page of a notification's delivery rows, optionally without `sent` ones.
async fn page_in<DB>(
    conn: &mut DB::Connection,
    notification_id: &str,
    after: &str,
    limit: i64,
    skip_sent: bool,
) -> Result<Vec<crate::store::DeliveryRow>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    let (lo, hi) = crate::ids::created_span([notification_id]);
    Ok(sqlx::query_as(
        "SELECT registration_id, state, reason, attempts, updated_at FROM deliveries \
         WHERE notification_id = $1 AND registration_id > $2 AND (state <> 'sent' OR NOT $4) \
         AND created_at BETWEEN $5 AND $6 ORDER BY registration_id LIMIT $3",
    )
    .bind(notification_id)
    .bind(after)
    .bind(limit)
    .bind(skip_sent)
    .bind(lo)
    .bind(hi)
    .fetch_all(&mut *conn)
    .await?)
}
