//! The work queue: typed tasks, an in-process implementation, and the trait Redis implements.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Deliveries per queue task.
pub const TASK_CHUNK: usize = 100;

/// A unit of dispatch work. Tagged and versioned, so nodes of a rolling upgrade
/// can read each other's tasks; add new versions, never change old ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Task {
    /// Attempt the queued deliveries of these registrations.
    #[serde(rename = "deliver.v1")]
    Deliver {
        notification: String,
        registrations: Vec<String>,
        /// The re-drive time written with these deliveries when this task was made:
        /// the version a worker claims against. A copy made later by the sweep has a
        /// newer one, so of the two only one can take a delivery.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due: Option<i64>,
    },
    /// Expand an alias or whole-app fan-out into chunks of registrations.
    #[serde(rename = "expand.v1")]
    Expand { notification: String },
    /// The first attempts of one fan-out chunk (its key is its first
    /// registration). Any copy may run it while no other holds its lease.
    #[serde(rename = "chunk.v1")]
    Chunk {
        notification: String,
        registrations: Vec<String>,
    },
    /// Deliveries this node has just accepted, with what their first attempt
    /// needs, so the worker reads nothing back. Only the in-process queue
    /// carries it; a shared queue is given the ids (`Task::shareable`).
    #[serde(skip)]
    Carried(Arc<Carried>),
}

/// A notification and the deliveries of one of its tasks, as acceptance wrote them.
#[derive(Clone)]
pub struct Carried {
    pub notification: crate::store::NotificationRow,
    /// The notification's content, parsed (the row holds it as text).
    pub content: crate::notification::Content,
    pub deliveries: Vec<crate::store::PendingDelivery>,
    /// The re-drive time written with them (the version a claim is made against).
    pub due: i64,
}

impl Carried {
    fn registrations(&self) -> Vec<String> {
        self.deliveries
            .iter()
            .map(|d| d.registration_id.clone())
            .collect()
    }
}

/// Ids only: content and device tokens stay out of logs.
impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carried")
            .field("notification", &self.notification.id)
            .field("registrations", &self.registrations())
            .field("due", &self.due)
            .finish()
    }
}

impl PartialEq for Carried {
    fn eq(&self, other: &Self) -> bool {
        self.notification.id == other.notification.id
            && self.due == other.due
            && self.registrations() == other.registrations()
    }
}

impl Eq for Carried {}

impl Task {
    /// The task as another node can take it: a carried task becomes the ids
    /// of its deliveries (the worker then reads them from the store).
    pub fn shareable(self) -> Task {
        match self {
            Task::Carried(carried) => Task::Deliver {
                notification: carried.notification.id.clone(),
                registrations: carried.registrations(),
                due: Some(carried.due),
            },
            other => other,
        }
    }
}

/// A task taken from the queue, with what `ack` needs.
#[derive(Debug, Clone)]
pub struct Leased {
    pub task: Task,
    pub receipt: String,
}

/// Queue failures (the store stays the source of truth; the sweep recovers).
#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(pub String);

/// A work queue shared by the dispatchers.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// `local` or `redis`.
    fn kind(&self) -> &'static str;
    async fn push(&self, tasks: Vec<Task>) -> Result<(), QueueError>;
    /// Makes `task` available at `due_ms` (ms since the epoch).
    async fn push_at(&self, task: Task, due_ms: i64) -> Result<(), QueueError>;
    /// Takes up to `max` tasks, waiting at most `wait` for the first.
    async fn pop(&self, max: usize, wait: Duration) -> Result<Vec<Leased>, QueueError>;
    /// The task is done (whatever its outcome): forget it.
    async fn ack(&self, leased: &Leased) -> Result<(), QueueError>;
    /// The task could not be worked on now (e.g. the store is down): offer it again later.
    async fn release(&self, leased: Leased) -> Result<(), QueueError>;
    /// Waits until fewer than `limit` tasks wait in this queue (a queue that
    /// cannot tell answers at once). Acceptance waits here before it hands its
    /// work to the node's own workers: when they fall behind, callers are
    /// answered later instead of a backlog growing in memory.
    async fn room(&self, _limit: usize) {}
}

