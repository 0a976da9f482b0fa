//! Fan-outs (alias and whole-app sends): expanded page by page into chunks
//! of registrations, each chunk run as one task. A chunk is claimed once for
//! all its targets; a success is counted, not written; a target gets a
//! delivery row only for another outcome (a failure, a retry, a hold), and
//! from then on it is retried like any delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use super::queue::TASK_CHUNK;
use super::{deliver_pending, Dispatcher, Source, Task};
use crate::ids::now_millis;
use crate::notification::{parse_targets, Content};
use crate::store::{ChunkClaim, ChunkDone, NotificationRow, Store, StoreError};

/// The fan-outs this node ran chunks of: their notification with its content
/// parsed, read once per node instead of once per chunk of 100. What a chunk
/// reads of it (id, app, creation and expiry times, content) never changes
/// once the notification is accepted, so a copy held here is never stale;
/// a fan-out of an app deleted meanwhile has its chunks deleted with it, and
/// a chunk is claimed before its notification is looked for here.
#[derive(Default)]
pub struct Fanouts {
    held: Mutex<HashMap<String, Arc<(NotificationRow, Content)>>>,
}

/// Most fan-outs [`Fanouts`] holds; past it, it starts again empty.
const FANOUTS_MOST: usize = 64;

impl Fanouts {
    /// The notification `id` with its content; `None` when it is gone.
    async fn get(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<Arc<(NotificationRow, Content)>>, StoreError> {
        let held = self.held.lock().ok().and_then(|h| h.get(id).cloned());
        if let Some(held) = held {
            return Ok(Some(held));
        }
        let Some(row) = store.get_notification(id).await? else {
            return Ok(None);
        };
        let content: Content =
            serde_json::from_str(&row.content).map_err(|e| StoreError::Other(e.into()))?;
        let found = Arc::new((row, content));
        if let Ok(mut held) = self.held.lock() {
            if held.len() >= FANOUTS_MOST {
                held.clear();
            }
            held.insert(id.to_owned(), found.clone());
        }
        Ok(Some(found))
    }
}

/// Registrations read per expansion page (each page one transaction).
const EXPAND_PAGE: i64 = 2_000;

/// Expands an alias or whole-app fan-out page by page, saving progress as it
/// goes; each page's chunks are queued at once, so sending overlaps expansion.
pub(super) async fn expand(state: &Dispatcher, id: &str) -> Result<(), StoreError> {
    let Some(mut notification) = state.store.get_notification(id).await? else {
        return Ok(());
    };
    if !notification.is_expanding() {
        return Ok(());
    }
    let targets =
        parse_targets(&notification.targets).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?;
    let aliases = targets.fanout_aliases().map(<[String]>::to_vec);
    loop {
        let redrive_at = now_millis() + state.settings.redrive_after.as_millis() as i64;
        let chunks = state
            .store
            .expand_page(
                &notification,
                aliases.as_deref(),
                EXPAND_PAGE,
                TASK_CHUNK,
                redrive_at,
            )
            .await?;
        let read: usize = chunks.iter().map(Vec::len).sum();
        let last = chunks.last().and_then(|c| c.last()).cloned();
        let tasks: Vec<Task> = chunks
            .into_iter()
            .map(|registrations| Task::Chunk {
                notification: notification.id.clone(),
                registrations,
            })
            .collect();
        if !tasks.is_empty() {
            if let Err(e) = state.queue.push(tasks).await {
                tracing::warn!(error = %e, "queue unavailable during fan-out; the sweep will re-drive");
            }
        }
        if (read as i64) < EXPAND_PAGE {
            break;
        }
        notification.expand_cursor = last;
    }
    state
        .store
        .finish_expansion(&notification.id, now_millis())
        .await
}

/// Runs one chunk: takes it (while no other run holds it), sends the first
/// attempt of each target that has no row yet, then closes the run with its
/// count of sent. A run cut short (a crash, a store error) leaves the chunk
/// queued; the sweep re-drives it once its lease is over, and the targets
/// that got a row meanwhile are not sent again.
///
/// A chunk is not versioned by its re-drive time as a delivery is: when a
/// fan-out's tasks wait in the queue longer than `redrive_after`, the sweep
/// queues copies, and a version would make the first copy to arrive (the
/// original) fail its claim, then the next, for as long as the queue stays
/// that slow.
pub(super) async fn deliver_chunk(
    state: &Dispatcher,
    notification_id: &str,
    registrations: &[String],
) -> Result<(), StoreError> {
    let Some(first) = registrations.first() else {
        return Ok(());
    };
    let now = now_millis();
    let lease = now + state.settings.redrive_after.as_millis() as i64;
    let taken = state
        .store
        .claim_chunk(ChunkClaim {
            notification_id: notification_id.to_owned(),
            first_registration: first.clone(),
            now,
            lease,
        })
        .await?;
    if !taken {
        return Ok(());
    }
    let Some(fanout) = state
        .fanouts
        .get(state.store.as_ref(), notification_id)
        .await?
    else {
        return Ok(());
    };
    let (notification, content) = fanout.as_ref();
    let pending = state
        .store
        .chunk_deliveries(notification, registrations)
        .await?;
    let sent = AtomicI32::new(0);
    deliver_pending(
        state,
        notification,
        content,
        pending,
        None,
        Source::Chunk(&sent),
    )
    .await?;
    state
        .store
        .finish_chunk(ChunkDone {
            notification_id: notification_id.to_owned(),
            first_registration: first.clone(),
            lease,
            sent: sent.load(Ordering::Relaxed),
            now: now_millis(),
        })
        .await
}
