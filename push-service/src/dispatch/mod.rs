//! The dispatcher: takes tasks from the queue, drives deliveries to providers,
//! retries per policy, and sweeps the store for work no queue finished.

mod attempt;
mod born;
mod fanout;
pub mod queue;
pub mod redis_queue;
mod retention;
mod sweep;
#[cfg(test)]
mod tests;
mod wake;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use queue::{Leased, LocalQueue, Queue, QueueError, Task};
pub use sweep::sweep_once;
pub(crate) use wake::{deliver_tasks, wake, wake_all};
pub use workers::spawn;

use attempt::Attempt;
use wake::wake_after_outage;

use crate::delivery::retry::RetryPolicy;
use crate::delivery::transition::Registration;
use crate::delivery::{
    after_answer, before_send, Answer, Attempted, DeliveryState, ProviderKind, Transition,
};
use crate::ids::now_millis;
use crate::notification::Content;
use crate::providers::circuit::{Circuits, TokenVerdict};
use crate::providers::{Delivery, Outcome, Providers};
use crate::store::batch::{DeliveryClaim, RegistrationGuard};
use crate::store::{NotificationRow, PendingDelivery, Store, StoreError};
use crate::telemetry::names;

/// What the dispatcher takes from the configuration.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Tasks worked on at once by this node (0: this node does not dispatch).
    pub workers: usize,
    pub sweep_interval: Duration,
    /// How long a claimed delivery is leased before the sweep re-drives it.
    pub redrive_after: Duration,
    pub retry: RetryPolicy,
    /// How long a circuit stays open after a credential error.
    pub circuit_open: Duration,
    /// Token rejections in a row before a burst of them is suspected (see circuits).
    pub invalidation_guard_min: usize,
    /// Ready deliveries past which acceptance sheds load (0: never).
    pub max_queue_depth: u64,
    /// Audit entries older than this are dropped by the sweep (0: kept).
    pub audit_retention: Duration,
    /// Notifications older than this (and past their TTL) are dropped (0: kept).
    pub notification_retention: Duration,
    /// Rows per retention statement.
    pub retention_batch: u32,
}

impl DispatchSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        DispatchSettings {
            workers: config.dispatch_workers,
            sweep_interval: config.sweep_interval,
            redrive_after: config.redrive_after,
            retry: config.retry.clone(),
            circuit_open: config.providers.circuit_open,
            invalidation_guard_min: config.providers.invalidation_guard_min,
            max_queue_depth: config.max_queue_depth,
            audit_retention: config.audit_retention,
            notification_retention: config.notification_retention,
            retention_batch: config.retention_batch,
        }
    }
}

/// Queued deliveries as the sweep last counted them: the dispatcher writes
/// them, acceptance reads them (backpressure). Cheap to clone.
#[derive(Clone, Default)]
pub struct QueueDepths {
    ready: Arc<AtomicU64>,
    per_app: Arc<RwLock<HashMap<String, u64>>>,
}

impl QueueDepths {
    /// Deliveries ready to go (not waiting for a retry or a circuit), store-wide.
    pub fn ready(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }

    /// Queued deliveries of one app, waiting ones included.
    pub fn of_app(&self, app_id: &str) -> u64 {
        self.per_app
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app_id)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn set(&self, ready: u64, per_app: HashMap<String, u64>) {
        self.ready.store(ready, Ordering::Relaxed);
        *self.per_app.write().unwrap_or_else(|p| p.into_inner()) = per_app;
    }
}

/// The dispatcher of one node: what it reads and writes (store, queue), whom
/// it sends through (providers, guarded by their circuits), and its settings.
/// Built once from the configuration; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    /// The deliveries this node accepted, worked from memory before anything
    /// in the shared queue needs them (the local fast path; `None` when the
    /// shared queue is itself in-process). Their rows are durable already: a
    /// crash leaves them to the sweep, as a lost queue entry would.
    pub local: Option<Arc<dyn Queue>>,
    pub providers: Providers,
    pub circuits: Arc<Circuits>,
    pub settings: Arc<DispatchSettings>,
    pub depths: QueueDepths,
    /// Registrations this node invalidated in the last seconds (see `born`).
    pub invalidated: Arc<born::Invalidated>,
    /// Fan-out notifications read for their chunks (see `fanout`).
    pub fanouts: Arc<fanout::Fanouts>,
}

