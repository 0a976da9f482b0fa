//! The commit of an accepted batch: rows stored together, counted, and their
//! tasks queued — fan-outs on the shared queue, deliveries to the node's own
//! workers when it has them.

use std::sync::Arc;

use crate::dispatch::queue::{Carried, TASK_CHUNK};
use crate::dispatch::{Queue, Task};
use crate::notification::Content;
use crate::store::{AuditEntry, InboxItem, NotificationRow, PendingDelivery, Store, StoreError};

/// Longest an answer waits for room at the node's own workers.
const HANDOFF_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A notification on its way to the store: its row, its content as the
/// workers use it, its deliveries and its audit entry.
pub(super) struct Row {
    pub notification: NotificationRow,
    pub content: Content,
    pub deliveries: Vec<PendingDelivery>,
    /// Its inbox items: written before the notification, removed if its
    /// insert fails.
    pub inbox: Vec<InboxItem>,
    pub audit: AuditEntry,
}

/// What the commit writes for one notification: its rows, or an acceptance
/// the store builds from the registrations it reads in its write.
pub(super) enum Job {
    Row(Box<Row>),
    Accept(
        crate::store::Acceptance,
        std::sync::Arc<std::sync::Mutex<Option<Made>>>,
    ),
}

/// What the store's build of an acceptance made: what the commit queues
/// (its rows are the store's) and its answer.
pub(super) struct Made {
    pub carry: Option<Carry>,
    pub answer: super::Accepted,
}

/// What the workers take of a stored notification: its row, its content as
/// they use it, its deliveries.
pub(super) struct Carry {
    pub notification: NotificationRow,
    pub content: Content,
    pub deliveries: Vec<PendingDelivery>,
}

/// Stores notifications with their deliveries (and audit entries) — concurrently,
/// so they share group commits — counts them and queues their tasks: fan-outs
/// to expand on the shared `queue`, deliveries to `handoff`. One outcome per
/// row, in order.
pub(super) async fn commit(
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    handoff: Arc<dyn Queue>,
    jobs: Vec<Job>,
    redrive_at: i64,
    handoff_limit: usize,
) -> Vec<Result<(), StoreError>> {
    // The rows' writes are polled together, so they reach the group writer
    // together; the commit runs in a task of its own already (the caller may
    // go away), so the rows need none each.
    let writes = jobs
        .iter()
        .map(|job| write(store.as_ref(), job, redrive_at));
    let outcomes = futures_util::future::join_all(writes).await;
    // What this node's own workers take carries the notification and its
    // deliveries: they read nothing back before the first attempt.
    let carry = handoff.kind() == "local";
    let mut expand = Vec::new();
    let mut deliver = Vec::new();
    for (job, outcome) in jobs.into_iter().zip(&outcomes) {
        if outcome.is_err() {
            continue;
        }
        let Some(Carry {
            notification: row,
            content,
            deliveries,
        }) = (match job {
            Job::Row(row) => Some(Carry {
                notification: row.notification,
                content: row.content,
                deliveries: row.deliveries,
            }),
            Job::Accept(_, made) => made
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .and_then(|m| m.carry.take()),
        })
        else {
            continue;
        };
        metrics::counter!(crate::telemetry::names::NOTIFICATIONS_ACCEPTED, "app" => row.app_id.clone())
            .increment(1);
        if row.is_expanding() {
            expand.push(Task::Expand {
                notification: row.id.clone(),
            });
            continue;
        }
        for chunk in deliveries.chunks(TASK_CHUNK) {
            deliver.push(if carry {
                Task::Carried(Arc::new(Carried {
                    notification: row.clone(),
                    content: content.clone(),
                    deliveries: chunk.to_vec(),
                    due: redrive_at,
                }))
            } else {
                Task::Deliver {
                    notification: row.id.clone(),
                    registrations: chunk.iter().map(|d| d.registration_id.clone()).collect(),
                    due: Some(redrive_at),
                }
            });
        }
    }
    if handoff_limit > 0 && !deliver.is_empty() {
        // Backpressure: while the workers are behind, the answer waits (the
        // notifications are durable already) and callers slow down with it.
        // At most a second: on the embedded default the same queue holds the
        // chunks of a large fan-out, which must not hold every other answer
        // until it is sent.
        let _ = tokio::time::timeout(HANDOFF_WAIT, handoff.room(handoff_limit)).await;
    }
    for (target, tasks) in [(&queue, expand), (&handoff, deliver)] {
        if tasks.is_empty() {
            continue;
        }
        if let Err(e) = target.push(tasks).await {
            // Durable already: the sweep re-drives them after `redrive_after`.
            tracing::warn!(error = %e, "queue unavailable; the sweep will re-drive these notifications");
        }
    }
    outcomes
}

/// Stores one job's rows: an acceptance as the store builds it, or a row with
/// its inbox items first (the notification is accepted only with them).
async fn write(store: &dyn Store, job: &Job, redrive_at: i64) -> Result<(), StoreError> {
    let r = match job {
        Job::Accept(acceptance, _) => return store.accept_notification(acceptance.clone()).await,
        Job::Row(r) => r,
    };
    let registrations: Vec<String> = r
        .deliveries
        .iter()
        .map(|d| d.registration_id.clone())
        .collect();
    let insert =
        || store.insert_notification(&r.notification, &registrations, redrive_at, Some(&r.audit));
    if r.inbox.is_empty() {
        return insert().await;
    }
    store.put_inbox_items(&r.inbox).await?;
    let inserted = insert().await;
    if inserted.is_err() {
        if let Err(e) = store.drop_inbox_items(&r.notification.id).await {
            tracing::warn!(error = %e, "inbox items of a notification not stored stay hidden until they expire");
        }
    }
    inserted
}
