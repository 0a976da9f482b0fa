//! `/v1/apps/{app}/notifications`: notify (auth server) and read per-target state.

use crate::delivery::DeliveryState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{
    idempotency_key, notify_body_limit, ApiQuery, NotifySubmission, Reading, StraightOr,
};
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::auth::notifier::NotifierAuth;
use crate::ids::rfc3339;
use crate::notification::{parse_targets, TargetSpec};
use crate::notify::{Accepted, NotifyRequest, Submission, MAX_BATCH};
use axum::extract::DefaultBodyLimit;

pub fn router(config: &crate::Config) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/apps/{app}/notifications",
            post(notify).layer(DefaultBodyLimit::max(notify_body_limit(config))),
        )
        .route("/v1/apps/{app}/notifications/batch", post(notify_batch))
        .route("/v1/apps/{app}/notifications/{id}", get(status))
}

/// Deliveries by state.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub expired: i64,
    pub invalid: i64,
}

/// One target's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetState {
    pub registration: String,
    /// `queued`, `sent`, `failed`, `expired` or `invalid`.
    pub state: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub updated_at: String,
}

/// Body of `GET /v1/apps/{app}/notifications/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationStatus {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    /// False while a fan-out is still being expanded.
    pub expanded: bool,
    pub counts: Counts,
    /// A page of targets (for alias and whole-app sends, only those not sent:
    /// their successes are counted, not listed).
    pub targets: Vec<TargetState>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
    /// A notification with content: its inbox item per registration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbox: Vec<InboxStatus>,
}

/// One registration's inbox item, as the notifier sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InboxStatus {
    pub registration: String,
    /// `pending`, `fetched`, `acked` or `expired` (the content went with the TTL).
    pub state: String,
    /// The provider took the notification that names the item (or the
    /// device's stream received it).
    pub delivered: bool,
    /// Bytes of the sealed content.
    pub size: i64,
    pub fetched_at: Option<String>,
    pub acked_at: Option<String>,
}

/// Paging of targets.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetPage {
    /// Return targets whose registration id sorts after this one.
    pub after: Option<String>,
    /// 1 to 500, default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A stored state as an auth server sees it: `held` (on the direct channel,
/// waiting for the device) is reported as queued. An unknown name (a newer
/// node's) is shown as it is stored.
fn public_state(state: &str) -> &str {
    DeliveryState::parse(state).map_or(state, |s| s.public().as_str())
}

