//! Notifications held for the direct channel, and each device's cursor.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Transaction, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::batch::{deliveries_join, prepare, Answer, Write};
use crate::store::partitions::{pieces, Days};
use crate::store::{keyed_join, row_placeholders, DirectHold, StoreError};

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
    async fn insert_direct_event(&self, hold: DirectHold) -> Result<Option<i64>, StoreError> {
        match self.writer.write(Write::HoldDirect(Box::new(hold))).await? {
            Answer::Held(seq) => Ok(seq),
            other => Err(StoreError::Other(anyhow::anyhow!(
                "a held event was answered {other:?}"
            ))),
        }
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

    async fn streamed(&self, events: &[(String, String, i64)], now: i64) -> Result<(), StoreError> {
        self.writer
            .write(Write::Streamed {
                events: events.to_vec(),
                now,
            })
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
}

/// Holds a group's direct-channel events (`(place, event)`): each place's
/// answer becomes `Held` with the new event's sequence number, or with none
/// when the device already holds that notification.
pub(in crate::store) async fn hold_direct<DB>(
    tx: &mut Transaction<'_, DB>,
    days: &Days,
    holds: &[(usize, &DirectHold)],
    answers: &mut [Answer],
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    String: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    for chunk in holds.chunks(100) {
        let values = row_placeholders(chunk.len(), 5);
        let sql = format!(
            "INSERT INTO direct_events (registration_id, notification_id, payload, expires_at, \
             created_at) VALUES {values} ON CONFLICT (registration_id, notification_id) DO NOTHING \
             RETURNING registration_id, notification_id, seq"
        );
        let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql);
        for (_, hold) in chunk {
            query = query
                .bind(&hold.registration_id)
                .bind(&hold.notification_id)
                .bind(&hold.payload)
                .bind(hold.expires_at)
                .bind(hold.now);
        }
        let mut held: std::collections::HashMap<(String, String), i64> = query
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(r, n, seq)| ((r, n), seq))
            .collect();
        for (i, hold) in chunk {
            let key = (hold.registration_id.clone(), hold.notification_id.clone());
            // The same event twice in one group: the first place gets the number.
            answers[*i] = Answer::Held(held.remove(&key));
        }
        // The delivery is `held` from the same commit, before any stream can
        // write the event and mark it `sent`; a fan-out target (no row yet)
        // gets its row here.
        // One row per key: an upsert may not touch a row twice in one statement.
        let mut keys = std::collections::HashSet::new();
        let rows: Vec<&DirectHold> = chunk
            .iter()
            .map(|(_, hold)| *hold)
            .filter(|hold| keys.insert((&hold.notification_id, &hold.registration_id)))
            .collect();
        let created =
            super::creation_times(tx, rows.iter().map(|h| h.notification_id.as_str())).await?;
        // A notification gone (retention, its app deleted) gets no row.
        let rows: Vec<(&DirectHold, i64)> = rows
            .into_iter()
            .filter_map(|hold| Some((hold, *created.get(&hold.notification_id)?)))
            .collect();
        for (relation, rows) in days.group("deliveries", &rows, |(h, _)| &h.notification_id) {
            let values = row_placeholders(rows.len(), 6);
            let sql = format!(
                "INSERT INTO {relation} AS d (notification_id, registration_id, attempts, \
                 updated_at, state, created_at) VALUES {values} \
                 ON CONFLICT (notification_id, registration_id, created_at) DO UPDATE SET \
                 state = excluded.state, attempts = excluded.attempts, \
                 updated_at = excluded.updated_at WHERE d.state = 'queued'"
            );
            let mut query = sqlx::query(&sql).persistent(prepare::<DB>(&relation, "deliveries"));
            for (hold, created_at) in rows {
                query = query
                    .bind(&hold.notification_id)
                    .bind(&hold.registration_id)
                    .bind(hold.attempts)
                    .bind(hold.now)
                    .bind("held")
                    .bind(*created_at);
            }
            query.execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// Records what streams wrote (`(registration, notification, seq, now)`): the
/// deliveries become `sent`, each device's cursor moves to the highest of its
/// sequence numbers (never back).
pub(in crate::store) async fn record_streamed<DB>(
    tx: &mut Transaction<'_, DB>,
    days: &Days,
    streamed: &[(&str, &str, i64, i64)],
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
{
    let by_day = days.group("deliveries", streamed, |(_, n, ..)| n);
    for (relation, chunk) in pieces(&by_day, 100) {
        let join = deliveries_join::<DB>(relation, chunk.len(), 3);
        let sql = format!(
            "UPDATE {relation} AS d SET state = 'sent', updated_at = v.column3 \
             {join} AND d.state IN ('queued', 'held')"
        );
        let mut query = sqlx::query(&sql).persistent(prepare::<DB>(relation, "deliveries"));
        for (registration, notification, _, now) in chunk.iter().copied() {
            query = query.bind(*notification).bind(*registration).bind(*now);
        }
        let (lo, hi) = crate::ids::created_span(chunk.iter().map(|(_, n, ..)| *n));
        query.bind(lo).bind(hi).execute(&mut **tx).await?;
    }
    // One row per device: an UPDATE … FROM joining two rows of one device
    // would take either.
    let mut cursors = std::collections::BTreeMap::<&str, i64>::new();
    for &(registration, _, seq, _) in streamed {
        let cursor = cursors.entry(registration).or_insert(seq);
        *cursor = (*cursor).max(seq);
    }
    let cursors: Vec<_> = cursors.into_iter().collect();
    for chunk in cursors.chunks(100) {
        let join = keyed_join::<DB>(
            "registrations",
            "r",
            &row_placeholders(chunk.len(), 2),
            &["id"],
            None,
        );
        let sql = format!(
            "UPDATE registrations AS r SET direct_cursor = v.column2 {join} \
             AND r.direct_cursor < v.column2"
        );
        let mut query = sqlx::query(&sql);
        for (registration, seq) in chunk {
            query = query.bind(*registration).bind(*seq);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
