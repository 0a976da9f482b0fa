//! The notify request: validation against provider limits, and durable acceptance.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::notifier::NotifierAuth;
use crate::delivery::NotificationPhase;
use crate::dispatch::queue::TASK_CHUNK;
use crate::dispatch::{Queue, QueueDepths, Task};
use crate::ids::{new_id, now_millis};
use crate::limits::{LimitError, Limiter};
use crate::store::{NotificationRow, Store, StoreError};

#[cfg(test)]
mod tests;
mod validate;
use crate::notification::{Alert, ApnsOverride, Content, Priority, TargetSpec, Targets};
pub use validate::{validate, InvalidNotification};

/// Why a notification was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The request breaks a rule (a provider would refuse it): 422, and why.
    #[error("{0}")]
    Invalid(String),
    /// The Idempotency-Key came with another body before: 422.
    #[error("this Idempotency-Key was used with a different request body")]
    KeyReused,
    /// The same Idempotency-Key is being accepted right now: 409.
    #[error("a request with this Idempotency-Key is in progress")]
    InProgress,
    /// The dispatcher is behind (`max_queue_depth`): 503, retry later.
    #[error("{0}")]
    Behind(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What cannot happen with valid data (a value that does not serialize).
    #[error(transparent)]
    Internal(#[from] serde_json::Error),
    /// The commit's task ended without an answer (the node is stopping).
    #[error("the write was interrupted: {0}")]
    Stopped(String),
}

impl From<InvalidNotification> for AcceptError {
    fn from(err: InvalidNotification) -> Self {
        AcceptError::Invalid(err.0)
    }
}

/// What acceptance takes from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct AcceptSettings {
    /// When the sweep re-drives a delivery no queue entry finished.
    pub redrive_after: Duration,
    /// Ready deliveries past which new notifications are refused (0: never).
    pub max_queue_depth: u64,
}

/// Acceptance of notifications: validated, limited, made durable, queued.
/// Built once from the configuration; cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub limiter: Limiter,
    /// The queue's depths as the dispatcher last counted them (backpressure).
    pub depths: QueueDepths,
    pub settings: AcceptSettings,
}

/// Largest payload (title, body, data and overrides, as JSON) accepted: the APNs and FCM limit.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Longest TTL: FCM's 28 days.
pub const MAX_TTL_SECONDS: u64 = 2_419_200;
/// TTL when the request gives none.
pub const DEFAULT_TTL_SECONDS: u64 = 86_400;

/// Body of `POST /v1/apps/{app}/notifications`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    pub targets: Targets,
    pub notification: Option<Alert>,
    /// String key/value pairs delivered to the app. Keys `aps` (APNs' own
    /// dictionary), `from`, `message_type`, `google*` and `gcm*` (FCM's) are refused.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    pub priority: Option<Priority>,
    /// Seconds the notification stays deliverable (default 86400, at most 2419200).
    /// `0` means now or never: one attempt at once (APNs `apns-expiration: 0`, FCM
    /// `ttl: "0s"`), no retry.
    pub ttl_seconds: Option<u64>,
    /// Replaces an undelivered notification with the same key (APNs collapse id, FCM collapse key).
    pub collapse_key: Option<String>,
    /// APNs push type; `alert` when there is a title or body, else `background`.
    /// `alert` needs a title, a body or `apns.payload.aps` alert, badge or sound;
    /// `background` takes none of them.
    pub push_type: Option<String>,
    pub apns: Option<ApnsOverride>,
    /// Raw FCM `message` fields (e.g. `{"android": {...}}`) merged into the message.
    /// The target is the registration's: `token`, `topic`, `condition`, `fid` and
    /// `name` are refused. `android.priority` is `NORMAL` or `HIGH`, `android.ttl`
    /// a duration such as `"3600s"` (at most 28 days), `apns.headers` follow the
    /// rules of `apns.headers`, `data` values are strings.
    #[schema(value_type = Option<Object>)]
    pub fcm: Option<serde_json::Value>,
}