#[utoipa::path(post, path = "/v1/apps/{app}/notifications", tag = "notifications",
    params(("app" = String, Path, description = "App id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer the first response")),
    request_body = NotifyRequest,
    security(("notifier_jwt" = ["notify"])),
    responses((status = 202, body = Accepted), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
#[tracing::instrument(skip_all, fields(app = %auth.app_id, notifier = %auth.notifier.id))]
async fn notify(
    State(state): State<AppState>,
    auth: NotifierAuth,
    NotifySubmission(submission): NotifySubmission,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    auth.require("notify")?;
    let accepted = state.acceptor.submit(&auth, submission).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Body of `POST /v1/apps/{app}/notifications/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 500 notifications, each a notify request body with an optional
    /// `idempotency_key` (1 to 255 visible ASCII characters) of its own.
    #[schema(value_type = Vec<BatchNotification>)]
    pub notifications: Vec<serde_json::Value>,
}

/// A batch whose items all read as notify requests, none with a key of its
/// own: read straight from the body (no JSON tree per item). Any other batch
/// is read as a [`BatchRequest`], item by item, with the answers it always had.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainBatch {
    notifications: Vec<NotifyRequest>,
}

/// One notification of a batch, as the document describes it: the fields of
/// a notify request (read by `NotifyRequest` itself, so the rules are the same)
/// and its own idempotency key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchNotification {
    /// Makes a retry of this notification safe, as the `Idempotency-Key` header does.
    pub idempotency_key: Option<String>,
    pub targets: crate::notification::Targets,
    pub notification: Option<crate::notification::Alert>,
    #[serde(default)]
    pub data: std::collections::BTreeMap<String, String>,
    pub priority: Option<crate::notification::Priority>,
    pub ttl_seconds: Option<u64>,
    pub collapse_key: Option<String>,
    pub push_type: Option<String>,
    pub apns: Option<crate::notification::ApnsOverride>,
    #[schema(value_type = Option<Object>)]
    pub fcm: Option<serde_json::Value>,
}

/// One notification's answer in a batch: `notification` when it was accepted
/// (`status` 202), `problem` when it was not.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    /// The status this notification would have had on its own request.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Accepted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// The answer to a batch: one item per notification, in the request's order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswer {
    pub results: Vec<BatchItem>,
}

#[utoipa::path(post, path = "/v1/apps/{app}/notifications/batch", tag = "notifications",
    params(("app" = String, Path, description = "App id")),
    request_body = BatchRequest,
    security(("notifier_jwt" = ["notify"])),
    responses((status = 200, body = BatchAnswer, description = "Each notification's own answer, in order"),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
#[tracing::instrument(skip_all, fields(app = %auth.app_id, notifier = %auth.notifier.id))]
async fn notify_batch(
    State(state): State<AppState>,
    auth: NotifierAuth,
    StraightOr(body): StraightOr<PlainBatch, BatchRequest>,
) -> Result<Json<BatchAnswer>, ApiError> {
    auth.require("notify")?;
    let count = match &body {
        Reading::Straight(plain) => plain.notifications.len(),
        Reading::Json(body) => body.notifications.len(),
    };
    if !(1..=MAX_BATCH).contains(&count) {
        return Err(ApiError::invalid(format!(
            "`notifications` must hold 1 to {MAX_BATCH} notifications (got {count})"
        )));
    }
    let submissions = match body {
        Reading::Straight(plain) => plain
            .notifications
            .into_iter()
            .map(|request| Submission::Parsed(Box::new(request)))
            .collect(),
        Reading::Json(body) => batch_items(body)?,
    };
    let answers = state.acceptor.accept_batch(&auth, submissions).await?;
    let results = answers
        .into_iter()
        .enumerate()
        .map(|(i, answer)| match answer {
            Ok(accepted) => BatchItem {
                status: StatusCode::ACCEPTED.as_u16(),
                notification: Some(accepted),
                problem: None,
            },
            Err(e) => {
                let mut problem = ApiError::from(e).problem();
                if let Some(detail) = problem.detail.as_mut() {
                    *detail = format!("notifications[{i}]: {detail}");
                }
                BatchItem {
                    status: problem.status,
                    notification: None,
                    problem: Some(problem),
                }
            }
        })
        .collect();
    Ok(Json(BatchAnswer { results }))
}

/// A batch's items read one by one: keys and shapes are checked first, so a
/// bad key or an item that is not a notify request refuses the batch before
/// anything is stored. What only the provider rules refuse is answered per
/// item.
fn batch_items(body: BatchRequest) -> Result<Vec<Submission>, ApiError> {
    let mut submissions = Vec::with_capacity(body.notifications.len());
    for (i, mut item) in body.notifications.into_iter().enumerate() {
        let key = match item.as_object_mut().map(|o| o.remove("idempotency_key")) {
            None => {
                return Err(ApiError::invalid(format!(
                    "`notifications[{i}]` must be an object"
                )))
            }
            Some(None) => None,
            Some(Some(value)) => Some(
                value
                    .as_str()
                    .and_then(idempotency_key)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "`notifications[{i}].idempotency_key`: 1 to 255 visible ASCII characters"
                        ))
                    })?,
            ),
        };
        // What does not read as a notify request breaks the document: the
        // batch is refused whole, naming the item, as a single request would be.
        let request = match NotifyRequest::deserialize(&item) {
            Ok(request) => request,
            Err(e) => return Err(ApiError::invalid(format!("`notifications[{i}]`: {e}"))),
        };
        // A keyed item is hashed from its JSON; the others go as read.
        submissions.push(match key {
            None => Submission::Parsed(Box::new(request)),
            Some(key) => Submission::Json {
                idempotency_key: Some(key),
                body: item,
            },
        });
    }
    Ok(submissions)
}

#[utoipa::path(get, path = "/v1/apps/{app}/notifications/{id}", tag = "notifications",
    params(("app" = String, Path, description = "App id"), ("id" = String, Path, description = "Notification id"), TargetPage),
    security(("notifier_jwt" = ["notify"])),
    responses((status = 200, body = NotificationStatus), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn status(
    State(state): State<AppState>,
    auth: NotifierAuth,
    Path((_, id)): Path<(String, String)>,
    ApiQuery(page): ApiQuery<TargetPage>,
) -> Result<Json<NotificationStatus>, ApiError> {
    auth.require("notify")?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 500"));
    }
    let notification = state
        .store
        .get_notification(&id)
        .await?
        .filter(|n| n.app_id == auth.app_id)
        .ok_or_else(|| {
            ApiError::not_found(format!("notification `{id}` does not exist in this app"))
        })?;
    let fan_out = !matches!(
        parse_targets(&notification.targets),
        Ok(TargetSpec::Registrations(_))
    );
    // Counts and the page from one snapshot, so they agree.
    let (stored_counts, rows) = state
        .store
        .delivery_status(&id, page.after.as_deref().unwrap_or(""), limit, fan_out)
        .await?;
    let mut counts = Counts::default();
    for (stored, n) in stored_counts {
        match stored.public() {
            DeliveryState::Queued | DeliveryState::Held => counts.queued += n,
            DeliveryState::Sent => counts.sent += n,
            DeliveryState::Failed => counts.failed += n,
            DeliveryState::Expired => counts.expired += n,
            DeliveryState::Invalid => counts.invalid += n,
        }
    }
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.registration_id.clone()))
        .flatten();
    let targets = rows
        .into_iter()
        .map(|row| TargetState {
            state: public_state(&row.state).to_owned(),
            reason: if DeliveryState::parse(&row.state) == Some(DeliveryState::Held) {
                Some("held on the direct channel until the device connects".into())
            } else {
                row.reason
            },
            registration: row.registration_id,
            attempts: row.attempts,
            updated_at: rfc3339(row.updated_at),
        })
        .collect();
    let entries = state.store.inbox_of_notification(&id).await?;
    let mut inbox = Vec::with_capacity(entries.len());
    if !entries.is_empty() {
        let sent: std::collections::HashSet<String> = state
            .store
            .delivery_page(&id, "", crate::inbox::MAX_CONTENT_TARGETS as i64, false)
            .await?
            .into_iter()
            .filter(|d| DeliveryState::parse(&d.state) == Some(DeliveryState::Sent))
            .map(|d| d.registration_id)
            .collect();
        for entry in entries {
            inbox.push(InboxStatus {
                state: crate::inbox::item_state(&entry, crate::ids::now_millis()).to_owned(),
                delivered: sent.contains(&entry.registration_id),
                size: entry.size,
                fetched_at: entry.fetched_at.map(rfc3339),
                acked_at: entry.acked_at.map(rfc3339),
                registration: entry.registration_id,
            });
        }
    }
    let expanded = !notification.is_expanding();
    Ok(Json(NotificationStatus {
        id: notification.id,
        created_at: rfc3339(notification.created_at),
        expires_at: rfc3339(notification.expires_at),
        expanded,
        counts,
        targets,
        next,
        inbox,
    }))
}
