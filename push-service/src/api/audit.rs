//! `GET /v1/audit` (operator): the audit log, oldest first, keyset-paginated.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AdminAuth, ApiQuery};
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::ids::rfc3339;
use crate::store::AuditFilter;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries of this app.
    pub app: Option<String>,
    /// Only entries of this actor (`operator` or `notifier:<id>`).
    pub actor: Option<String>,
    /// Only this action (e.g. `credential.put`).
    pub action: Option<String>,
    /// Entries after this cursor (`next` of the previous page).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Cursor of the next page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list_audit))
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("admin_token" = [])),
    responses((status = 200, body = AuditPage), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn list_audit(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 500"));
    }
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid("`after` must not be negative"));
    }
    let entries = state
        .store
        .list_audit(&AuditFilter {
            after,
            app_id: query.app,
            actor: query.actor,
            action: query.action,
            limit,
        })
        .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryView {
                seq: e.seq,
                at: rfc3339(e.at),
                actor: e.actor,
                action: e.action,
                app_id: e.app_id,
                target: e.target,
                source: e.source,
                details: e.details.and_then(|d| serde_json::from_str(&d).ok()),
            })
            .collect(),
        next,
    }))
}
