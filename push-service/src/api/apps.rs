//! `/v1/apps`: create, list, read and delete apps (operator).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AdminAuth, ApiJson, ApiQuery};
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::ids::{new_id, now_millis, rfc3339};
use crate::store::{App, Store};

/// Body of `POST /v1/apps`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// Display name, 1 to 200 characters.
    pub name: String,
}

/// An app as the API shows it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<App> for AppView {
    fn from(app: App) -> Self {
        AppView {
            id: app.id,
            name: app.name,
            created_at: rfc3339(app.created_at),
        }
    }
}

/// A page of apps; pass `next` as `after` to get the following page.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AppPage {
    pub items: Vec<AppView>,
    pub next: Option<String>,
}

/// Keyset pagination parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Return items whose id sorts after this one.
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", get(list_apps).post(create_app))
        .route("/v1/apps/{app}", get(get_app).delete(delete_app))
}

/// Loads an app or answers 404; every app-scoped operator endpoint starts here.
pub async fn require_app(store: &dyn Store, app_id: &str) -> Result<App, ApiError> {
    store
        .get_app(app_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("app `{app_id}` does not exist")))
}

#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateApp,
    security(("admin_token" = [])),
    responses((status = 201, body = AppView), (status = 401, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn create_app(
    admin: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("`name` must be 1 to 200 characters"));
    }
    let app = App {
        id: new_id("app"),
        name: name.to_owned(),
        created_at: now_millis(),
    };
    state.store.create_app(&app).await?;
    tracing::info!(app = %app.id, "app created");
    crate::audit::record(
        state.store.as_ref(),
        crate::audit::Actor::Operator,
        admin.source.as_deref(),
        "app.create",
        Some(&app.id),
        Some(&app.id),
        Some(serde_json::json!({"name": app.name})),
    )
    .await;
    Ok((StatusCode::CREATED, Json(app.into())))
}

#[utoipa::path(get, path = "/v1/apps", tag = "apps", params(PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = AppPage), (status = 401, body = Problem)))]
async fn list_apps(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<AppPage>, ApiError> {
    let limit = page.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 500"));
    }
    let apps = state.store.list_apps(page.after.as_deref(), limit).await?;
    let next = (apps.len() as i64 == limit)
        .then(|| apps.last().map(|a| a.id.clone()))
        .flatten();
    Ok(Json(AppPage {
        items: apps.into_iter().map(AppView::from).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 200, body = AppView), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_app(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    Ok(Json(
        require_app(state.store.as_ref(), &app_id).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/v1/apps/{app}", tag = "apps",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(app = %app_id))]
async fn delete_app(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = state.store.delete_app(&app_id).await?;
    state.notifiers.notifiers.forget_app(&app_id);
    state.limiter.forget_app(&app_id);
    if deleted {
        tracing::info!("app deleted");
        crate::audit::record(
            state.store.as_ref(),
            crate::audit::Actor::Operator,
            admin.source.as_deref(),
            "app.delete",
            Some(&app_id),
            Some(&app_id),
            None,
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "app `{app_id}` does not exist"
        )))
    }
}
