//! Fan-outs in chunks: the expansion writes a row per chunk of registrations;
//! a target gets a delivery row only when its first attempt does not end in
//! `sent`; the chunk's run closes with its count of sent.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Transaction, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::batch::{Answer, Write};
use crate::store::{
    keyed_join, placeholders, row_placeholders, ChunkClaim, ChunkDone, DeliveryUpdate,
    NotificationRow, PendingDelivery, StoreError,
};

#[async_trait]
impl<DB> crate::store::FanoutStore for SqlStore<DB>
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
    async fn expand_page(
        &self,
        n: &NotificationRow,
        aliases: Option<&[String]>,
        limit: i64,
        per_chunk: usize,
        redrive_at: i64,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let after = n.expand_cursor.clone().unwrap_or_default();
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let rows: Vec<(String,)> = match aliases {
            None => {
                sqlx::query_as(
                    "SELECT id FROM registrations WHERE app_id = $1 AND status = 'active' \
                     AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(&n.app_id)
                .bind(&after)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
            }
            Some(aliases) => {
                let sql = format!(
                    "SELECT DISTINCT r.id FROM aliases a JOIN registrations r ON r.id = a.registration_id \
                     WHERE a.app_id = $1 AND r.status = 'active' AND r.id > $2 AND a.alias IN ({}) \
                     ORDER BY r.id LIMIT $3",
                    placeholders(4, aliases.len())
                );
                let mut query = sqlx::query_as(&sql)
                    .bind(&n.app_id)
                    .bind(&after)
                    .bind(limit);
                for alias in aliases {
                    query = query.bind(alias);
                }
                query.fetch_all(&mut *tx).await?
            }
        };
        let ids: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
        let chunks: Vec<Vec<String>> = ids.chunks(per_chunk.max(1)).map(<[_]>::to_vec).collect();
        let now = crate::ids::now_millis();
        for group in chunks.chunks(50) {
            let values = row_placeholders(group.len(), 8);
            let sql = format!(
                "INSERT INTO fanout_chunks (notification_id, first_registration, registrations, \
                 size, next_attempt_at, updated_at, state, created_at) VALUES {values} \
                 ON CONFLICT DO NOTHING"
            );
            let mut query = sqlx::query(&sql).persistent(DB::PREPARE_PARTITIONED);
            for chunk in group {
                let list = serde_json::to_string(chunk).map_err(|e| StoreError::Other(e.into()))?;
                query = query
                    .bind(&n.id)
                    .bind(&chunk[0])
                    .bind(list)
                    .bind(chunk.len() as i32)
                    .bind(redrive_at)
                    .bind(now)
                    .bind("queued")
                    .bind(n.created_at);
            }
            query.execute(&mut *tx).await?;
        }
        if let Some(last) = ids.last() {
            sqlx::query(
                "UPDATE notifications SET expand_cursor = $2, updated_at = $3 \
                 WHERE id = $1 AND created_at = $4",
            )
            .bind(&n.id)
            .bind(last)
            .bind(now)
            .bind(n.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(chunks)
    }

    async fn claim_chunk(&self, claim: ChunkClaim) -> Result<bool, StoreError> {
        self.writer
            .write(Write::ClaimChunk(claim))
            .await
            .map(Answer::applied)
    }

    async fn chunk_deliveries(
        &self,
        notification: &NotificationRow,
        registrations: &[String],
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        if registrations.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(pending) =
            DB::chunk_targets(&self.pool, &self.days, notification, registrations).await?
        {
            return Ok(pending);
        }
        let list = placeholders(3, registrations.len());
        let sql = format!(
            "SELECT registration_id FROM deliveries WHERE notification_id = $1 \
             AND created_at = $2 AND registration_id IN ({list})"
        );
        let mut query = sqlx::query_as::<_, (String,)>(&sql)
            .persistent(DB::PREPARE_PARTITIONED)
            .bind(&notification.id)
            .bind(notification.created_at);
        for id in registrations {
            query = query.bind(id);
        }
        let written: std::collections::HashSet<String> = query
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        let list = placeholders(1, registrations.len());
        let sql = format!(
            "SELECT id, provider, token, environment, status FROM registrations \
             WHERE id IN ({list})"
        );
        let mut query =
            sqlx::query_as::<_, (String, String, Option<String>, Option<String>, String)>(&sql);
        for id in registrations {
            query = query.bind(id);
        }
        let mut found: std::collections::HashMap<String, _> = query
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(id, provider, token, environment, status)| {
                (id, (provider, token, environment, status))
            })
            .collect();
        let pending = registrations
            .iter()
            .filter(|id| !written.contains(*id))
            .map(|id| {
                crate::store::chunk_targets::first_attempt(match found.remove(id) {
                    Some((p, t, e, s)) => (id.clone(), Some(p), t, e, Some(s)),
                    None => (id.clone(), None, None, None, None),
                })
            })
            .collect();
        Ok(pending)
    }

    async fn record_first_outcome(&self, update: DeliveryUpdate) -> Result<(), StoreError> {
        self.writer.write(Write::FirstOutcome(update)).await?;
        Ok(())
    }

    async fn finish_chunk(&self, done: ChunkDone) -> Result<(), StoreError> {
        self.writer.write(Write::FinishChunk(done)).await?;
        Ok(())
    }

    async fn claim_overdue_chunks(
        &self,
        now: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "UPDATE fanout_chunks SET next_attempt_at = $2 \
             WHERE state = 'queued' AND next_attempt_at <= $1 \
             AND (notification_id, first_registration) IN \
             (SELECT notification_id, first_registration FROM fanout_chunks \
              WHERE state = 'queued' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3) \
             RETURNING notification_id, registrations",
        )
        .bind(now)
        .bind(redrive_at)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(notification, list)| {
                let ids: Vec<String> =
                    serde_json::from_str(&list).map_err(|e| StoreError::Other(e.into()))?;
                Ok((notification, ids))
            })
            .collect()
    }
}

