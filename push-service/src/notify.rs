//! The notify request: validation against provider limits, and durable acceptance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::notifier::NotifierAuth;
use crate::dispatch::Task;
use crate::error::ApiError;
use crate::ids::{new_id, now_millis};
use crate::store::{NotificationRow, StoreError};
use crate::AppState;

/// Largest payload (title, body, data and overrides, as JSON) accepted: the APNs and FCM limit.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Longest TTL: FCM's 28 days.
pub const MAX_TTL_SECONDS: u64 = 2_419_200;
/// TTL when the request gives none.
pub const DEFAULT_TTL_SECONDS: u64 = 86_400;
const MAX_REGISTRATION_TARGETS: usize = 1000;
const MAX_ALIAS_TARGETS: usize = 100;
/// APNs headers a request may set through `apns.headers`.
const APNS_HEADERS: &[&str] = &[
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-push-type",
];
const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
    "widgets",
    "controls",
];

/// Who receives a notification: exactly one of the three forms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Registration ids (at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registrations: Option<Vec<String>>,
    /// Identity aliases (at most 100); every active registration bound to one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// The whole app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// Visible part of a notification.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub title: Option<String>,
    pub body: Option<String>,
}

/// Raw APNs additions: allowed headers and payload keys merged into the generated payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApnsOverride {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
}

/// Delivery priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    High,
    Normal,
}

/// Body of `POST /v1/apps/{app}/notifications`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    pub targets: Targets,
    pub notification: Option<Alert>,
    /// String key/value pairs delivered to the app.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    pub priority: Option<Priority>,
    /// Seconds the notification stays deliverable (default 86400, at most 2419200).
    pub ttl_seconds: Option<u64>,
    /// Replaces an undelivered notification with the same key (APNs collapse id, FCM collapse key).
    pub collapse_key: Option<String>,
    /// APNs push type; `alert` when there is a title or body, else `background`.
    pub push_type: Option<String>,
    pub apns: Option<ApnsOverride>,
    /// Raw FCM `message` fields (e.g. `{"android": {...}}`) merged into the message.
    #[schema(value_type = Option<Object>)]
    pub fcm: Option<serde_json::Value>,
}

/// What providers deliver; stored with the notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    pub push_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// The target form after validation.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    Registrations(Vec<String>),
    Aliases(Vec<String>),
    All,
}

impl TargetSpec {
    /// Aliases of an alias fan-out, `None` for the whole app.
    pub fn fanout_aliases(&self) -> Option<&[String]> {
        match self {
            TargetSpec::Aliases(a) => Some(a),
            _ => None,
        }
    }
}

/// Parses a stored target spec.
pub fn parse_targets(json: &str) -> Result<TargetSpec, String> {
    let targets: Targets = serde_json::from_str(json).map_err(|e| e.to_string())?;
    check_targets(targets)
}

fn check_targets(targets: Targets) -> Result<TargetSpec, String> {
    match (targets.registrations, targets.aliases, targets.all) {
        (Some(mut ids), None, None) => {
            if ids.is_empty() || ids.len() > MAX_REGISTRATION_TARGETS {
                return Err(format!(
                    "`targets.registrations`: 1 to {MAX_REGISTRATION_TARGETS} ids"
                ));
            }
            if ids.iter().any(|id| id.is_empty() || id.len() > 128) {
                return Err("`targets.registrations`: ids are 1 to 128 characters".into());
            }
            ids.sort();
            ids.dedup();
            Ok(TargetSpec::Registrations(ids))
        }
        (None, Some(aliases), None) => {
            if aliases.is_empty() || aliases.len() > MAX_ALIAS_TARGETS {
                return Err(format!(
                    "`targets.aliases`: 1 to {MAX_ALIAS_TARGETS} aliases"
                ));
            }
            let aliases = crate::registrations::validate_aliases_unbounded(aliases)
                .map_err(|e| format!("`targets.{}", e.trim_start_matches('`')))?;
            Ok(TargetSpec::Aliases(aliases))
        }
        (None, None, Some(true)) => Ok(TargetSpec::All),
        (None, None, Some(false)) => Err("`targets.all` must be true when given".into()),
        _ => Err("`targets`: give exactly one of `registrations`, `aliases` and `all`".into()),
    }
}

fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Checks a request against the API's and the providers' rules; the error names the field.
pub fn validate(request: NotifyRequest) -> Result<(TargetSpec, Content, u64), String> {
    let targets = check_targets(request.targets)?;
    let alert = request.notification.unwrap_or_default();
    for (name, value, max) in [("title", &alert.title, 256), ("body", &alert.body, 2048)] {
        if let Some(v) = value {
            if v.chars().count() > max {
                return Err(format!("`notification.{name}`: at most {max} characters"));
            }
        }
    }
    for key in request.data.keys() {
        let lower = key.to_ascii_lowercase();
        if key.is_empty()
            || key.len() > 256
            || lower == "from"
            || lower == "message_type"
            || lower.starts_with("google")
            || lower.starts_with("gcm")
        {
            return Err(format!(
                "`data`: key `{key}` is empty, too long, or reserved by FCM (from, message_type, google*, gcm*)"
            ));
        }
    }
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl > MAX_TTL_SECONDS {
        return Err(format!(
            "`ttl_seconds`: at most {MAX_TTL_SECONDS} (28 days)"
        ));
    }
    if let Some(key) = &request.collapse_key {
        if key.is_empty() || key.len() > 64 || !header_safe(key) {
            return Err("`collapse_key`: 1 to 64 printable ASCII bytes".into());
        }
    }
    let push_type = match request.push_type {
        Some(t) if PUSH_TYPES.contains(&t.as_str()) => t,
        Some(t) => {
            return Err(format!(
                "`push_type`: `{t}` is not one of {}",
                PUSH_TYPES.join(", ")
            ))
        }
        None if alert.title.is_some() || alert.body.is_some() => "alert".into(),
        None => "background".into(),
    };
    if let Some(apns) = &request.apns {
        for (name, value) in &apns.headers {
            if !APNS_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "`apns.headers`: `{name}` cannot be set (allowed: {})",
                    APNS_HEADERS.join(", ")
                ));
            }
            if !header_safe(value) {
                return Err(format!(
                    "`apns.headers.{name}`: printable ASCII, at most 256 bytes"
                ));
            }
        }
        if let Some(payload) = &apns.payload {
            if !payload.is_object() {
                return Err("`apns.payload` must be a JSON object".into());
            }
        }
    }
    if let Some(fcm) = &request.fcm {
        if !fcm.is_object() {
            return Err("`fcm` must be a JSON object".into());
        }
    }
    let content = Content {
        title: alert.title,
        body: alert.body,
        data: request.data,
        priority: request.priority.unwrap_or_default(),
        collapse_key: request.collapse_key,
        push_type,
        apns: request.apns,
        fcm: request.fcm,
    };
    let size = serde_json::to_vec(&content)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "the notification is {size} bytes as JSON; providers accept at most {MAX_PAYLOAD_BYTES}"
        ));
    }
    Ok((targets, content, ttl))
}

/// Deliveries per queue task.
pub const TASK_CHUNK: usize = 100;

/// Validates, stores (idempotently) and enqueues a notification; answers only once it is durable.
pub async fn accept(
    state: &AppState,
    auth: &NotifierAuth,
    idempotency_key: Option<&str>,
    body: serde_json::Value,
) -> Result<Accepted, ApiError> {
    let request_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.into()))?,
    ));
    if let Some(key) = idempotency_key {
        if let Some(previous) = replay(state, auth, key, &request_hash).await? {
            return Ok(previous);
        }
    }
    let request: NotifyRequest =
        serde_json::from_value(body).map_err(|e| ApiError::invalid(e.to_string()))?;
    let depth = state.queue_depth.load(std::sync::atomic::Ordering::Relaxed);
    let max_depth = state.config.max_queue_depth;
    if max_depth > 0 && depth > max_depth {
        metrics::counter!(crate::telemetry::names::NOTIFICATIONS_SHED).increment(1);
        return Err(ApiError::Unavailable(format!(
            "{depth} deliveries are queued (more than max_queue_depth = {max_depth}); retry later"
        )));
    }
    let targets_json =
        serde_json::to_string(&request.targets).map_err(|e| ApiError::Internal(e.into()))?;
    let (targets, content, ttl) = validate(request).map_err(ApiError::invalid)?;
    let cost = match &targets {
        TargetSpec::Registrations(ids) => ids.len() as f64,
        _ => 1.0,
    };
    let limits = state.limiter.app_limits(&auth.app_id).await?;
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
    state.limiter.enforce(&buckets, "notification").await?;
    let now = now_millis();
    let id = new_id("ntf");
    let (registrations, accepted, rejected) = match &targets {
        TargetSpec::Registrations(ids) => {
            let found = state.store.registration_states(ids).await?;
            let mut ok = Vec::with_capacity(ids.len());
            let mut rejected = Vec::new();
            for id in ids {
                match found.iter().find(|(rid, _, _)| rid == id) {
                    Some((_, app, status)) if app == &auth.app_id && status == "active" => {
                        ok.push(id.clone())
                    }
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
            let count = state
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
        content: serde_json::to_string(&content).map_err(|e| ApiError::Internal(e.into()))?,
        expires_at: now + (ttl as i64) * 1000,
        state: match targets {
            TargetSpec::Registrations(_) => "dispatching".into(),
            _ => "expanding".into(),
        },
        created_at: now,
        response: Some(serde_json::to_string(&answer).map_err(|e| ApiError::Internal(e.into()))?),
        expand_cursor: None,
        updated_at: now,
    };
    let redrive_at = now + state.config.redrive_after.as_millis() as i64;
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
    match state
        .store
        .insert_notification(&row, &registrations, redrive_at, Some(&audit))
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) if idempotency_key.is_some() => {
            // A concurrent request with the same key won the race.
            let key = idempotency_key.unwrap_or_default();
            return replay(state, auth, key, &request_hash)
                .await?
                .ok_or_else(|| {
                    ApiError::Conflict("a request with this Idempotency-Key is in progress".into())
                });
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!(crate::telemetry::names::NOTIFICATIONS_ACCEPTED, "app" => auth.app_id.clone())
        .increment(1);
    let tasks: Vec<Task> = if row.state == "expanding" {
        vec![Task::Expand { notification: id }]
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
        if let Err(e) = state.queue.push(tasks).await {
            // Durable already: the sweep re-drives it after `redrive_after`.
            tracing::warn!(error = %e, "queue unavailable; the sweep will re-drive this notification");
        }
    }
    Ok(answer)
}

async fn replay(
    state: &AppState,
    auth: &NotifierAuth,
    key: &str,
    request_hash: &str,
) -> Result<Option<Accepted>, ApiError> {
    let Some(previous) = state
        .store
        .find_idempotent(&auth.app_id, &auth.notifier.id, key)
        .await?
    else {
        return Ok(None);
    };
    if previous.request_hash != request_hash {
        return Err(ApiError::IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request body".into(),
        ));
    }
    let answer = previous
        .response
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored response unreadable")))?;
    Ok(Some(answer))
}
