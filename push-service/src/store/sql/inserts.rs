//! A group's new notifications: their idempotency keys, rows, queued
//! deliveries and audit entries, in multi-row statements.
//!
//! Every delivery and fan-out chunk carries its notification's creation time
//! (`created_at`), the key PostgreSQL partitions the three tables by; a
//! statement that names rows by notification id also bounds them by
//! [`crate::ids::created_span`], so it reads only the partitions that can
//! hold them.

use std::collections::{HashMap, HashSet};

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Transaction, Type};

use super::{Column, SqlBackend};
use crate::store::backend::{placeholders, row_placeholders};
use crate::store::batch::{prepare, Answer};
use crate::store::partitions::{pieces, Days};
use crate::store::rows::{bind_audit, bind_notification, NOTIFICATION_COLUMNS};
use crate::store::{AuditEntry, NotificationRow, StoreError};

/// A notification insert of a group: its place, row, registrations, re-drive time and audit entry.
pub(in crate::store) type Insert<'a> = (
    usize,
    &'a NotificationRow,
    &'a [String],
    i64,
    Option<&'a AuditEntry>,
);

/// Inserts a group's notifications. A notification whose idempotency key is
/// taken already (by an earlier request or an earlier place in this group),
/// or whose id is, is answered `NotApplied` and gets nothing else; the others
/// get their queued deliveries, and their audit entries are added to `audits`.
pub(in crate::store) async fn insert_notifications<'a, DB>(
    tx: &mut Transaction<'_, DB>,
    days: &Days,
    inserts: &[Insert<'a>],
    answers: &mut [Answer],
    audits: &mut Vec<&'a AuditEntry>,
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    // Keys first: the first place of a key in the group, or none if stored.
    let keyed: Vec<&Insert<'a>> = inserts
        .iter()
        .filter(|(_, n, ..)| n.idempotency_key.is_some())
        .collect();
    let mut keys_won = HashSet::new();
    for chunk in keyed.chunks(64) {
        let values = row_placeholders(chunk.len(), 5);
        let sql = format!(
            "INSERT INTO notification_keys (app_id, notifier_id, idempotency_key, \
             notification_id, created_at) VALUES {values} ON CONFLICT DO NOTHING \
             RETURNING notification_id"
        );
        let mut query = sqlx::query_as::<_, (String,)>(&sql);
        for (_, n, ..) in chunk {
            query = query
                .bind(&n.app_id)
                .bind(&n.notifier_id)
                .bind(&n.idempotency_key)
                .bind(&n.id)
                .bind(n.created_at);
        }
        keys_won.extend(
            query
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(|(id,)| id),
        );
    }
    let mut rows = Vec::with_capacity(inserts.len());
    for insert in inserts {
        let (i, n, ..) = *insert;
        if n.idempotency_key.is_some() && !keys_won.contains(&n.id) {
            answers[i] = Answer::NotApplied;
        } else {
            rows.push(insert);
        }
    }

    // Where one statement may hold several inserts, each day's notifications
    // go with their deliveries and audit entries in one statement.
    if DB::INSERTS_WITH {
        let by_day = days.group("notifications", &rows, |(_, n, ..)| &n.id);
        let mut rest = Vec::new();
        for (relation, chunk) in pieces(&by_day, 64) {
            let deliveries: usize = chunk.iter().map(|(_, _, r, ..)| r.len()).sum();
            if deliveries > TOGETHER_DELIVERIES {
                rest.extend(chunk.iter().map(|insert| **insert));
                continue;
            }
            let inserted = insert_together(tx, days, relation, chunk).await?;
            for &&&(i, row, ..) in chunk {
                if !inserted.contains(&row.id) {
                    answers[i] = Answer::NotApplied;
                }
            }
        }
        rows = rest;
    }

    // Notifications: an id not returned collided and gets nothing else.
    let mut inserted = HashSet::new();
    let by_day = days.group("notifications", &rows, |(_, n, ..)| &n.id);
    for (relation, chunk) in pieces(&by_day, 64) {
        let values = row_placeholders(chunk.len(), 13);
        let sql = format!(
            "INSERT INTO {relation} ({NOTIFICATION_COLUMNS}) VALUES {values} \
             ON CONFLICT DO NOTHING RETURNING id"
        );
        let mut query = sqlx::query_as::<_, (String,)>(&sql)
            .persistent(prepare::<DB>(relation, "notifications"));
        for (_, n, ..) in chunk.iter().copied().copied() {
            query = bind_notification(query, n);
        }
        inserted.extend(
            query
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(|(id,)| id),
        );
    }
    let mut deliveries = Vec::new();
    for &&(i, row, registrations, redrive_at, audit) in &rows {
        if !inserted.contains(&row.id) {
            answers[i] = Answer::NotApplied;
            continue;
        }
        deliveries.extend(registrations.iter().map(|r| QueuedRow {
            notification: &row.id,
            registration: r,
            redrive_at,
            created_at: row.created_at,
        }));
        audits.extend(audit);
    }
    insert_delivery_rows(tx, days, &deliveries).await
}