/// What the chunks of a notification add to its delivery counts:
/// `(sent, queued)`. `rows` is how many delivery rows it has: of a finished
/// chunk, every target not counted as sent has one; what is left belongs to
/// chunks still running.
pub(super) async fn chunk_counts<DB>(
    conn: &mut DB::Connection,
    notification_id: &str,
    rows: i64,
) -> Result<(i64, i64), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let (lo, hi) = crate::ids::created_span([notification_id]);
    let (sent, unsent, queued): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN state = 'done' THEN sent ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN state = 'done' THEN size - sent ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN state = 'queued' THEN size ELSE 0 END), 0) \
         FROM fanout_chunks WHERE notification_id = $1 AND created_at BETWEEN $2 AND $3",
    )
    .bind(notification_id)
    .bind(lo)
    .bind(hi)
    .fetch_one(&mut *conn)
    .await?;
    let rows_of_running = (rows - unsent).max(0);
    Ok((sent, (queued - rows_of_running).max(0)))
}

/// Queued chunks per app: `(app, registrations queued, of those waiting past
/// `waiting_after`, oldest update)`, for the queue's depth.
pub(super) async fn chunk_stats<DB>(
    pool: &sqlx::Pool<DB>,
    waiting_after: i64,
) -> Result<Vec<(String, i64, i64, Option<i64>)>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    Ok(sqlx::query_as(
        "SELECT n.app_id, COALESCE(SUM(c.size), 0), \
         COALESCE(SUM(CASE WHEN c.next_attempt_at > $1 THEN c.size ELSE 0 END), 0), \
         MIN(c.updated_at) \
         FROM fanout_chunks c JOIN notifications n \
         ON n.id = c.notification_id AND n.created_at = c.created_at \
         WHERE c.state = 'queued' GROUP BY n.app_id",
    )
    .bind(waiting_after)
    .fetch_all(pool)
    .await?)
}