/// Runs one task and acknowledges it to the queue it came `from`; on a store
/// outage the task is released for later.
#[tracing::instrument(skip_all, fields(task = ?leased.task))]
pub(crate) async fn work(state: &Dispatcher, leased: Leased, from: &Arc<dyn Queue>) {
    let result = match &leased.task {
        Task::Deliver {
            notification,
            registrations,
            due,
        } => deliver(state, notification, registrations, *due).await,
        Task::Expand { notification } => fanout::expand(state, notification).await,
        Task::Chunk {
            notification,
            registrations,
        } => fanout::deliver_chunk(state, notification, registrations).await,
        Task::Carried(carried) => {
            deliver_pending(
                state,
                &carried.notification,
                &carried.content,
                carried.deliveries.clone(),
                Some(carried.due),
                Source::Carried,
            )
            .await
        }
    };
    match result {
        Ok(()) => {
            if let Err(e) = from.ack(&leased).await {
                tracing::warn!(error = %e, "ack failed; the task may run again (harmless)");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "task failed; released for a later try");
            metrics::counter!(names::TASKS_RELEASED).increment(1);
            let _ = from.release(leased).await;
        }
    }
}

/// Attempts the queued deliveries of one chunk. Finished ones are skipped, so a
/// redelivered task is harmless.
async fn deliver(
    state: &Dispatcher,
    id: &str,
    registrations: &[String],
    due: Option<i64>,
) -> Result<(), StoreError> {
    let Some((notification, pending)) = state.store.task_deliveries(id, registrations).await?
    else {
        return Ok(());
    };
    let content: Content =
        serde_json::from_str(&notification.content).map_err(|e| StoreError::Other(e.into()))?;
    deliver_pending(state, &notification, &content, pending, due, Source::Queued).await
}

/// How the deliveries of a run were taken, which decides what an attempt writes.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Read from the store as queued: each is claimed before it is sent.
    Queued,
    /// Carried from acceptance: claimed only while its registration is still
    /// the one acceptance read (see `deliver_one`).
    Carried,
    /// A fan-out chunk, taken whole: a target has no row until an outcome
    /// other than `sent`; successes are counted here.
    Chunk(&'a std::sync::atomic::AtomicI32),
}

/// Sends `pending` deliveries of `notification`, each claimed first against
/// the task's version `due` (unless its chunk was claimed whole).
async fn deliver_pending(
    state: &Dispatcher,
    notification: &NotificationRow,
    content: &Content,
    pending: Vec<PendingDelivery>,
    due: Option<i64>,
    source: Source<'_>,
) -> Result<(), StoreError> {
    // Per provider, one delivery goes first as a probe: a credential error opens
    // the circuit before the rest leave, so a broken credential costs one attempt
    // per task, not one per device. Then the rest go out concurrently (HTTP/2
    // multiplexes them) and their outcomes share group commits. A store error
    // releases the task; deliveries already finished are skipped when it runs again.
    use futures_util::StreamExt;
    let mut by_provider: std::collections::BTreeMap<Option<String>, Vec<PendingDelivery>> =
        std::collections::BTreeMap::new();
    for delivery in pending {
        by_provider
            .entry(delivery.provider.clone())
            .or_default()
            .push(delivery);
    }
    let runs = by_provider
        .into_iter()
        .map(|(provider, mut group)| async move {
            // A direct delivery is a store write, not a provider request: no
            // credential to probe, and all of a task's go at once (they share
            // group commits).
            let kind = provider.as_deref().and_then(ProviderKind::parse);
            let (probes, concurrency) = match kind {
                Some(ProviderKind::Direct) => (0, group.len()),
                _ => (1, CHUNK_CONCURRENCY),
            };
            let rest = group.split_off(probes);
            let mut first_error = None;
            for probe in group {
                if let Err(e) = deliver_one(state, notification, content, probe, due, source).await
                {
                    first_error.get_or_insert(e);
                }
            }
            let mut outcomes = futures_util::stream::iter(rest)
                .map(|delivery| deliver_one(state, notification, content, delivery, due, source))
                .buffer_unordered(concurrency.max(1));
            while let Some(outcome) = outcomes.next().await {
                if let Err(e) = outcome {
                    first_error.get_or_insert(e);
                }
            }
            first_error
        });
    let errors = futures_util::future::join_all(runs).await;
    errors.into_iter().flatten().next().map_or(Ok(()), Err)
}

