//! Group commit: the hot writes of many concurrent requests and workers share
//! one transaction.
//!
//! Callers still wait for their own write to commit (a `202` still means
//! committed); they just pay for one commit together instead of one each. A
//! writer takes whatever is waiting (up to [`MAX_BATCH`]) as soon as it is free,
//! so under light load a batch is one write and nothing waits for a timer.
//! When a batch fails as a whole, each of its writes is tried again alone, so
//! one bad write never fails the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{AuditEntry, NotificationRow, StoreError};

/// Most writes in one transaction.
pub const MAX_BATCH: usize = 256;

/// One write that can share a transaction with others.
#[derive(Debug, Clone)]
pub enum Write {
    /// Replay cache: applied means "first use".
    RememberOnce {
        key: String,
        expires_at: i64,
        now: i64,
    },
    /// A notification with its queued deliveries: not applied means an
    /// idempotency-key (or id) collision.
    InsertNotification {
        row: Box<NotificationRow>,
        registrations: Vec<String>,
        redrive_at: i64,
        /// Written with the notification, when it is inserted.
        audit: Option<Box<AuditEntry>>,
    },
    /// Outcome of one delivery attempt (applied only while still queued).
    UpdateDelivery(crate::store::DeliveryUpdate),
    /// A queued delivery taken for one attempt (applied: it was still queued
    /// with `attempts` attempts; it now has one more and re-drives at `lease`).
    ClaimDelivery {
        notification_id: String,
        registration_id: String,
        attempts: i32,
        due: Option<i64>,
        lease: i64,
    },
    /// An audit-log entry (always applied).
    Audit(Box<AuditEntry>),
}

type Reply = oneshot::Sender<Result<bool, StoreError>>;
type BatchFuture = Pin<Box<dyn Future<Output = Result<Vec<bool>, StoreError>> + Send>>;
/// Runs a batch in one transaction; returns "applied" per write, in order.
pub type Executor = Arc<dyn Fn(Vec<Write>) -> BatchFuture + Send + Sync>;

/// Handle to the writer tasks; cheap to clone. The tasks end when the last handle drops.
#[derive(Clone)]
pub struct GroupWriter {
    tx: mpsc::Sender<(Write, Reply)>,
}

impl GroupWriter {
    /// Starts `writers` tasks (1 for SQLite, a few for PostgreSQL) running `exec`.
    pub fn spawn(writers: usize, exec: Executor) -> Self {
        let (tx, rx) = mpsc::channel::<(Write, Reply)>(MAX_BATCH * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            let rx = rx.clone();
            let exec = exec.clone();
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    run_batch(&exec, batch).await;
                }
            });
        }
        GroupWriter { tx }
    }

    /// Submits one write and waits until its transaction committed.
    pub async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((write, reply))
            .await
            .map_err(|_| StoreError::Other(anyhow::anyhow!("the store writer has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Other(anyhow::anyhow!("the store writer dropped a write")))?
    }
}

async fn run_batch(exec: &Executor, batch: Vec<(Write, Reply)>) {
    metrics::histogram!(crate::telemetry::names::STORE_BATCH_SIZE).record(batch.len() as f64);
    let (writes, replies): (Vec<Write>, Vec<Reply>) = batch.into_iter().unzip();
    if writes.len() == 1 {
        let result = exec(writes).await.map(|applied| applied[0]);
        let _ = replies.into_iter().next().map(|r| r.send(result));
        return;
    }
    match exec(writes.clone()).await {
        Ok(applied) => {
            for (reply, applied) in replies.into_iter().zip(applied) {
                let _ = reply.send(Ok(applied));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, size = writes.len(), "batch failed; writing one by one");
            for (write, reply) in writes.into_iter().zip(replies) {
                let result = exec(vec![write]).await.map(|applied| applied[0]);
                let _ = reply.send(result);
            }
        }
    }
}