/// Most deliveries in a statement that also inserts their notifications;
/// a piece with more goes as separate statements.
const TOGETHER_DELIVERIES: usize = 1_000;

/// Inserts a piece of one day's notifications (`relation`), their queued
/// deliveries and their audit entries as one statement (data-modifying
/// `WITH`): deliveries and entries only of the notifications inserted.
/// Returns the ids inserted (an id taken already is not).
async fn insert_together<DB>(
    tx: &mut Transaction<'_, DB>,
    days: &Days,
    relation: &str,
    chunk: &[&&Insert<'_>],
) -> Result<HashSet<String>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    // The deliveries' partition: their day's when all of them share one.
    let by_day = days.group("deliveries", chunk, |(_, n, ..)| &n.id);
    let deliveries_in = match by_day.as_slice() {
        [(relation, _)] => relation.as_str(),
        _ => "deliveries",
    };
    let deliveries: usize = chunk.iter().map(|(_, _, r, ..)| r.len()).sum();
    let audits: Vec<&AuditEntry> = chunk.iter().filter_map(|(.., a)| *a).collect();
    let mut sql = format!(
        "WITH n AS (INSERT INTO {relation} ({NOTIFICATION_COLUMNS}) VALUES {} \
         ON CONFLICT DO NOTHING RETURNING id)",
        row_placeholders(chunk.len(), 13)
    );
    let mut used = chunk.len() * 13;
    if deliveries > 0 {
        sql.push_str(&format!(
            ", d AS (INSERT INTO {deliveries_in} (notification_id, registration_id, state, \
             attempts, next_attempt_at, updated_at, created_at) \
             SELECT v.column1, v.column2, 'queued', 0, v.column3, v.column4, v.column4 \
             FROM (VALUES {}) AS v WHERE v.column1 IN (SELECT id FROM n) \
             ON CONFLICT DO NOTHING)",
            values_from(used, deliveries, 4)
        ));
        used += deliveries * 4;
    }
    if !audits.is_empty() {
        sql.push_str(&format!(
            ", a AS (INSERT INTO audit_log (at, actor, action, app_id, target, source, details) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7 \
             FROM (VALUES {}) AS v WHERE v.column5 IN (SELECT id FROM n))",
            values_from(used, audits.len(), 7)
        ));
    }
    sql.push_str(" SELECT id FROM n");
    let mut query =
        sqlx::query_as::<_, (String,)>(&sql).persistent(prepare::<DB>(relation, "notifications"));
    for (_, n, ..) in chunk.iter().copied().copied() {
        query = bind_notification(query, n);
    }
    for &&&(_, n, registrations, redrive_at, _) in chunk {
        for registration in registrations {
            query = query
                .bind(&n.id)
                .bind(registration)
                .bind(redrive_at)
                .bind(n.created_at);
        }
    }
    for e in audits {
        query = bind_audit(query, e);
    }
    Ok(query
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect())
}

/// `row_placeholders` numbered after the `used` parameters before them.
fn values_from(used: usize, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(used + r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A queued delivery, new with its notification.
struct QueuedRow<'a> {
    notification: &'a str,
    registration: &'a str,
    redrive_at: i64,
    /// The notification's creation time (also the row's first `updated_at`).
    created_at: i64,
}

/// Inserts queued deliveries in multi-row statements (250 rows each).
async fn insert_delivery_rows<DB>(
    tx: &mut Transaction<'_, DB>,
    days: &Days,
    rows: &[QueuedRow<'_>],
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
{
    let by_day = days.group("deliveries", rows, |r| r.notification);
    for (relation, chunk) in pieces(&by_day, 250) {
        let values = (0..chunk.len())
            .map(|r| {
                let b = r * 4;
                format!(
                    "(${}, ${}, 'queued', 0, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {relation} (notification_id, registration_id, state, attempts, \
             next_attempt_at, updated_at, created_at) VALUES {values} ON CONFLICT DO NOTHING"
        );
        let mut query = sqlx::query(&sql).persistent(prepare::<DB>(relation, "deliveries"));
        for row in chunk.iter().copied() {
            query = query
                .bind(row.notification)
                .bind(row.registration)
                .bind(row.redrive_at)
                .bind(row.created_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The creation times of the notifications `ids`: read from the id where it
/// carries it, from the store otherwise (notifications from before ids
/// carried their time). An id not found is left out.
pub(in crate::store) async fn creation_times<'a, DB>(
    tx: &mut Transaction<'_, DB>,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, i64>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    String: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let mut times = HashMap::new();
    let mut unknown = Vec::new();
    for id in ids {
        match crate::ids::created_of(id) {
            Some(t) => {
                times.insert(id.to_owned(), t);
            }
            None => unknown.push(id),
        }
    }
    unknown.sort_unstable();
    unknown.dedup();
    for chunk in unknown.chunks(100) {
        let sql = format!(
            "SELECT id, created_at FROM notifications WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query =
            sqlx::query_as::<_, (String, i64)>(&sql).persistent(DB::PREPARE_PARTITIONED);
        for id in chunk {
            query = query.bind(*id);
        }
        times.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(times)
}
