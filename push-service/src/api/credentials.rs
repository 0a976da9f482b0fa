//! `/v1/apps/{app}/credentials/{apns,fcm}`: upload (validated, sealed), read metadata, delete.

use crate::delivery::ProviderKind;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::apps::require_app;
use super::extract::{AdminAuth, ApiJson};
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::credentials::{
    credential_aad, validate_apns, validate_fcm, ApnsCredentialInfo, ApnsCredentialInput,
    CredentialStatus, FcmCredentialInfo, FcmCredentialInput,
};
use crate::ids::{now_millis, rfc3339};
use crate::store::CredentialRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/apps/{app}/credentials/apns",
            put(put_apns).get(get_apns).delete(delete_apns),
        )
        .route(
            "/v1/apps/{app}/credentials/fcm",
            put(put_fcm).get(get_fcm).delete(delete_fcm),
        )
}

async fn save<T: Serialize>(
    admin: &AdminAuth,
    state: &AppState,
    app_id: &str,
    kind: ProviderKind,
    info: &T,
    secret: &[u8],
    expires_at: Option<i64>,
) -> Result<(), ApiError> {
    let provider = kind.as_str();
    let record = CredentialRecord {
        app_id: app_id.to_owned(),
        provider: provider.to_owned(),
        metadata: serde_json::to_string(info).map_err(|e| ApiError::Internal(e.into()))?,
        sealed: state.sealer.seal(secret, &credential_aad(app_id, kind)),
        expires_at,
        updated_at: now_millis(),
        last_error: None,
        last_error_at: None,
    };
    state.store.put_credential(&record).await?;
    // A new credential deserves a try now, on this node at least.
    state.circuits.reset(app_id, kind);
    tracing::info!(app = %app_id, provider, "credential stored");
    crate::audit::record(
        state.store.as_ref(),
        crate::audit::Actor::Operator,
        admin.source.as_deref(),
        "credential.put",
        Some(app_id),
        Some(provider),
        serde_json::from_str(&record.metadata).ok(),
    )
    .await;
    Ok(())
}

async fn load<T: DeserializeOwned + WithUpdatedAt>(
    state: &AppState,
    app_id: &str,
    provider: ProviderKind,
) -> Result<T, ApiError> {
    require_app(state.store.as_ref(), app_id).await?;
    let record = state
        .store
        .get_credential(app_id, provider)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("app `{app_id}` has no {provider} credential"))
        })?;
    let mut info: T =
        serde_json::from_str(&record.metadata).map_err(|e| ApiError::Internal(e.into()))?;
    info.set_updated_at(rfc3339(record.updated_at));
    info.set_status(CredentialStatus {
        status: if record.last_error.is_some() {
            "failing"
        } else {
            "ok"
        }
        .into(),
        last_error: record.last_error,
        last_error_at: record.last_error_at.map(rfc3339),
    });
    Ok(info)
}

async fn remove(
    admin: &AdminAuth,
    state: &AppState,
    app_id: &str,
    provider: ProviderKind,
) -> Result<StatusCode, ApiError> {
    require_app(state.store.as_ref(), app_id).await?;
    if state.store.delete_credential(app_id, provider).await? {
        crate::audit::record(
            state.store.as_ref(),
            crate::audit::Actor::Operator,
            admin.source.as_deref(),
            "credential.delete",
            Some(app_id),
            Some(provider.as_str()),
            None,
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "app `{app_id}` has no {provider} credential"
        )))
    }
}

trait WithUpdatedAt {
    fn set_updated_at(&mut self, at: String);
    fn set_status(&mut self, status: CredentialStatus);
}
impl WithUpdatedAt for ApnsCredentialInfo {
    fn set_updated_at(&mut self, at: String) {
        self.updated_at = at;
    }
    fn set_status(&mut self, status: CredentialStatus) {
        self.status = Some(status);
    }
}
impl WithUpdatedAt for FcmCredentialInfo {
    fn set_updated_at(&mut self, at: String) {
        self.updated_at = at;
    }
    fn set_status(&mut self, status: CredentialStatus) {
        self.status = Some(status);
    }
}

#[utoipa::path(put, path = "/v1/apps/{app}/credentials/apns", tag = "credentials",
    params(("app" = String, Path, description = "App id")), request_body = ApnsCredentialInput,
    security(("admin_token" = [])),
    responses((status = 200, body = ApnsCredentialInfo), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_apns(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<ApnsCredentialInput>,
) -> Result<Json<ApnsCredentialInfo>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let now = now_millis();
    let validated = validate_apns(body, now).map_err(|e| ApiError::invalid(e.to_string()))?;
    let secret = serde_json::to_vec(&validated.secret).map_err(|e| ApiError::Internal(e.into()))?;
    save(
        &admin,
        &state,
        &app_id,
        ProviderKind::Apns,
        &validated.info,
        &secret,
        validated.expires_at,
    )
    .await?;
    let mut info = validated.info;
    info.updated_at = rfc3339(now);
    Ok(Json(info))
}

#[utoipa::path(get, path = "/v1/apps/{app}/credentials/apns", tag = "credentials",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 200, body = ApnsCredentialInfo), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_apns(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<ApnsCredentialInfo>, ApiError> {
    Ok(Json(load(&state, &app_id, ProviderKind::Apns).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/credentials/apns", tag = "credentials",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn delete_apns(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&admin, &state, &app_id, ProviderKind::Apns).await
}

#[utoipa::path(put, path = "/v1/apps/{app}/credentials/fcm", tag = "credentials",
    params(("app" = String, Path, description = "App id")), request_body = FcmCredentialInput,
    security(("admin_token" = [])),
    responses((status = 200, body = FcmCredentialInfo), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_fcm(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<FcmCredentialInput>,
) -> Result<Json<FcmCredentialInfo>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let validated = validate_fcm(body).map_err(|e| ApiError::invalid(e.to_string()))?;
    state
        .config
        .fetch
        .check_token_uri(&validated.info.token_uri)
        .await
        .map_err(|e| ApiError::invalid(format!("`service_account.token_uri`: {e}")))?;
    let now = now_millis();
    save(
        &admin,
        &state,
        &app_id,
        ProviderKind::Fcm,
        &validated.info,
        validated.service_account_json.as_bytes(),
        None,
    )
    .await?;
    let mut info = validated.info;
    info.updated_at = rfc3339(now);
    Ok(Json(info))
}

#[utoipa::path(get, path = "/v1/apps/{app}/credentials/fcm", tag = "credentials",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 200, body = FcmCredentialInfo), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_fcm(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<FcmCredentialInfo>, ApiError> {
    Ok(Json(load(&state, &app_id, ProviderKind::Fcm).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/credentials/fcm", tag = "credentials",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn delete_fcm(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&admin, &state, &app_id, ProviderKind::Fcm).await
}