/// In-process queue of the embedded default. What it loses in a crash, the sweep
/// re-drives from the store.
#[derive(Default)]
pub struct LocalQueue {
    tasks: Arc<Mutex<VecDeque<Task>>>,
    ready: Arc<Notify>,
    /// Signalled when tasks are taken (for `room`).
    taken: Arc<Notify>,
}

impl LocalQueue {
    fn enqueue(tasks: &Mutex<VecDeque<Task>>, ready: &Notify, items: Vec<Task>) {
        let mut queue = tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.extend(items);
        drop(queue);
        ready.notify_waiters();
        ready.notify_one();
    }
}

#[async_trait]
impl Queue for LocalQueue {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn push(&self, tasks: Vec<Task>) -> Result<(), QueueError> {
        Self::enqueue(&self.tasks, &self.ready, tasks);
        Ok(())
    }

    async fn push_at(&self, task: Task, due_ms: i64) -> Result<(), QueueError> {
        let delay = (due_ms - crate::ids::now_millis()).max(0) as u64;
        let tasks = self.tasks.clone();
        let ready = self.ready.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            LocalQueue::enqueue(&tasks, &ready, vec![task]);
        });
        Ok(())
    }

    async fn pop(&self, max: usize, wait: Duration) -> Result<Vec<Leased>, QueueError> {
        let take = |tasks: &Mutex<VecDeque<Task>>| {
            let mut queue = tasks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let n = queue.len().min(max);
            queue
                .drain(..n)
                .map(|task| Leased {
                    task,
                    receipt: String::new(),
                })
                .collect::<Vec<_>>()
        };
        let notified = self.ready.notified();
        let taken = take(&self.tasks);
        if !taken.is_empty() {
            self.taken.notify_waiters();
            return Ok(taken);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        let taken = take(&self.tasks);
        if !taken.is_empty() {
            self.taken.notify_waiters();
        }
        Ok(taken)
    }

    async fn ack(&self, _leased: &Leased) -> Result<(), QueueError> {
        Ok(())
    }

    async fn release(&self, leased: Leased) -> Result<(), QueueError> {
        self.push_at(leased.task, crate::ids::now_millis() + 5_000)
            .await
    }

    async fn room(&self, limit: usize) {
        loop {
            let taken = self.taken.notified();
            let waiting = self
                .tasks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len();
            if waiting < limit {
                return;
            }
            // A bounded wait: a take missed between the count and here is seen next round.
            let _ = tokio::time::timeout(Duration::from_millis(50), taken).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_tagged_and_versioned() {
        let task = Task::Deliver {
            notification: "ntf_1".into(),
            registrations: vec!["reg_1".into()],
            due: None,
        };
        let json = serde_json::to_string(&task).expect("serializes");
        assert_eq!(
            json,
            r#"{"kind":"deliver.v1","notification":"ntf_1","registrations":["reg_1"]}"#
        );
        assert_eq!(serde_json::from_str::<Task>(&json).expect("reads"), task);
        assert!(serde_json::from_str::<Task>(r#"{"kind":"deliver.v0"}"#).is_err());
    }

    #[tokio::test]
    async fn room_waits_until_the_workers_take_enough() {
        let queue = Arc::new(LocalQueue::default());
        let task = Task::Expand {
            notification: "ntf".into(),
        };
        queue.push(vec![task.clone(); 5]).await.expect("push");
        tokio::time::timeout(Duration::from_millis(10), queue.room(6))
            .await
            .expect("room below the limit at once");
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.room(3).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "five waiting, three allowed");
        queue.pop(3, Duration::ZERO).await.expect("pop");
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room once two are left")
            .expect("joined");
    }

    #[tokio::test]
    async fn local_queue_hands_out_pushed_and_delayed_tasks() {
        let queue = LocalQueue::default();
        let task = Task::Expand {
            notification: "ntf".into(),
        };
        queue.push(vec![task.clone()]).await.expect("push");
        let got = queue.pop(10, Duration::from_millis(10)).await.expect("pop");
        assert_eq!(got.len(), 1);
        queue
            .push_at(task.clone(), crate::ids::now_millis() + 50)
            .await
            .expect("push_at");
        assert!(queue
            .pop(10, Duration::from_millis(1))
            .await
            .expect("pop")
            .is_empty());
        let got = queue.pop(10, Duration::from_secs(2)).await.expect("pop");
        assert_eq!(got.first().map(|l| &l.task), Some(&task));
    }
}
