//! A device's inbox (DPoP): the pending items of its registration — content
//! sealed to its encryption key — listed, fetched and acknowledged.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiQuery;
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::auth::dpop::DeviceProof;
use crate::ids::{now_millis, rfc3339};
use crate::inbox::{at_rest_aad, item_state};
use crate::store::InboxEntry;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/registrations/{id}/inbox", get(list))
        .route(
            "/v1/registrations/{id}/inbox/{item}",
            get(fetch).delete(delete),
        )
        .route("/v1/registrations/{id}/inbox/{item}/ack", post(ack))
}

/// One item of an inbox, without its content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InboxItemView {
    /// The item's id: its notification's id.
    pub id: String,
    pub notification: String,
    pub created_at: String,
    pub expires_at: String,
    /// Bytes of the JWE.
    pub size: i64,
    /// `pending` (never fetched) or `fetched`.
    pub state: String,
    pub fetched_at: Option<String>,
}

impl From<InboxEntry> for InboxItemView {
    fn from(entry: InboxEntry) -> Self {
        InboxItemView {
            state: item_state(&entry, now_millis()).to_owned(),
            id: entry.notification_id.clone(),
            notification: entry.notification_id,
            created_at: rfc3339(entry.created_at),
            expires_at: rfc3339(entry.expires_at),
            size: entry.size,
            fetched_at: entry.fetched_at.map(rfc3339),
        }
    }
}

/// An item with its content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InboxContentView {
    #[serde(flatten)]
    pub item: InboxItemView,
    /// The content: a compact JWE sealed to the registration's encryption key.
    pub jwe: String,
}

/// A page of an inbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InboxPage {
    pub items: Vec<InboxItemView>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

/// Paging of an inbox.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Items whose id sorts after this one.
    pub after: Option<String>,
    /// 1 to 100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The registration, when the proving key owns it. Another key's
/// registration is answered like a missing one: an inbox does not tell
/// which registrations exist.
async fn owned(state: &AppState, id: &str, proof: &DeviceProof) -> Result<(), ApiError> {
    match state.store.get_registration(id).await? {
        Some(r) if r.key_thumbprint == proof.thumbprint => Ok(()),
        _ => Err(ApiError::not_found(format!(
            "registration `{id}` does not exist or is bound to another device key"
        ))),
    }
}

fn gone(item: &str) -> ApiError {
    ApiError::not_found(format!(
        "item `{item}` is not in this inbox (never sent here, acknowledged, or expired)"
    ))
}

#[utoipa::path(get, path = "/v1/registrations/{id}/inbox", tag = "inbox",
    params(("id" = String, Path, description = "Registration id"), InboxQuery),
    security(("dpop" = [])),
    responses((status = 200, body = InboxPage), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    proof: DeviceProof,
    ApiQuery(query): ApiQuery<InboxQuery>,
) -> Result<Json<InboxPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 100"));
    }
    owned(&state, &id, &proof).await?;
    let entries = state
        .store
        .inbox(&id, now_millis(), query.after.as_deref(), limit)
        .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.notification_id.clone()))
        .flatten();
    Ok(Json(InboxPage {
        items: entries.into_iter().map(InboxItemView::from).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/v1/registrations/{id}/inbox/{item}", tag = "inbox",
    params(("id" = String, Path, description = "Registration id"),
        ("item" = String, Path, description = "Item id (the notification's)")),
    security(("dpop" = [])),
    responses((status = 200, body = InboxContentView), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
async fn fetch(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
    proof: DeviceProof,
) -> Result<Json<InboxContentView>, ApiError> {
    owned(&state, &id, &proof).await?;
    let found = state
        .store
        .fetch_inbox_item(&id, &item, now_millis())
        .await?
        .ok_or_else(|| gone(&item))?;
    let jwe = state
        .sealer
        .open(&found.content, &at_rest_aad(&id, &item))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "inbox item {id}/{item} does not open with the master keys this node has"
            ))
        })?;
    Ok(Json(InboxContentView {
        item: found.entry.into(),
        jwe,
    }))
}

#[utoipa::path(post, path = "/v1/registrations/{id}/inbox/{item}/ack", tag = "inbox",
    params(("id" = String, Path, description = "Registration id"),
        ("item" = String, Path, description = "Item id (the notification's)")),
    security(("dpop" = [])),
    responses((status = 204, description = "Acknowledged: the content is gone"),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn ack(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
    proof: DeviceProof,
) -> Result<StatusCode, ApiError> {
    owned(&state, &id, &proof).await?;
    if state.store.ack_inbox_item(&id, &item, now_millis()).await? {
        tracing::info!(registration = %id, item = %item, "inbox item acknowledged");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(gone(&item))
    }
}

#[utoipa::path(delete, path = "/v1/registrations/{id}/inbox/{item}", tag = "inbox",
    params(("id" = String, Path, description = "Registration id"),
        ("item" = String, Path, description = "Item id (the notification's)")),
    security(("dpop" = [])),
    responses((status = 204, description = "Acknowledged: the content is gone"),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn delete(
    state: State<AppState>,
    path: Path<(String, String)>,
    proof: DeviceProof,
) -> Result<StatusCode, ApiError> {
    ack(state, path, proof).await
}
