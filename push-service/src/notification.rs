//! A notification as it is stored and delivered: its content, its targets, and
//! the zero-TTL rule. Acceptance (`notify/`) makes them; the dispatcher and the
//! providers read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest TTL a notification may have: FCM's 28 days. Retention counts on
/// it: a day of notifications is past every TTL 28 days after it ended.
pub const MAX_TTL_SECONDS: u64 = 2_419_200;

/// A target spec that names no valid set of targets: what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTargets(pub String);

impl From<String> for InvalidTargets {
    fn from(message: String) -> Self {
        InvalidTargets(message)
    }
}

impl From<&str> for InvalidTargets {
    fn from(message: &str) -> Self {
        InvalidTargets(message.to_owned())
    }
}

/// A zero TTL, stored as expiring at creation: "now or never" — one attempt at
/// once (APNs `apns-expiration: 0`, FCM `ttl: "0s"`), never retried.
pub fn now_or_never(created_at: i64, expires_at: i64) -> bool {
    expires_at <= created_at
}
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
    /// Only `apns-priority` (`1`, `5` or `10`; not `10` for a background push),
    /// `apns-expiration` (seconds since the epoch as digits, `0` for now or never),
    /// `apns-collapse-id` (at most 64 bytes) and `apns-push-type` (one of the push
    /// types, equal to `push_type` when both are given).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Merged into the generated payload; `aps`, when given, is an object.
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
    /// The notification has sealed content in its targets' inboxes: provider
    /// payloads name it (and carry the JWE when it fits).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inbox: bool,
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

const MAX_REGISTRATION_TARGETS: usize = 1000;
const MAX_ALIAS_TARGETS: usize = 100;
/// Parses a stored target spec.
pub fn parse_targets(json: &str) -> Result<TargetSpec, InvalidTargets> {
    let targets: Targets = serde_json::from_str(json).map_err(|e| e.to_string())?;
    check_targets(targets)
}

pub(crate) fn check_targets(targets: Targets) -> Result<TargetSpec, InvalidTargets> {
    match (targets.registrations, targets.aliases, targets.all) {
        (Some(mut ids), None, None) => {
            if ids.is_empty() || ids.len() > MAX_REGISTRATION_TARGETS {
                return Err(format!(
                    "`targets.registrations`: 1 to {MAX_REGISTRATION_TARGETS} ids"
                )
                .into());
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
                return Err(format!("`targets.aliases`: 1 to {MAX_ALIAS_TARGETS} aliases").into());
            }
            let aliases =
                crate::registrations::validate_aliases_unbounded("targets.aliases", aliases)
                    .map_err(|e| InvalidTargets(e.0))?;
            Ok(TargetSpec::Aliases(aliases))
        }
        (None, None, Some(true)) => Ok(TargetSpec::All),
        (None, None, Some(false)) => Err("`targets.all` must be true when given".into()),
        _ => Err("`targets`: give exactly one of `registrations`, `aliases` and `all`".into()),
    }
}
