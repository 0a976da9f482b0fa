//! Retention, run by every node's sweep: notifications past their keeping time
//! (and their TTL), expired direct-channel events and old audit entries are
//! deleted a bounded batch at a time, a bounded number of batches a round, so
//! a backlog is worked off over several rounds instead of in one long
//! transaction. The figures it leaves (`push_retention_lag_seconds` and the
//! rest) show whether it keeps up.
//!
//! On PostgreSQL notifications, deliveries and chunks are partitioned by day:
//! each round makes the week ahead and drops a day whole once its end is past
//! both the keeping time and the longest TTL. Batches there run a day behind,
//! so they take only what no partition drop will (rows of the default
//! partition, a notification whose short TTL ended long before its day's).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::Dispatcher;
use crate::store::StoreError;
use crate::telemetry::names;

/// Batches of one kind per round, at most.
const BATCHES_PER_ROUND: usize = 20;
/// Time a round may spend deleting, at most (then the next round goes on).
const ROUND_BUDGET: Duration = Duration::from_millis(500);
/// SQLite pages given back to the file system per round, at most.
const COMPACT_PAGES: u32 = 4096;
/// Store sizes are measured this often (ms); the queries are cheap, not free.
const MEASURE_EVERY_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

static LAST_MEASURED: AtomicI64 = AtomicI64::new(0);

/// One round.
pub async fn retention_round(state: &Dispatcher, now: i64) -> Result<(), StoreError> {
    let store = state.store.as_ref();
    let settings = &state.settings;
    let limit = settings.retention_batch;
    let started = Instant::now();
    let keep = settings.notification_retention.as_millis() as i64;
    let notification_cutoff = (keep > 0).then(|| now - keep);
    // Batches wait a day longer where a day goes whole by its partition.
    let slack = if store.partitioned() { DAY_MS } else { 0 };
    let batch_cutoff = notification_cutoff.map(|cutoff| cutoff - slack);

    if store.partitioned() {
        let change = store
            .maintain_partitions(now, drop_before(keep, now))
            .await?;
        for (kind, list) in [("created", &change.created), ("dropped", &change.dropped)] {
            metrics::counter!(names::PARTITIONS, "change" => kind).increment(list.len() as u64);
            for name in list {
                tracing::info!(partition = %name, "partition {kind}");
            }
        }
    }
    let mut notifications = 0;
    if let Some(before) = batch_cutoff {
        notifications = drain(started, "notifications", || {
            store.delete_old_notifications(before, now, limit)
        })
        .await?;
    }
    if let Some(before) = notification_cutoff {
        drain(started, "idempotency_keys", || {
            store.delete_old_keys(before, limit)
        })
        .await?;
        drain(started, "inbox_items", || {
            store.delete_old_inbox_items(before, limit)
        })
        .await?;
    }
    // Sealed content goes with its TTL; the item's row stays for the status.
    drain(started, "inbox_content", || {
        store.expire_inbox_items(now, limit)
    })
    .await?;
    let events = drain(started, "direct_events", || {
        store.delete_expired_direct_events(now, limit)
    })
    .await?;
    if settings.audit_retention.as_millis() > 0 {
        let before = now - settings.audit_retention.as_millis() as i64;
        drain(started, "audit", || {
            store.delete_audit_before(before, limit)
        })
        .await?;
    }
    if notifications + events > 0 {
        store.compact(COMPACT_PAGES).await?;
    }

    let stats = store
        .retention_stats(batch_cutoff.unwrap_or(i64::MIN), now)
        .await?;
    metrics::gauge!(names::NOTIFICATIONS_OLDEST_AGE).set(
        stats
            .oldest_created_at
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
    );
    let lag = lag_seconds(
        stats.oldest_due,
        if keep > 0 { keep + slack } else { 0 },
        now,
    );
    metrics::gauge!(names::RETENTION_LAG).set(lag);
    let last = LAST_MEASURED.load(Ordering::Relaxed);
    if now - last >= MEASURE_EVERY_MS
        && LAST_MEASURED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        for (table, bytes) in store.storage_bytes().await? {
            metrics::gauge!(names::STORE_BYTES, "table" => table).set(bytes as f64);
        }
    }
    Ok(())
}

/// Where a day's partition may go: days that ended before this are past the
/// keeping time `keep` and every TTL (`None`: retention is off).
fn drop_before(keep: i64, now: i64) -> Option<i64> {
    let longest_ttl = crate::notification::MAX_TTL_SECONDS as i64 * 1000;
    (keep > 0).then(|| now - keep.max(longest_ttl))
}

/// How long the oldest notification due for deletion (`(created_at,
/// expires_at)`) has been due, in seconds: since both its keeping time (`keep`
/// ms after creation) and its TTL ended. 0 when none is due or nothing expires.
fn lag_seconds(oldest_due: Option<(i64, i64)>, keep: i64, now: i64) -> f64 {
    match oldest_due {
        Some((created, expires)) if keep > 0 => {
            let due_since = (created + keep).max(expires);
            (now - due_since).max(0) as f64 / 1000.0
        }
        _ => 0.0,
    }
}

/// Runs `batch` until it deletes less than a full batch, the round's batches
/// or its time are used up; counts what it deleted.
async fn drain<F, Fut>(started: Instant, kind: &'static str, batch: F) -> Result<u64, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    for _ in 0..BATCHES_PER_ROUND {
        let deleted = batch().await?;
        total += deleted;
        metrics::counter!(names::RETENTION_BATCHES, "kind" => kind).increment(1);
        if deleted == 0 || started.elapsed() > ROUND_BUDGET {
            break;
        }
    }
    metrics::counter!(names::RETENTION_DELETED, "kind" => kind).increment(total);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::{drop_before, lag_seconds, DAY_MS};

    #[test]
    fn a_day_goes_after_the_keeping_time_and_the_longest_ttl() {
        let now = 1_000 * DAY_MS;
        // (keep, drop days that ended before)
        let cases = [
            (30 * DAY_MS, Some(now - 30 * DAY_MS)),
            // A keeping time shorter than FCM's 28-day TTL waits for the TTL.
            (7 * DAY_MS, Some(now - 28 * DAY_MS)),
            (365 * DAY_MS, Some(now - 365 * DAY_MS)),
            // Retention off.
            (0, None),
        ];
        for (keep, expected) in cases {
            assert_eq!(drop_before(keep, now), expected, "keep {keep}");
        }
    }

    #[test]
    fn lag_counts_from_the_later_of_keeping_time_and_ttl() {
        const DAY: i64 = 86_400_000;
        let now = 100 * DAY;
        // (oldest due, keep, expected seconds)
        let cases = [
            (None, 30 * DAY, 0.0),
            (
                Some((now - 40 * DAY, now - 39 * DAY)),
                30 * DAY,
                10.0 * 86_400.0,
            ),
            // The TTL ended after the keeping time: due since the TTL.
            (
                Some((now - 40 * DAY, now - 2 * DAY)),
                30 * DAY,
                2.0 * 86_400.0,
            ),
            // Just due: no lag yet.
            (Some((now - 30 * DAY, now - 29 * DAY)), 30 * DAY, 0.0),
            // Retention off: never behind.
            (Some((now - 400 * DAY, now - 399 * DAY)), 0, 0.0),
        ];
        for (i, (due, keep, expected)) in cases.into_iter().enumerate() {
            assert_eq!(lag_seconds(due, keep, now), expected, "case {i}");
        }
    }
}
