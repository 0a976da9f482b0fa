//! `/v1/apps/{app}/limits` (operator): an app's rate limits.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::apps::require_app;
use super::extract::{AdminAuth, ApiJson};
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::audit::{record, Actor};
use crate::ids::now_millis;
use crate::limits::AppLimits;

/// Body of `PUT /v1/apps/{app}/limits`: per second, 0 for no limit; an absent
/// field keeps the configured default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutLimits {
    pub notifier_requests_per_second: Option<f64>,
    pub notifier_notifications_per_second: Option<f64>,
    pub app_notifications_per_second: Option<f64>,
}

/// The limits in force for an app.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LimitsView {
    #[serde(flatten)]
    pub limits: AppLimits,
    /// False when these are the configured defaults.
    pub custom: bool,
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/apps/{app}/limits",
        get(get_limits).put(put_limits).delete(delete_limits),
    )
}

#[utoipa::path(get, path = "/v1/apps/{app}/limits", tag = "limits",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 200, body = LimitsView), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_limits(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<LimitsView>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let stored = state.store.get_app_limits(&app_id).await?;
    let limits = stored
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or(state.limiter.settings.defaults);
    Ok(Json(LimitsView {
        limits,
        custom: stored.is_some(),
    }))
}

#[utoipa::path(put, path = "/v1/apps/{app}/limits", tag = "limits",
    params(("app" = String, Path, description = "App id")), request_body = PutLimits,
    security(("admin_token" = [])),
    responses((status = 200, body = LimitsView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_limits(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<PutLimits>,
) -> Result<Json<LimitsView>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let defaults = state.limiter.settings.defaults;
    let pick = |name: &str, value: Option<f64>, default: f64| -> Result<f64, ApiError> {
        match value {
            None => Ok(default),
            Some(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Ok(v),
            Some(_) => Err(ApiError::invalid(format!(
                "`{name}` must be between 0 (no limit) and 1e9"
            ))),
        }
    };
    let limits = AppLimits {
        notifier_requests_per_second: pick(
            "notifier_requests_per_second",
            body.notifier_requests_per_second,
            defaults.notifier_requests_per_second,
        )?,
        notifier_notifications_per_second: pick(
            "notifier_notifications_per_second",
            body.notifier_notifications_per_second,
            defaults.notifier_notifications_per_second,
        )?,
        app_notifications_per_second: pick(
            "app_notifications_per_second",
            body.app_notifications_per_second,
            defaults.app_notifications_per_second,
        )?,
    };
    let json = serde_json::to_string(&limits).map_err(|e| ApiError::Internal(e.into()))?;
    state
        .store
        .set_app_limits(&app_id, Some(&json), now_millis())
        .await?;
    state.limiter.forget_app(&app_id);
    record(
        state.store.as_ref(),
        Actor::Operator,
        admin.source.as_deref(),
        "limits.put",
        Some(&app_id),
        None,
        serde_json::to_value(limits).ok(),
    )
    .await;
    Ok(Json(LimitsView {
        limits,
        custom: true,
    }))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/limits", tag = "limits",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn delete_limits(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    state
        .store
        .set_app_limits(&app_id, None, now_millis())
        .await?;
    state.limiter.forget_app(&app_id);
    record(
        state.store.as_ref(),
        Actor::Operator,
        admin.source.as_deref(),
        "limits.delete",
        Some(&app_id),
        None,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
