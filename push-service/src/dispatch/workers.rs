//! The dispatcher's running parts: the queue readers, the workers and the
//! rounds of the sweep.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{sweep, sweep_once, work, Dispatcher, Leased, Queue};
use crate::store::StoreError;

/// Starts the reader, the workers and the sweep of this node (none when
/// `dispatch_workers` is 0). They stop when `shutdown` is cancelled: the reader
/// takes nothing more, the workers finish what they hold and end. The returned
/// tracker lets the caller wait for that (bounded by the shutdown grace).
pub fn spawn(state: &Dispatcher, shutdown: CancellationToken) -> tokio_util::task::TaskTracker {
    let tracker = tokio_util::task::TaskTracker::new();
    let workers = state.settings.workers;
    if workers == 0 {
        // No sweep here, but backpressure still needs the queue's depth.
        if state.settings.max_queue_depth > 0 {
            every_sweep_interval(state, shutdown, "queue depth", |state| async move {
                sweep::measure_queue(&state).await
            });
        }
        return tracker;
    }
    let (tx, rx) = mpsc::channel::<(Leased, Arc<dyn Queue>)>(workers * 2);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..workers {
        let state = state.clone();
        let rx = rx.clone();
        tracker.spawn(async move { worker(&state, &rx).await });
    }
    read_into(
        state.queue.clone(),
        workers,
        tx.clone(),
        shutdown.clone(),
        false,
    );
    if let Some(local) = &state.local {
        // At shutdown the local queue is emptied into the workers (their grace
        // covers it) rather than left to the sweep.
        read_into(local.clone(), workers, tx, shutdown.clone(), true);
    }
    every_sweep_interval(state, shutdown, "sweep", |state| async move {
        sweep_once(&state).await.map(|_| ())
    });
    tracker
}

/// Carried tasks (deliveries this node just accepted) one worker holds at once.
/// A worker's attempt ends with its outcome's group commit; holding several
/// carried tasks, it sends the next while the previous outcome is written, so
/// 16 workers are not capped at 16 commits' worth of deliveries. A carried
/// task spends most of its time waiting for that commit (a send to the
/// simulators answers in about a millisecond, a group commits in several), so
/// the node's deliveries in flight, 16 × this, bound what it delivers: at four
/// (64 in flight) batches of 100 were delivered at ~7,400/s with a fifth of
/// the machine idle, at 32 at ~10,000/s (BENCHMARKS.md, twenty-seventh
/// session). A provider's own limit on concurrent streams still holds (a send
/// waits for a free stream). Any other task (a fan-out chunk with its own 32
/// sends in flight, a retry, a re-drive) is held alone, as before: more of
/// those at once starved fan-outs on three nodes (docs/RELIABILITY.md, 64
/// workers).
const CARRIED_PER_WORKER: usize = 32;

/// One worker: takes tasks from `rx` until it closes, and finishes what it holds.
async fn worker(
    state: &Dispatcher,
    rx: &tokio::sync::Mutex<mpsc::Receiver<(Leased, Arc<dyn Queue>)>>,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut carried = FuturesUnordered::new();
    loop {
        let next = tokio::select! {
            biased;
            Some(()) = carried.next(), if !carried.is_empty() => continue,
            next = async { rx.lock().await.recv().await }, if carried.len() < CARRIED_PER_WORKER => next,
        };
        let Some((leased, from)) = next else { break };
        if matches!(leased.task, super::Task::Carried(_)) {
            carried.push(async move { work(state, leased, &from).await });
        } else {
            // Alone: what it holds ends first.
            while carried.next().await.is_some() {}
            work(state, leased, &from).await;
        }
    }
    while carried.next().await.is_some() {}
}

/// Feeds the workers from `queue` until `shutdown` (then, when `drain`, until
/// the queue is empty).
fn read_into(
    queue: Arc<dyn Queue>,
    workers: usize,
    tx: mpsc::Sender<(Leased, Arc<dyn Queue>)>,
    shutdown: CancellationToken,
    drain: bool,
) {
    tokio::spawn(async move {
        loop {
            let popped = if shutdown.is_cancelled() {
                if !drain {
                    return;
                }
                match queue.pop(workers, Duration::ZERO).await {
                    Ok(batch) if batch.is_empty() => return,
                    other => other,
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => continue,
                    popped = queue.pop(workers, Duration::from_secs(1)) => popped,
                }
            };
            match popped {
                Ok(batch) => {
                    for leased in batch {
                        if tx.send((leased, queue.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queue read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Runs `round` every `sweep_interval` until `shutdown`; a failed round is
/// logged and the next one tries again.
fn every_sweep_interval<F, Fut>(
    state: &Dispatcher,
    shutdown: CancellationToken,
    what: &'static str,
    round: F,
) where
    F: Fn(Dispatcher) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), StoreError>> + Send,
{
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = round(state.clone()).await {
                        tracing::warn!(error = %e, "{what} failed; the next round retries");
                    }
                }
            }
        }
    });
}
