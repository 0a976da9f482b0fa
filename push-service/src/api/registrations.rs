//! Device side of registrations (DPoP): create, read own, rotate token, delete.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::apps::require_app;
use super::extract::ApiJson;
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::auth::attestation::{verify_attestation, ATTESTATION_HEADER};
use crate::auth::dpop::DeviceProof;
use crate::auth::now_seconds;
use crate::ids::{new_id, now_millis};
use crate::registrations::{
    encryption_key, validate, CreateRegistration, ProviderKind, RegistrationView,
};
use crate::store::Registration;

/// Body of `PUT /v1/registrations/{id}`: a new token, a new encryption key, or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// The provider's new token for this device.
    pub token: Option<String>,
    /// A new public key for sealed content (see `encryption_key` of the
    /// registration): items sealed before stay sealed to the old key.
    #[schema(value_type = Option<Object>)]
    pub encryption_key: Option<serde_json::Value>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app}/registrations", post(create_registration))
        .route(
            "/v1/registrations/{id}",
            get(get_own).put(rotate_token).delete(delete_own),
        )
}

/// Checks the app's client attestation policy for a registering device; true
/// when the device presented a valid attestation.
async fn check_attestation(
    state: &AppState,
    app_id: &str,
    headers: &HeaderMap,
    proof: &DeviceProof,
) -> Result<bool, ApiError> {
    let Some(settings) = state.store.get_attestation(app_id).await? else {
        return Ok(false);
    };
    let token = headers
        .get(ATTESTATION_HEADER)
        .and_then(|v| v.to_str().ok());
    match token {
        None if settings.required => Err(ApiError::InvalidAttestation(
            "this app requires a client attestation in the `Push-Client-Attestation` header".into(),
        )),
        None => Ok(false),
        Some(token) => {
            let jwks: serde_json::Value =
                serde_json::from_str(&settings.jwks).map_err(|e| ApiError::Internal(e.into()))?;
            let skew = state.config.clock_skew.as_secs() as i64;
            verify_attestation(token, &jwks, &proof.thumbprint, now_seconds(), skew)
                .map(|()| true)
                .map_err(|e| ApiError::InvalidAttestation(e.0))
        }
    }
}

/// Loads a registration that the proving key owns.
async fn owned(state: &AppState, id: &str, proof: &DeviceProof) -> Result<Registration, ApiError> {
    let registration = state
        .store
        .get_registration(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("registration `{id}` does not exist")))?;
    if registration.key_thumbprint != proof.thumbprint {
        return Err(ApiError::Forbidden(
            "this registration is bound to another device key".into(),
        ));
    }
    Ok(registration)
}

#[utoipa::path(post, path = "/v1/apps/{app}/registrations", tag = "registrations",
    params(("app" = String, Path, description = "App id")), request_body = CreateRegistration,
    security(("dpop" = [])),
    responses((status = 201, body = RegistrationView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(app = %app_id))]
async fn create_registration(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    proof: DeviceProof,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateRegistration>,
) -> Result<(StatusCode, Json<RegistrationView>), ApiError> {
    let new = validate(body).map_err(ApiError::invalid)?;
    require_app(state.store.as_ref(), &app_id).await?;
    let attested = check_attestation(&state, &app_id, &headers, &proof).await?;
    let app_cap = state.config.max_unattested_registrations_per_app;
    if !attested && app_cap > 0 {
        let held = state.store.count_unattested_registrations(&app_id).await?;
        if held >= app_cap as i64 {
            return Err(ApiError::Conflict(format!(
                "this app already holds {held} active registrations without a client attestation \
                 (max_unattested_registrations_per_app = {app_cap}); register with an attestation"
            )));
        }
    }
    let max = state.config.max_registrations_per_key;
    if max > 0 {
        let held = state
            .store
            .count_registrations_by_key(&proof.thumbprint)
            .await?;
        if held >= max as i64 {
            return Err(ApiError::Conflict(format!(
                "this device key already holds {held} active registrations \
                 (max_registrations_per_key = {max}); delete one first"
            )));
        }
    }
    let now = now_millis();
    let registration = Registration {
        id: new_id("reg"),
        app_id,
        provider: new.provider.as_str().to_owned(),
        token: new.token,
        environment: new.environment,
        platform: new.platform,
        key_thumbprint: proof.thumbprint,
        encryption_jwk: new.encryption_jwk,
        status: "active".into(),
        invalid_reason: None,
        invalidated_at: None,
        created_at: now,
        updated_at: now,
        attested,
    };
    let replaced = state.store.create_registration(&registration).await?;
    tracing::info!(registration = %registration.id, replaced = replaced.len(), "registration created");
    Ok((
        StatusCode::CREATED,
        Json(RegistrationView::new(registration, None)),
    ))
}

#[utoipa::path(get, path = "/v1/registrations/{id}", tag = "registrations",
    params(("id" = String, Path, description = "Registration id")),
    security(("dpop" = [])),
    responses((status = 200, body = RegistrationView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_own(
    State(state): State<AppState>,
    Path(id): Path<String>,
    proof: DeviceProof,
) -> Result<Json<RegistrationView>, ApiError> {
    Ok(Json(RegistrationView::new(
        owned(&state, &id, &proof).await?,
        None,
    )))
}

#[utoipa::path(put, path = "/v1/registrations/{id}", tag = "registrations",
    params(("id" = String, Path, description = "Registration id")), request_body = RotateToken,
    security(("dpop" = [])),
    responses((status = 200, body = RegistrationView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(registration = %id))]
async fn rotate_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    proof: DeviceProof,
    ApiJson(body): ApiJson<RotateToken>,
) -> Result<Json<RegistrationView>, ApiError> {
    let registration = owned(&state, &id, &proof).await?;
    if body.token.is_none() && body.encryption_key.is_none() {
        return Err(ApiError::invalid("give `token`, `encryption_key` or both"));
    }
    let jwk = body
        .encryption_key
        .as_ref()
        .map(encryption_key)
        .transpose()
        .map_err(ApiError::invalid)?;
    let token = match &body.token {
        None => None,
        Some(token) => {
            let provider = ProviderKind::parse(&registration.provider).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "stored provider `{}` is not one this node knows",
                    registration.provider
                ))
            })?;
            Some(
                provider
                    .check_token(Some(token))
                    .map_err(ApiError::invalid)?
                    .ok_or_else(|| {
                        ApiError::invalid("`token`: this registration takes no token")
                    })?,
            )
        }
    };
    if let Some(jwk) = &jwk {
        state
            .store
            .set_encryption_key(&id, jwk, now_millis())
            .await?;
        tracing::info!("registration encryption key rotated");
    }
    if let Some(token) = &token {
        let replaced = state
            .store
            .rotate_registration_token(&id, token, now_millis())
            .await?;
        tracing::info!(replaced = replaced.len(), "registration token rotated");
    }
    let updated = owned(&state, &id, &proof).await?;
    Ok(Json(RegistrationView::new(updated, None)))
}

#[utoipa::path(delete, path = "/v1/registrations/{id}", tag = "registrations",
    params(("id" = String, Path, description = "Registration id")),
    security(("dpop" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(registration = %id))]
async fn delete_own(
    State(state): State<AppState>,
    Path(id): Path<String>,
    proof: DeviceProof,
) -> Result<StatusCode, ApiError> {
    owned(&state, &id, &proof).await?;
    state.store.delete_registration(&id).await?;
    tracing::info!("registration deleted by its device");
    Ok(StatusCode::NO_CONTENT)
}
