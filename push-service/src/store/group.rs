//! Group commit's writer: the writes of many concurrent requests, workers and
//! streams wait together and run as one group (one transaction, see
//! `batch.rs` for what a group of hot writes becomes). The same machinery
//! groups the hot reads: the registration lookups of concurrent acceptances
//! become one statement (`sql/registrations.rs`).
//!
//! Callers still wait for their own write to commit (a `202` still means
//! committed); they just pay for one commit together instead of one each. A
//! writer takes whatever is waiting (up to [`MAX_BATCH`]) as soon as it is free,
//! so under light load a group is one write and nothing waits for a timer;
//! while another group is being written, a small group (under [`GATHER`])
//! waits for that commit and takes what arrives meanwhile.
//! When a group fails as a whole, each of its writes is tried again alone, so
//! one bad write never fails the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot, Mutex, Notify};

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
    /// Starts `writers` tasks running `exec`. While a group is being
    /// written, the next writer keeps gathering until that group committed
    /// or it holds [`GATHER`] writes: under a steady load the groups are as
    /// large as with one writer (one commit shared by all that arrived
    /// meanwhile), and only a burst (a fan-out's holds, a batch) has several
    /// large groups written at once.
    pub fn spawn(kind: GroupKind, writers: usize, exec: Executor<W, R>) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let rx = Arc::new(Mutex::new(rx));
        let writing = Arc::new(Writing::default());
        for _ in 0..writers.max(1) {
            let rx = rx.clone();
            let exec = exec.clone();
            let writing = writing.clone();
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
                        gather(&mut rx, &mut group, &writing).await;
                        group
                    };
                    writing.busy.fetch_add(1, Ordering::SeqCst);
                    run_group(kind, &exec, group).await;
                    writing.busy.fetch_sub(1, Ordering::SeqCst);
                    writing.done.notify_waiters();
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

/// A group smaller than this waits for the group being written to commit
/// before it is written beside it.
pub const GATHER: usize = 64;

/// Groups being written, and a signal each time one is done.
#[derive(Default)]
struct Writing {
    busy: AtomicUsize,
    done: Notify,
}

/// Adds to `group` what arrives while another group is being written, until
/// that one is done or `group` holds [`GATHER`] writes.
async fn gather<T>(rx: &mut mpsc::Receiver<T>, group: &mut Vec<T>, writing: &Writing) {
    while group.len() < GATHER {
        let done = writing.done.notified();
        tokio::pin!(done);
        // Registered before the check: a group finishing in between still wakes us.
        done.as_mut().enable();
        if writing.busy.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::select! {
            next = rx.recv() => match next {
                Some(next) => group.push(next),
                None => return,
            },
            _ = &mut done => return,
        }
    }
}

async fn run_group<W: Clone, R>(kind: GroupKind, exec: &Executor<W, R>, group: Vec<(W, Reply<R>)>) {
    metrics::histogram!(crate::telemetry::names::STORE_BATCH_SIZE, "kind" => kind.label())
        .record(group.len() as f64);
    let started = std::time::Instant::now();
    let took = || {
        metrics::histogram!(crate::telemetry::names::STORE_GROUP_SECONDS, "kind" => kind.label())
            .record(started.elapsed().as_secs_f64());
    };
    let (writes, replies): (Vec<W>, Vec<Reply<R>>) = group.into_iter().unzip();
    if writes.len() == 1 {
        let result = exec(writes).await.and_then(first);
        took();
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(result);
        }
        return;
    }
    let result = exec(writes.clone()).await;
    took();
    match result {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A writer whose groups take `pause` each, recording their sizes and
    /// how many ran at once at most.
    /// The writer, the sizes of its groups, the most groups written at once.
    type Recording = (
        GroupWriter<u32, u32>,
        Arc<std::sync::Mutex<Vec<usize>>>,
        Arc<AtomicUsize>,
    );

    fn recording(writers: usize, pause: Duration) -> Recording {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let exec: Executor<u32, u32> = {
            let (sizes, most) = (sizes.clone(), most.clone());
            Arc::new(move |writes: Vec<u32>| {
                let (sizes, running, most) = (sizes.clone(), running.clone(), most.clone());
                Box::pin(async move {
                    sizes.lock().unwrap().push(writes.len());
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(pause).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(writes)
                })
            })
        };
        (
            GroupWriter::spawn(GroupKind::Writes, writers, exec),
            sizes,
            most,
        )
    }

    #[tokio::test]
    async fn what_arrives_during_a_commit_waits_for_it_and_goes_as_one_group() {
        let (writer, sizes, most) = recording(4, Duration::from_millis(100));
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(0).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Ten writes, one by one, while the first group is being written.
        let mut rest = Vec::new();
        for i in 1..=10 {
            let writer = writer.clone();
            rest.push(tokio::spawn(async move { writer.write(i).await }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (i, write) in rest.into_iter().enumerate() {
            assert_eq!(write.await.unwrap().unwrap(), i as u32 + 1, "own answer");
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 10]);
        assert_eq!(most.load(Ordering::SeqCst), 1, "one group at a time");
    }

    #[tokio::test]
    async fn a_burst_is_written_several_groups_at_once() {
        let (writer, sizes, most) = recording(4, Duration::from_millis(50));
        let writes: Vec<_> = (0..1_000u32)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.write(i).await })
            })
            .collect();
        for (i, write) in writes.into_iter().enumerate() {
            assert_eq!(write.await.unwrap().unwrap(), i as u32);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 1_000);
        assert!(
            most.load(Ordering::SeqCst) >= 2,
            "groups side by side: {sizes:?}"
        );
    }
}
