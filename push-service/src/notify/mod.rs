//! The notify request: validation against provider limits, and durable acceptance.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dispatch::{Queue, QueueDepths};
use crate::limits::{LimitError, Limiter};
use crate::store::{Store, StoreError};

mod accept;
mod commit;
mod content;
mod prepare;
#[cfg(test)]
mod tests;
mod validate;
use crate::notification::{Alert, ApnsOverride, Content, Priority, Targets};
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
    /// Tasks waiting for this node's own workers past which acceptance waits
    /// before answering (0: never waits; a node without workers).
    pub handoff_limit: usize,
    /// Largest sealed content of one notification.
    pub max_content_bytes: usize,
}

/// Acceptance of notifications: validated, limited, made durable, queued.
/// Built once from the configuration; cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    pub store: Arc<dyn Store>,
    /// The shared queue: fan-outs to expand go there, for any node.
    pub queue: Arc<dyn Queue>,
    /// Where the deliveries it accepted go: this node's own dispatcher when it
    /// has one (the local fast path), else the shared queue.
    pub handoff: Arc<dyn Queue>,
    pub limiter: Limiter,
    /// The queue's depths as the dispatcher last counted them (backpressure).
    pub depths: QueueDepths,
    pub settings: AcceptSettings,
    /// Seals inbox items at rest.
    pub sealer: crate::crypto::Sealer,
}

/// Largest payload (title, body, data and overrides, as JSON) accepted: the APNs and FCM limit.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
pub use crate::notification::MAX_TTL_SECONDS;
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
    /// Content for the targets' inboxes, sealed to each registration's
    /// encryption key: plaintext the service seals at acceptance (never
    /// stored in clear), or the notifier's own JWE per registration. Only
    /// with `targets.registrations` (at most 64). A target without an
    /// encryption key is rejected (`no_encryption_key`).
    pub content: Option<crate::inbox::ContentRequest>,
}

/// A registration refused at acceptance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rejected {
    pub registration: String,
    /// `unknown` (no such registration in this app), `invalid`, or
    /// `no_encryption_key` (content for a registration without an encryption key).
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

/// Most notifications in one batch request.
pub const MAX_BATCH: usize = 500;

/// One notification as submitted.
#[derive(Debug, Clone)]
pub enum Submission {
    /// Its JSON body and, optionally, the key that makes a retry of it safe:
    /// a keyed request is hashed from this JSON (key order does not matter),
    /// and a body that does not read as a notify request is answered `422`.
    Json {
        idempotency_key: Option<String>,
        body: serde_json::Value,
    },
    /// A request without a key, read straight from its bytes (the common
    /// case: no JSON tree built, walked and dropped on the way).
    Parsed(Box<NotifyRequest>),
}
