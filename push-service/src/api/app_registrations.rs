//! Auth-server side of registrations (notifier JWT): status, server-started delete, aliases.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::auth::notifier::NotifierAuth;
use crate::registrations::{validate_aliases, RegistrationView};
use crate::store::Registration;

/// Body of `PUT /v1/apps/{app}/registrations/{id}/aliases`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAliases {
    /// Identity labels chosen by the auth server, e.g. `user:42`. Replaces the set.
    pub aliases: Vec<String>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/apps/{app}/registrations/{id}",
            get(get_registration).delete(delete_registration),
        )
        .route(
            "/v1/apps/{app}/registrations/{id}/aliases",
            put(put_aliases),
        )
}

/// A registration of the notifier's own app; any other is "not found".
async fn in_app(state: &AppState, auth: &NotifierAuth, id: &str) -> Result<Registration, ApiError> {
    state
        .store
        .get_registration(id)
        .await?
        .filter(|r| r.app_id == auth.app_id)
        .ok_or_else(|| {
            ApiError::not_found(format!("registration `{id}` does not exist in this app"))
        })
}

#[utoipa::path(get, path = "/v1/apps/{app}/registrations/{id}", tag = "registrations",
    params(("app" = String, Path, description = "App id"), ("id" = String, Path, description = "Registration id")),
    security(("notifier_jwt" = ["registrations:read"])),
    responses((status = 200, body = RegistrationView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_registration(
    State(state): State<AppState>,
    auth: NotifierAuth,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<RegistrationView>, ApiError> {
    auth.require("registrations:read")?;
    let registration = in_app(&state, &auth, &id).await?;
    let aliases = state.store.list_aliases(&id).await?;
    Ok(Json(RegistrationView::new(registration, Some(aliases))))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/registrations/{id}", tag = "registrations",
    params(("app" = String, Path, description = "App id"), ("id" = String, Path, description = "Registration id")),
    security(("notifier_jwt" = ["registrations:delete"])),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registration = %id))]
async fn delete_registration(
    State(state): State<AppState>,
    auth: NotifierAuth,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require("registrations:delete")?;
    in_app(&state, &auth, &id).await?;
    state.store.delete_registration(&id).await?;
    tracing::info!(notifier = %auth.notifier.id, "registration deleted by the auth server");
    crate::audit::record(
        state.store.as_ref(),
        crate::audit::Actor::Notifier(&auth.notifier.id),
        auth.source.as_deref(),
        "registration.delete",
        Some(&auth.app_id),
        Some(&id),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/apps/{app}/registrations/{id}/aliases", tag = "registrations",
    params(("app" = String, Path, description = "App id"), ("id" = String, Path, description = "Registration id")),
    request_body = PutAliases,
    security(("notifier_jwt" = ["notify"])),
    responses((status = 200, body = RegistrationView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_aliases(
    State(state): State<AppState>,
    auth: NotifierAuth,
    Path((_, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutAliases>,
) -> Result<Json<RegistrationView>, ApiError> {
    auth.require("notify")?;
    let aliases = validate_aliases(body.aliases).map_err(ApiError::invalid)?;
    let registration = in_app(&state, &auth, &id).await?;
    state.store.set_aliases(&auth.app_id, &id, &aliases).await?;
    crate::audit::record(
        state.store.as_ref(),
        crate::audit::Actor::Notifier(&auth.notifier.id),
        auth.source.as_deref(),
        "registration.aliases",
        Some(&auth.app_id),
        Some(&id),
        Some(serde_json::json!({"aliases": aliases.len()})),
    )
    .await;
    Ok(Json(RegistrationView::new(registration, Some(aliases))))
}
