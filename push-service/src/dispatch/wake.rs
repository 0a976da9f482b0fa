//! Waking waiting deliveries when a provider answers again, and turning
//! (notification, registration) pairs into deliver tasks.

use super::queue::TASK_CHUNK;
use super::{Dispatcher, Task};
use crate::delivery::ProviderKind;
use crate::ids::now_millis;
use crate::store::StoreError;

/// Deliveries woken per store round after an outage.
const WAKE_BATCH: i64 = 1000;
/// Rounds of one wake-up (a million deliveries); the sweep's recovery window catches the rest.
const MAX_WAKE_ROUNDS: usize = 1000;
/// Only deliveries waiting at least this much longer than a fresh lease are
/// woken: leases are never mistaken for waits (a claim racing the wake, clocks
/// a few seconds apart across nodes). A retry due sooner goes by itself anyway.
const WAKE_MARGIN_MS: i64 = 5_000;

/// The provider answers again for `app`: its deliveries waiting for a retry go
/// now, not at the end of their backoff.
pub(super) async fn wake_after_outage(
    state: &Dispatcher,
    app: &str,
    provider: ProviderKind,
    since: i64,
) {
    let woken = wake_all(state, app, provider).await;
    tracing::info!(
        app,
        provider = provider.as_str(),
        outage_seconds = (now_millis() - since) / 1000,
        woken,
        "provider answers again; waiting deliveries re-driven"
    );
}

/// Wakes every waiting delivery of one app and provider, batch by batch, until
/// none is left. A batch can come back short (or empty) when it skipped rows
/// another node was waking or writing, with more behind it: the sweep's
/// recovery window runs this again for a while.
pub(crate) async fn wake_all(state: &Dispatcher, app: &str, provider: ProviderKind) -> usize {
    let mut woken = 0usize;
    for _ in 0..MAX_WAKE_ROUNDS {
        match wake(state, app, provider, WAKE_BATCH).await {
            Ok(0) => break,
            Ok(n) => woken += n,
            Err(e) => {
                tracing::warn!(error = %e, app, provider = provider.as_str(), "waking waiting deliveries failed; their own retries and the sweep still run");
                break;
            }
        }
    }
    woken
}

/// Brings forward up to `limit` waiting deliveries of one app and provider and
/// queues them now. The sweep calls it with 1 during an outage: a probe.
pub(crate) async fn wake(
    state: &Dispatcher,
    app: &str,
    provider: ProviderKind,
    limit: i64,
) -> Result<usize, StoreError> {
    let redrive_at = now_millis() + state.settings.redrive_after.as_millis() as i64;
    // Beyond every lease: one taken a moment after `now` here, or by a node whose
    // clock runs a little ahead, still ends before this.
    let waiting_after = redrive_at + WAKE_MARGIN_MS;
    let woken = state
        .store
        .wake_waiting(app, provider, waiting_after, redrive_at, limit)
        .await?;
    let count = woken.len();
    let tasks = deliver_tasks(woken, redrive_at);
    if !tasks.is_empty() {
        if let Err(e) = state.queue.push(tasks).await {
            tracing::warn!(error = %e, "woken deliveries not queued; the sweep will re-drive them");
        }
    }
    Ok(count)
}

/// Deliver tasks for (notification, registration) pairs: grouped by notification,
/// `TASK_CHUNK` registrations a task, made for the re-drive time `due`.
pub(crate) fn deliver_tasks(pairs: Vec<(String, String)>, due: i64) -> Vec<Task> {
    let mut by_notification: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (notification, registration) in pairs {
        by_notification
            .entry(notification)
            .or_default()
            .push(registration);
    }
    let mut tasks = Vec::new();
    for (notification, registrations) in by_notification {
        for chunk in registrations.chunks(TASK_CHUNK) {
            tasks.push(Task::Deliver {
                notification: notification.clone(),
                registrations: chunk.to_vec(),
                due: Some(due),
            });
        }
    }
    tasks
}