/// A registration refused at acceptance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rejected {
    pub registration: String,
    /// `unknown` (no such registration in this app) or `invalid`.
    pub reason: String,
}

/// The `202` answer: the notification is durable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    /// Targets that will be attempted.
    pub accepted: i64,
    pub rejected: Vec<Rejected>,
}

impl Acceptor {
    /// Validates, stores (idempotently) and enqueues a notification; answers only once it is durable.
    pub async fn accept(
        &self,
        auth: &NotifierAuth,
        idempotency_key: Option<&str>,
        body: serde_json::Value,
    ) -> Result<Accepted, AcceptError> {
        let request_hash = hex::encode(Sha256::digest(serde_json::to_vec(&body)?));
        if let Some(key) = idempotency_key {
            if let Some(previous) = self.replay(auth, key, &request_hash).await? {
                return Ok(previous);
            }
        }
        let request: NotifyRequest =
            serde_json::from_value(body).map_err(|e| AcceptError::Invalid(e.to_string()))?;
        self.shed_when_behind(&auth.app_id)?;
        let targets_json = serde_json::to_string(&request.targets)?;
        let (targets, content, ttl) = validate(request)?;
        let cost = match &targets {
            TargetSpec::Registrations(ids) => ids.len() as f64,
            _ => 1.0,
        };
        let limits = self.limiter.app_limits(&auth.app_id).await?;
        let buckets: Vec<_> = [
            crate::limits::Limiter::bucket(
                format!("notifier-targets:{}", auth.notifier.id),
                limits.notifier_notifications_per_second,
                cost,
            ),
            crate::limits::Limiter::bucket(
                format!("app-targets:{}", auth.app_id),
                limits.app_notifications_per_second,
                cost,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.limiter.enforce(&buckets, "notification").await?;
        let now = now_millis();
        let id = new_id("ntf");
        let (registrations, accepted, rejected) = match &targets {
            TargetSpec::Registrations(ids) => {
                let found = self.store.registration_states(ids).await?;
                let mut ok = Vec::with_capacity(ids.len());
                let mut rejected = Vec::new();
                for id in ids {
                    match found.iter().find(|(rid, _, _)| rid == id) {
                        Some((_, app, true)) if app == &auth.app_id => ok.push(id.clone()),
                        Some((_, app, _)) if app == &auth.app_id => rejected.push(Rejected {
                            registration: id.clone(),
                            reason: "invalid".into(),
                        }),
                        _ => rejected.push(Rejected {
                            registration: id.clone(),
                            reason: "unknown".into(),
                        }),
                    }
                }
                let count = ok.len() as i64;
                (ok, count, rejected)
            }
            other => {
                let count = self
                    .store
                    .count_targets(&auth.app_id, other.fanout_aliases())
                    .await?;
                (Vec::new(), count, Vec::new())
            }
        };
        let answer = Accepted {
            id: id.clone(),
            accepted,
            rejected,
        };
        let row = NotificationRow {
            id: id.clone(),
            app_id: auth.app_id.clone(),
            notifier_id: auth.notifier.id.clone(),
            idempotency_key: idempotency_key.map(str::to_owned),
            request_hash: request_hash.clone(),
            targets: targets_json,
            content: serde_json::to_string(&content)?,
            expires_at: now + (ttl as i64) * 1000,
            state: match targets {
                TargetSpec::Registrations(_) => NotificationPhase::Dispatching,
                _ => NotificationPhase::Expanding,
            }
            .as_str()
            .into(),
            created_at: now,
            response: Some(serde_json::to_string(&answer)?),
            expand_cursor: None,
            updated_at: now,
        };
        let redrive_at = now + self.settings.redrive_after.as_millis() as i64;
        let audit = crate::store::AuditEntry {
            seq: 0,
            at: now,
            actor: format!("notifier:{}", auth.notifier.id),
            action: "notification.create".into(),
            app_id: Some(auth.app_id.clone()),
            target: Some(id.clone()),
            source: auth.source.clone(),
            details: Some(serde_json::json!({"accepted": accepted}).to_string()),
        };
        // From here on the work must not depend on the caller staying: a client
        // that goes away (a timeout, a closed connection) drops this future, and
        // a commit whose task was never queued would wait for the sweep. The
        // write, its count and the enqueue run as their own task.
        let commit = tokio::spawn(commit(
            self.store.clone(),
            self.queue.clone(),
            row,
            registrations,
            redrive_at,
            audit,
        ));
        match commit.await {
            Ok(Ok(())) => Ok(answer),
            Ok(Err(StoreError::Conflict(_))) if idempotency_key.is_some() => {
                // A concurrent request with the same key won the race.
                let key = idempotency_key.unwrap_or_default();
                self.replay(auth, key, &request_hash)
                    .await?
                    .ok_or(AcceptError::InProgress)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(AcceptError::Stopped(e.to_string())),
        }
    }

    /// Backpressure: refuses a new notification (503 + Retry-After) while the
    /// dispatcher is behind — more deliveries ready to go than `max_queue_depth` —
    /// or while this app alone has more than that queued (its own deliveries
    /// waiting for a retry or an open circuit included: they are its backlog, and
    /// never another app's).
    fn shed_when_behind(&self, app_id: &str) -> Result<(), AcceptError> {
        let max_depth = self.settings.max_queue_depth;
        if max_depth == 0 {
            return Ok(());
        }
        let ready = self.depths.ready();
        let app_depth = self.depths.of_app(app_id);
        let detail = if app_depth > max_depth {
            format!(
            "this app has {app_depth} deliveries queued (more than max_queue_depth = {max_depth}); retry later"
        )
        } else if ready > max_depth {
            format!(
            "{ready} deliveries are waiting for the dispatcher (more than max_queue_depth = {max_depth}); retry later"
        )
        } else {
            return Ok(());
        };
        metrics::counter!(crate::telemetry::names::NOTIFICATIONS_SHED).increment(1);
        Err(AcceptError::Behind(detail))
    }

    async fn replay(
        &self,
        auth: &NotifierAuth,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<Accepted>, AcceptError> {
        let Some(previous) = self
            .store
            .find_idempotent(&auth.app_id, &auth.notifier.id, key)
            .await?
        else {
            return Ok(None);
        };
        if previous.request_hash != request_hash {
            return Err(AcceptError::KeyReused);
        }
        let answer = serde_json::from_str(previous.response.as_deref().unwrap_or_default())?;
        Ok(Some(answer))
    }
}

/// Stores a notification with its deliveries (and audit entry), counts it
/// and queues its tasks.
async fn commit(
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    row: NotificationRow,
    registrations: Vec<String>,
    redrive_at: i64,
    audit: crate::store::AuditEntry,
) -> Result<(), StoreError> {
    store
        .insert_notification(&row, &registrations, redrive_at, Some(&audit))
        .await?;
    metrics::counter!(crate::telemetry::names::NOTIFICATIONS_ACCEPTED, "app" => row.app_id.clone())
        .increment(1);
    let tasks: Vec<Task> = if row.is_expanding() {
        vec![Task::Expand {
            notification: row.id.clone(),
        }]
    } else {
        registrations
            .chunks(TASK_CHUNK)
            .map(|chunk| Task::Deliver {
                notification: row.id.clone(),
                registrations: chunk.to_vec(),
                due: Some(redrive_at),
            })
            .collect()
    };
    if !tasks.is_empty() {
        if let Err(e) = queue.push(tasks).await {
            // Durable already: the sweep re-drives it after `redrive_after`.
            tracing::warn!(error = %e, "queue unavailable; the sweep will re-drive this notification");
        }
    }
    Ok(())
}
