//! The dispatcher: takes tasks from the queue, drives deliveries to providers,
//! retries per policy, and sweeps the store for work no queue finished.

pub mod queue;
pub mod redis_queue;
pub mod retry;
mod sweep;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use queue::{Leased, LocalQueue, Queue, QueueError, Task};
pub use sweep::sweep_once;

use crate::ids::now_millis;
use crate::notify::{parse_targets, Content, TASK_CHUNK};
use crate::providers::{Delivery, Outcome};
use crate::store::{NotificationRow, PendingDelivery, StoreError};
use crate::telemetry::names;
use crate::AppState;
use retry::RetryDecision;

/// Registrations per fan-out expansion chunk.
const EXPAND_CHUNK: i64 = 500;

/// Starts the reader, the workers and the sweep of this node (none when
/// `dispatch_workers` is 0). They stop when `shutdown` is cancelled.
pub fn spawn(state: &AppState, shutdown: CancellationToken) {
    let workers = state.config.dispatch_workers;
    if workers == 0 {
        return;
    }
    let (tx, rx) = mpsc::channel::<Leased>(workers * 2);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..workers {
        let state = state.clone();
        let rx = rx.clone();
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(leased) = next else { return };
                work(&state, leased).await;
            }
        });
    }
    let reader_state = state.clone();
    let reader_shutdown = shutdown.clone();
    tokio::spawn(async move {
        while !reader_shutdown.is_cancelled() {
            let popped = tokio::select! {
                _ = reader_shutdown.cancelled() => break,
                popped = reader_state.queue.pop(workers, Duration::from_secs(1)) => popped,
            };
            match popped {
                Ok(batch) => {
                    for leased in batch {
                        if tx.send(leased).await.is_err() {
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
    let sweep_state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_state.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = sweep_once(&sweep_state).await {
                        tracing::warn!(error = %e, "sweep failed; next round will retry");
                    }
                }
            }
        }
    });
}

/// Runs one task and acknowledges it; on a store outage the task is released for later.
#[tracing::instrument(skip_all, fields(task = ?leased.task))]
async fn work(state: &AppState, leased: Leased) {
    let result = match &leased.task {
        Task::Deliver {
            notification,
            registrations,
        } => deliver(state, notification, registrations).await,
        Task::Expand { notification } => expand(state, notification).await,
    };
    match result {
        Ok(()) => {
            if let Err(e) = state.queue.ack(&leased).await {
                tracing::warn!(error = %e, "ack failed; the task may run again (harmless)");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "task failed; released for a later try");
            let _ = state.queue.release(leased).await;
        }
    }
}

/// Expands an alias or whole-app fan-out, chunk by chunk, saving progress as it goes.
async fn expand(state: &AppState, id: &str) -> Result<(), StoreError> {
    let Some(mut notification) = state.store.get_notification(id).await? else {
        return Ok(());
    };
    if notification.state != "expanding" {
        return Ok(());
    }
    let targets =
        parse_targets(&notification.targets).map_err(|e| StoreError::Other(anyhow::anyhow!(e)))?;
    let aliases = targets.fanout_aliases().map(<[String]>::to_vec);
    loop {
        let redrive_at = now_millis() + state.config.redrive_after.as_millis() as i64;
        let chunk = state
            .store
            .expand_chunk(&notification, aliases.as_deref(), EXPAND_CHUNK, redrive_at)
            .await?;
        let tasks: Vec<Task> = chunk
            .chunks(TASK_CHUNK)
            .map(|c| Task::Deliver {
                notification: notification.id.clone(),
                registrations: c.to_vec(),
            })
            .collect();
        if !tasks.is_empty() {
            if let Err(e) = state.queue.push(tasks).await {
                tracing::warn!(error = %e, "queue unavailable during fan-out; the sweep will re-drive");
            }
        }
        if (chunk.len() as i64) < EXPAND_CHUNK {
            break;
        }
        notification.expand_cursor = chunk.last().cloned();
    }
    state
        .store
        .finish_expansion(&notification.id, now_millis())
        .await
}

/// Attempts the queued deliveries of one chunk. Finished ones are skipped, so a
/// redelivered task is harmless.
async fn deliver(state: &AppState, id: &str, registrations: &[String]) -> Result<(), StoreError> {
    let Some(notification) = state.store.get_notification(id).await? else {
        return Ok(());
    };
    let content: Content =
        serde_json::from_str(&notification.content).map_err(|e| StoreError::Other(e.into()))?;
    let pending = state.store.pending_deliveries(id, registrations).await?;
    for delivery in pending {
        deliver_one(state, &notification, &content, delivery).await?;
    }
    Ok(())
}

async fn deliver_one(
    state: &AppState,
    notification: &NotificationRow,
    content: &Content,
    pending: PendingDelivery,
) -> Result<(), StoreError> {
    let store = &state.store;
    let now = now_millis();
    let attempts = pending.attempts + 1;
    let record = |state_name: &'static str, reason: Option<String>, next: Option<i64>| {
        let notification_id = notification.id.clone();
        let registration_id = pending.registration_id.clone();
        async move {
            store
                .update_delivery(
                    &notification_id,
                    &registration_id,
                    state_name,
                    reason.as_deref(),
                    attempts,
                    next,
                    now_millis(),
                )
                .await
        }
    };
    let provider_name = pending.provider.clone().unwrap_or_else(|| "unknown".into());
    let count = |outcome: &'static str| {
        metrics::counter!(names::DELIVERIES, "app" => notification.app_id.clone(),
            "provider" => provider_name.clone(), "outcome" => outcome)
        .increment(1);
    };
    if now >= notification.expires_at {
        count("expired");
        return record("expired", Some("ttl".into()), None).await;
    }
    match pending.registration_status.as_deref() {
        Some("active") => {}
        Some(_) => {
            count("invalid");
            return record("invalid", Some("registration-invalid".into()), None).await;
        }
        None => {
            count("invalid");
            return record("invalid", Some("registration-deleted".into()), None).await;
        }
    }
    let Some(provider) = state.providers.get(&provider_name) else {
        count("failed");
        return record(
            "failed",
            Some(format!("unknown provider `{provider_name}`")),
            None,
        )
        .await;
    };
    let delivery = Delivery {
        app_id: &notification.app_id,
        notification_id: &notification.id,
        content,
        created_at: notification.created_at,
        expires_at: notification.expires_at,
        registration_id: &pending.registration_id,
        token: pending.token.as_deref(),
        environment: pending.environment.as_deref(),
        attempt: attempts as u32,
    };
    let outcome = provider.send(&delivery).await;
    let latency = (now_millis() - notification.created_at).max(0) as f64 / 1000.0;
    match outcome {
        Outcome::Sent => {
            count("sent");
            metrics::histogram!(names::DISPATCH_LATENCY, "provider" => provider_name.clone())
                .record(latency);
            record("sent", None, None).await
        }
        Outcome::Held => {
            count("held");
            record("held", None, None).await
        }
        Outcome::InvalidToken(reason) => {
            count("invalid");
            store
                .invalidate_registration(&pending.registration_id, &reason, now)
                .await?;
            record("invalid", Some(reason), None).await
        }
        Outcome::Failed(reason) => {
            count("failed");
            record("failed", Some(reason), None).await
        }
        Outcome::Retry { reason, after } => {
            let decision = state.config.retry.next(
                attempts as u32,
                now,
                notification.expires_at,
                after,
                rand::random::<f64>(),
            );
            match decision {
                RetryDecision::At(at) => {
                    count("retry");
                    // The queue entry holds the retry; the sweep takes over if it is lost.
                    let redrive = at + state.config.redrive_after.as_millis() as i64;
                    record("queued", Some(reason), Some(redrive)).await?;
                    let task = Task::Deliver {
                        notification: notification.id.clone(),
                        registrations: vec![pending.registration_id.clone()],
                    };
                    if let Err(e) = state.queue.push_at(task, at).await {
                        tracing::warn!(error = %e, "retry not queued; the sweep will re-drive it");
                    }
                    Ok(())
                }
                RetryDecision::Expired => {
                    count("expired");
                    record("expired", Some(format!("ttl (last error: {reason})")), None).await
                }
                RetryDecision::GiveUp => {
                    count("failed");
                    record(
                        "failed",
                        Some(format!("gave up after {attempts} attempts: {reason}")),
                        None,
                    )
                    .await
                }
            }
        }
    }
}