/// Claims of a group (`(place, claim)`): a place whose chunk was not taken
/// (finished, or claimed by another copy of its task) is answered `NotApplied`.
pub(in crate::store) async fn claim_chunks<DB>(
    tx: &mut Transaction<'_, DB>,
    claims: &[(usize, &ChunkClaim)],
    answers: &mut [Answer],
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    // Two copies of one chunk's task in a group: only the first may take it.
    let first = crate::store::batch::first_of_each(claims, answers, |c| {
        (&c.notification_id, &c.first_registration)
    });
    for chunk in first.chunks(100) {
        let join = chunks_join::<DB>(chunk.len(), 4);
        let sql = format!(
            "UPDATE fanout_chunks AS c SET attempts = c.attempts + 1, \
             leased_until = v.column4, next_attempt_at = v.column4 \
             {join} AND c.state = 'queued' AND c.leased_until <= v.column3 \
             RETURNING notification_id, first_registration"
        );
        let mut query =
            sqlx::query_as::<_, (String, String)>(&sql).persistent(DB::PREPARE_PARTITIONED);
        for (_, claim) in chunk {
            query = query
                .bind(&claim.notification_id)
                .bind(&claim.first_registration)
                .bind(claim.now)
                .bind(claim.lease);
        }
        let (lo, hi) =
            crate::ids::created_span(chunk.iter().map(|(_, c)| c.notification_id.as_str()));
        query = query.bind(lo).bind(hi);
        let taken: std::collections::HashSet<(String, String)> =
            query.fetch_all(&mut **tx).await?.into_iter().collect();
        for (i, claim) in chunk {
            let key = (
                claim.notification_id.clone(),
                claim.first_registration.clone(),
            );
            if !taken.contains(&key) {
                answers[*i] = Answer::NotApplied;
            }
        }
    }
    Ok(())
}

/// Closes the runs of a group's chunks (each only by the holder of its latest claim).
pub(in crate::store) async fn finish_chunks<DB>(
    tx: &mut Transaction<'_, DB>,
    done: &[&ChunkDone],
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    String: Column<DB>,
{
    for chunk in done.chunks(100) {
        let join = chunks_join::<DB>(chunk.len(), 5);
        let sql = format!(
            "UPDATE fanout_chunks AS c SET state = 'done', sent = v.column4, updated_at = v.column5 \
             {join} AND c.state = 'queued' AND c.leased_until = v.column3"
        );
        let mut query = sqlx::query(&sql).persistent(DB::PREPARE_PARTITIONED);
        for done in chunk {
            query = query
                .bind(&done.notification_id)
                .bind(&done.first_registration)
                .bind(done.lease)
                .bind(done.sent)
                .bind(done.now);
        }
        let (lo, hi) = crate::ids::created_span(chunk.iter().map(|d| d.notification_id.as_str()));
        query.bind(lo).bind(hi).execute(&mut **tx).await?;
    }
    Ok(())
}

/// First outcomes of fan-out targets, as their delivery rows (an existing row
/// — an earlier run's — is left as it is).
pub(in crate::store) async fn insert_first_outcomes<DB>(
    tx: &mut Transaction<'_, DB>,
    outcomes: &[&DeliveryUpdate],
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    for chunk in outcomes.chunks(100) {
        let created =
            super::creation_times(tx, chunk.iter().map(|u| u.notification_id.as_str())).await?;
        // A notification gone (retention, its app deleted) gets no rows.
        let chunk: Vec<(&DeliveryUpdate, i64)> = chunk
            .iter()
            .filter_map(|u| Some((*u, *created.get(&u.notification_id)?)))
            .collect();
        if chunk.is_empty() {
            continue;
        }
        let values = row_placeholders(chunk.len(), 8);
        let sql = format!(
            "INSERT INTO deliveries (notification_id, registration_id, state, reason, attempts, \
             next_attempt_at, updated_at, created_at) VALUES {values} ON CONFLICT DO NOTHING"
        );
        let mut query = sqlx::query(&sql).persistent(DB::PREPARE_PARTITIONED);
        for (update, created_at) in chunk {
            query = query
                .bind(&update.notification_id)
                .bind(&update.registration_id)
                .bind(update.state.as_str())
                .bind(&update.reason)
                .bind(update.attempts)
                .bind(update.next_attempt_at)
                .bind(update.now)
                .bind(created_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// [`keyed_join`] of an update on the fan-out chunks (as `c`, the
/// partitioned table itself: joined on the key) to `rows` rows of `cols`
/// values, the first two a chunk's key, the span of creation times bound
/// after them.
fn chunks_join<DB: SqlBackend>(rows: usize, cols: usize) -> String {
    keyed_join::<DB>(
        "fanout_chunks",
        "c",
        &row_placeholders(rows, cols),
        &["notification_id", "first_registration"],
        Some(rows * cols),
    )
}
