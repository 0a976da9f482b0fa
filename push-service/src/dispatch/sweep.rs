//! The sweep: the store is the source of truth. Deliveries still queued after their
//! re-drive time (a lost queue entry, a dead node) are queued again; expired ones are closed.

use super::{Dispatcher, Task};
use crate::ids::now_millis;
use crate::providers::circuit::Probe;
use crate::store::StoreError;
use crate::telemetry::names;

/// Deliveries claimed per sweep round.
const SWEEP_BATCH: i64 = 5000;

/// One round of the sweep; returns how many deliveries it re-drove.
pub async fn sweep_once(state: &Dispatcher) -> Result<usize, StoreError> {
    let store = &state.store;
    let now = now_millis();
    let redrive_at = now + state.settings.redrive_after.as_millis() as i64;
    let expired = store.expire_overdue(now).await?;
    if expired > 0 {
        metrics::counter!(names::DELIVERIES_EXPIRED_BY_SWEEP).increment(expired);
    }
    let overdue = store.claim_overdue(now, redrive_at, SWEEP_BATCH).await?;
    let mut redriven = overdue.len();
    let mut tasks = super::deliver_tasks(overdue, redrive_at);
    // Fan-out chunks whose run did not finish (a lost task, a dead node).
    let chunks_per_round = SWEEP_BATCH / super::queue::TASK_CHUNK as i64;
    for (notification, registrations) in store
        .claim_overdue_chunks(now, redrive_at, chunks_per_round)
        .await?
    {
        redriven += registrations.len();
        tasks.push(Task::Chunk {
            notification,
            registrations,
        });
    }
    let stalled_before = now - state.settings.redrive_after.as_millis() as i64;
    for notification in store.claim_stalled_expansions(stalled_before, now).await? {
        tasks.push(Task::Expand { notification });
    }
    if !tasks.is_empty() {
        tracing::info!(
            deliveries = redriven,
            tasks = tasks.len(),
            "sweep re-drives unfinished work"
        );
        metrics::counter!(names::SWEEP_REDRIVEN).increment(redriven as u64);
        if let Err(e) = state.queue.push(tasks).await {
            tracing::warn!(error = %e, "sweep could not queue; next round retries");
        }
    }
    // During an outage one waiting delivery per app and provider goes early, as a
    // probe: when it gets through, the rest are woken at once (dispatch), so they
    // leave seconds after the provider is back, not at the end of their backoff.
    // For a while after, every round wakes what still waits (attempts that were
    // in flight at the return, then failed and went back to a long backoff).
    for (app, provider, probe) in state.circuits.probes(now) {
        match probe {
            Probe::One => {
                super::wake(state, &app, provider, 1).await?;
            }
            Probe::All => {
                super::wake_all(state, &app, provider).await;
            }
        }
    }
    measure_queue(state).await?;
    super::retention::retention_round(state, now).await?;
    Ok(redriven)
}

/// Counts the queued deliveries: the gauges, and the depths backpressure reads
/// (per app, and of the deliveries ready to go — not those waiting for a retry
/// or an open circuit, which are no work for the dispatcher now).
pub async fn measure_queue(state: &Dispatcher) -> Result<(), StoreError> {
    let now = now_millis();
    let waiting_after = now + state.settings.redrive_after.as_millis() as i64;
    let (apps, oldest) = state.store.queue_stats(waiting_after).await?;
    let total: i64 = apps.iter().map(|(_, queued, _)| queued).sum();
    let ready: i64 = apps
        .iter()
        .map(|(_, queued, waiting)| queued - waiting)
        .sum();
    state.depths.set(
        ready.max(0) as u64,
        apps.into_iter()
            .map(|(app, queued, _)| (app, queued.max(0) as u64))
            .collect(),
    );
    metrics::gauge!(names::QUEUE_DEPTH).set(total as f64);
    metrics::gauge!(names::QUEUE_OLDEST_AGE).set(
        oldest
            .map(|t| (now - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0),
    );
    Ok(())
}