/// A carried delivery whose guarded claim failed: read it from the store and
/// go on as an ordinary task would (nothing, when it was finished or taken).
async fn read_back(
    state: &Dispatcher,
    notification: &NotificationRow,
    content: &Content,
    pending: PendingDelivery,
    due: Option<i64>,
) -> Result<(), StoreError> {
    let registrations = [pending.registration_id];
    let Some((_, mut fresh)) = state
        .store
        .task_deliveries(&notification.id, &registrations)
        .await?
    else {
        return Ok(());
    };
    match fresh.pop() {
        Some(delivery) => {
            deliver_one(state, notification, content, delivery, due, Source::Queued).await
        }
        None => Ok(()),
    }
}

/// Deliveries of one task in flight at once.
const CHUNK_CONCURRENCY: usize = 32;

async fn deliver_one(
    state: &Dispatcher,
    notification: &NotificationRow,
    content: &Content,
    pending: PendingDelivery,
    due: Option<i64>,
    source: Source<'_>,
) -> Result<(), StoreError> {
    // Take the delivery just before sending it, against the version its task was
    // made for: when the sweep re-drove a delivery while the first task still
    // waited in the queue, only one of the two takes it. The lease covers this
    // one attempt; if the node dies, the sweep re-drives it once the lease is over.
    // A carried delivery's first attempt, within a second of its acceptance,
    // goes without a claim: the row acceptance wrote is its lease (`born`).
    // Otherwise a carried delivery is taken only if its registration is still
    // the one acceptance read (active, same token): a registration deleted,
    // invalidated or rotated since is read afresh, as any other task's would be.
    let taken_at = now_millis();
    let redrive_ms = state.settings.redrive_after.as_millis() as i64;
    let unclaimed = matches!(source, Source::Carried)
        && born::first_attempt_unclaimed(
            taken_at,
            notification.created_at,
            due,
            pending.attempts,
            redrive_ms,
        )
        && !state
            .invalidated
            .contains(&pending.registration_id, taken_at);
    if !matches!(source, Source::Chunk(_)) {
        let kind = if unclaimed { "born" } else { "written" };
        metrics::counter!(names::DELIVERY_CLAIMS, "app" => notification.app_id.clone(), "kind" => kind)
            .increment(1);
    }
    if !matches!(source, Source::Chunk(_)) && !unclaimed {
        let carried = matches!(source, Source::Carried);
        let lease = taken_at + redrive_ms;
        let taken = state
            .store
            .claim_delivery(DeliveryClaim {
                notification_id: notification.id.clone(),
                registration_id: pending.registration_id.clone(),
                attempts: pending.attempts,
                due,
                lease,
                unchanged: carried.then(|| RegistrationGuard {
                    token: pending.token.clone(),
                }),
            })
            .await?;
        if !taken {
            if carried {
                return Box::pin(read_back(state, notification, content, pending, due)).await;
            }
            return Ok(());
        }
    }
    let now = now_millis();
    let at = Attempted {
        now,
        expires_at: notification.expires_at,
        // A zero TTL is "now or never": its first attempt goes, nothing after it.
        now_or_never: crate::notification::now_or_never(
            notification.created_at,
            notification.expires_at,
        ),
        attempts_before: pending.attempts.max(0) as u32,
    };
    let attempt = Attempt {
        dispatcher: state,
        notification,
        registration_id: &pending.registration_id,
        provider: pending.provider.as_deref().and_then(ProviderKind::parse),
        sent: match source {
            Source::Chunk(sent) => Some(sent),
            _ => None,
        },
        patience_until: unclaimed.then(|| born::patience_until(now, due)),
    };
    let registration = match pending.registration_status.as_deref() {
        Some("active") => Registration::Active,
        Some(_) => Registration::Invalid,
        None => Registration::Deleted,
    };
    let app = notification.app_id.as_str();
    let provider = attempt.provider.map(|kind| state.providers.get(kind));
    let circuit = provider.and_then(|p| state.circuits.open_until(app, p.kind(), now));
    let circuit = circuit.as_ref().map(|(until, why)| (*until, why.as_str()));
    if let Some(instead) = before_send(&at, registration, circuit) {
        return attempt.apply(instead).await;
    }
    let Some(provider) = provider else {
        let name = pending.provider.as_deref().unwrap_or("unknown");
        let reason = format!("unknown provider `{name}`");
        return attempt
            .apply(Transition::Finish {
                state: DeliveryState::Failed,
                reason: Some(reason),
                attempts: at.number(),
            })
            .await;
    };
    let kind = provider.kind();
    let provider_name = kind.as_str();
    let open_ms = state.settings.circuit_open.as_millis() as i64;
    let delivery = Delivery {
        app_id: app,
        notification_id: &notification.id,
        content,
        created_at: notification.created_at,
        expires_at: notification.expires_at,
        registration_id: &pending.registration_id,
        token: pending.token.as_deref(),
        environment: pending.environment.as_deref(),
        attempt: at.number(),
        sealed: pending.sealed.as_deref(),
    };
    let outcome = provider.send(&delivery).await;
    // The answer's effects beyond this delivery (circuits, credential status,
    // token hygiene, waking others), then its class for the state machine.
    let store = &state.store;
    let answer = match outcome {
        Outcome::Sent => {
            let latency = (now_millis() - notification.created_at).max(0) as f64 / 1000.0;
            metrics::histogram!(names::DISPATCH_LATENCY, "provider" => provider_name)
                .record(latency);
            let recovered = state.circuits.success(app, kind, now_millis());
            if recovered.credential {
                store
                    .set_credential_error(app, kind, None, now_millis())
                    .await?;
            }
            if let Some(since) = recovered.outage_since {
                let state = state.clone();
                let app = app.to_owned();
                tokio::spawn(async move {
                    wake_after_outage(&state, &app, kind, since).await;
                });
            }
            Answer::Sent
        }
        Outcome::Held => Answer::Held,
        Outcome::InvalidToken(reason) => {
            let guard_min = state.settings.invalidation_guard_min;
            match state
                .circuits
                .rejected_token(app, kind, now, guard_min, open_ms)
            {
                TokenVerdict::Invalidate => {
                    state.invalidated.record(&pending.registration_id, now);
                    store
                        .invalidate_registration(&pending.registration_id, &reason, now)
                        .await?;
                    Answer::TokenDead(reason)
                }
                TokenVerdict::Suspicious(guard) => {
                    tracing::warn!(app, provider = provider_name, "{guard}");
                    store
                        .set_credential_error(app, kind, Some(&guard), now)
                        .await?;
                    Answer::TokenSuspicious { guard, reason }
                }
            }
        }
        Outcome::CredentialError(reason) => {
            tracing::warn!(app, provider = provider_name, %reason, "credential refused; circuit open");
            state.circuits.open(app, kind, &reason, now, open_ms);
            store
                .set_credential_error(app, kind, Some(&reason), now)
                .await?;
            Answer::Credential(reason)
        }
        Outcome::Failed(reason) => Answer::Refused(reason),
        Outcome::Retry { reason, after } => {
            if state.circuits.provider_failed(app, kind, now) {
                tracing::warn!(
                    app,
                    provider = provider_name,
                    %reason,
                    "provider not answering; deliveries wait and are retried until their TTL, \
                     and go out as soon as it answers again"
                );
                metrics::counter!(names::PROVIDER_OUTAGES, "provider" => provider_name)
                    .increment(1);
            }
            Answer::Overloaded { reason, after }
        }
        Outcome::Unknown { reason, after } => Answer::Undocumented { reason, after },
    };
    let next = after_answer(
        answer,
        &at,
        &state.settings.retry,
        open_ms,
        rand::random::<f64>(),
    );
    attempt.apply(next).await
}
