//! Group commit's writer: the writes of many concurrent requests, workers and
//! streams wait together and run as one group (one transaction, see
//! `batch.rs` for what a group of hot writes becomes). The same machinery
//! groups the hot reads: the registration lookups of concurrent acceptances
//! become one statement (`sql/registrations.rs`).
//!
//! Callers still wait for their own write to commit (a `202` still means
//! committed); they just pay for one commit together instead of one each. A
//! writer takes whatever is waiting (up to [`MAX_BATCH`]) as soon as it is free,
//! so under light load a group is one write and nothing waits for a timer.
//! When a group fails as a whole, each of its writes is tried again alone, so
//! one bad write never fails the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::StoreError;

/// Most writes in one group.
pub const MAX_BATCH: usize = 256;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;
/// What running a group returns: one answer per write, in order.
pub type GroupFuture<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, StoreError>> + Send>>;
/// Runs a group of writes `W` in one transaction; one answer `R` per write, in order.
pub type Executor<W, R> = Arc<dyn Fn(Vec<W>) -> GroupFuture<R> + Send + Sync>;

/// Handle to the writer tasks; cheap to clone. The tasks end when the last handle drops.
pub struct GroupWriter<W, R> {
    tx: mpsc::Sender<(W, Reply<R>)>,
}

impl<W, R> Clone for GroupWriter<W, R> {
    fn clone(&self) -> Self {
        GroupWriter {
            tx: self.tx.clone(),
        }
    }
}

/// What a group holds, for `push_store_batch_size{kind}`.
#[derive(Debug, Clone, Copy)]
pub enum GroupKind {
    /// Hot writes, one transaction per group.
    Writes,
    /// Registration lookups, one statement per group.
    Lookups,
}

impl GroupKind {
    fn label(self) -> &'static str {
        match self {
            GroupKind::Writes => "writes",
            GroupKind::Lookups => "lookups",
        }
    }
}

impl<W, R> GroupWriter<W, R>
where
    W: Clone + Send + 'static,
    R: Send + 'static,
{
    /// Starts `writers` tasks running `exec` (the store starts one: see
    /// `postgres.rs` for why not more).
    pub fn spawn(kind: GroupKind, writers: usize, exec: Executor<W, R>) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            let rx = rx.clone();
            let exec = exec.clone();
            tokio::spawn(async move {
                loop {
                    let group = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut group = vec![first];
                        while group.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(next) => group.push(next),
                                Err(_) => break,
                            }
                        }
                        group
                    };
                    run_group(kind, &exec, group).await;
                }
            });
        }
        GroupWriter { tx }
    }

    /// Submits one write and waits until its transaction committed.
    pub async fn write(&self, write: W) -> Result<R, StoreError> {
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

async fn run_group<W: Clone, R>(kind: GroupKind, exec: &Executor<W, R>, group: Vec<(W, Reply<R>)>) {
    metrics::histogram!(crate::telemetry::names::STORE_BATCH_SIZE, "kind" => kind.label())
        .record(group.len() as f64);
    let (writes, replies): (Vec<W>, Vec<Reply<R>>) = group.into_iter().unzip();
    if writes.len() == 1 {
        let result = exec(writes).await.and_then(first);
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(result);
        }
        return;
    }
    match exec(writes.clone()).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, size = writes.len(), "group failed; writing one by one");
            for (write, reply) in writes.into_iter().zip(replies) {
                let _ = reply.send(exec(vec![write]).await.and_then(first));
            }
        }
    }
}

/// The one answer of a group of one.
fn first<R>(answers: Vec<R>) -> Result<R, StoreError> {
    answers
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("the store writer gave no answer")))
}
