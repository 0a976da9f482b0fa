//! What a fan-out chunk's first attempts need, read in one PostgreSQL
//! statement: each registration of the chunk that has no delivery row for the
//! notification yet, with what a send needs of it.
//!
//! The shared SQL (`sql/chunks.rs`) reads them in two statements whose lists
//! of 100 placeholders are parsed and planned for every chunk (on PostgreSQL
//! the deliveries' is not kept prepared: it names the partitioned table).
//! Here the ids go as one array and the deliveries' day partition is named,
//! so the statement is prepared once per connection and day; measured
//! during a broadcast to 1,000,000 before it, the two statements' planning
//! alone took ~0.4 ms a chunk, more than reading the registrations.
//!
//! Both lookups are `LATERAL … LIMIT 1`, one index probe per id. The plan is
//! kept (generic) and cannot know how many rows the notification has: with
//! `NOT EXISTS` it joined each id against all of them (an anti join over
//! the notification's rows), so a fan-out whose targets get rows (the
//! direct channel's holds) got slower with every chunk: 10,000 streams took
//! 3.9–4.7 s to all receive one notification instead of 3.0–3.3.

use std::collections::HashMap;

use sqlx::PgPool;

use super::partitions::Days;
use super::{NotificationRow, PendingDelivery, StoreError};

/// A pending target as the statement returns it: the registration's id,
/// then its provider, token, environment and status (all `NULL` when the
/// registration is gone).
pub(super) type Found = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The pending deliveries of `registrations`, in their order. `None` when the
/// deliveries' day partition is not known (the shared SQL then reads them).
pub(super) async fn read(
    pool: &PgPool,
    days: &Days,
    notification: &NotificationRow,
    registrations: &[String],
) -> Result<Option<Vec<PendingDelivery>>, StoreError> {
    let deliveries = days.relation("deliveries", &notification.id);
    if !super::batch::prepare::<sqlx::Postgres>(&deliveries, "deliveries") {
        return Ok(None);
    }
    let sql = format!(
        "SELECT c.id, r.provider, r.token, r.environment, r.status \
         FROM unnest($1::text[]) AS c(id) \
         LEFT JOIN LATERAL (SELECT r.provider, r.token, r.environment, r.status \
         FROM registrations r WHERE r.id = c.id LIMIT 1) AS r ON true \
         LEFT JOIN LATERAL (SELECT 1 AS written FROM {deliveries} d \
         WHERE d.notification_id = $2 AND d.registration_id = c.id AND d.created_at = $3 \
         LIMIT 1) AS w ON true WHERE w.written IS NULL"
    );
    let ids: Vec<&str> = registrations.iter().map(String::as_str).collect();
    let found: Vec<Found> = sqlx::query_as(&sql)
        .bind(ids)
        .bind(&notification.id)
        .bind(notification.created_at)
        .fetch_all(pool)
        .await?;
    Ok(Some(in_order(registrations, found)))
}

/// `found` as pending deliveries in the order of `registrations` (an id the
/// statement did not return has a delivery row already and is left out).
fn in_order(registrations: &[String], found: Vec<Found>) -> Vec<PendingDelivery> {
    let mut found: HashMap<String, Found> = found.into_iter().map(|f| (f.0.clone(), f)).collect();
    registrations
        .iter()
        .filter_map(|id| found.remove(id))
        .map(first_attempt)
        .collect()
}

/// A fan-out target's first attempt, from its registration's id, provider,
/// token, environment and status (both backends' reads).
pub(super) fn first_attempt(
    (registration_id, provider, token, environment, status): Found,
) -> PendingDelivery {
    PendingDelivery {
        registration_id,
        attempts: 0,
        provider,
        token,
        environment,
        registration_status: status,
        sealed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(id: &str, provider: Option<&str>) -> Found {
        (
            id.to_owned(),
            provider.map(str::to_owned),
            provider.map(|_| "token".to_owned()),
            None,
            provider.map(|_| "active".to_owned()),
        )
    }

    #[test]
    fn pending_deliveries_keep_the_chunks_order_and_leave_out_written_ones() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], Vec<Found>, &[&str])] = &[
            (&["a", "b", "c"], vec![], &[]),
            (
                &["a", "b", "c"],
                vec![found("c", Some("apns")), found("a", Some("fcm"))],
                &["a", "c"],
            ),
            (
                &["a", "b"],
                vec![found("b", None), found("a", Some("apns"))],
                &["a", "b"],
            ),
        ];
        for (registrations, rows, expected) in cases {
            let pending = in_order(&ids(registrations), rows.clone());
            let got: Vec<&str> = pending.iter().map(|p| p.registration_id.as_str()).collect();
            assert_eq!(&got, expected, "{registrations:?}");
            for p in &pending {
                assert_eq!(p.attempts, 0);
                assert_eq!(p.provider.is_some(), p.registration_status.is_some());
            }
        }
    }
}
