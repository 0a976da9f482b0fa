//! `/v1/apps/{app}/notifiers` and `/v1/apps/{app}/attestation` (operator).

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
use crate::auth::notifier::CertBinding;
use crate::ids::{new_id, now_millis, rfc3339};
use crate::keys::validate_jwks;
use crate::store::{Attestation, Notifier};

/// Scopes a notifier may be granted.
pub const SCOPES: &[&str] = &["notify", "registrations:read", "registrations:delete"];

/// Body of `POST /v1/apps/{app}/notifiers`: exactly one of `jwks` and `jwks_url`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNotifier {
    pub name: String,
    /// Static public keys, `{"keys": [...]}`; each key needs a `kid`.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// HTTPS URL of the notifier's JWKS, fetched and cached.
    pub jwks_url: Option<String>,
    /// Granted scopes: `notify`, `registrations:read`, `registrations:delete`.
    pub scopes: Vec<String>,
    /// Optional mutual TLS: the notifier's JWTs are then accepted only over a
    /// connection presenting this client certificate (by key pin or issuing CA).
    pub client_certificate: Option<CertBinding>,
    /// `false` (default): every token is single-use (its `jti` is remembered
    /// until `exp`, which may be at most `notifier_token_max_lifetime_seconds`
    /// ahead). `true`: a token may be reused until its `exp`, at most an hour
    /// ahead, as APNs and FCM let a sender do; `jti` is then optional. A stolen
    /// token is replayable until it expires: pair it with `client_certificate`.
    #[serde(default)]
    pub token_reuse: bool,
}

/// A notifier as the API shows it; `id` is the `iss` of its JWTs.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct NotifierView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Key ids of the static keys.
    pub key_ids: Vec<String>,
    /// The client-certificate binding, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertBinding>,
    /// Whether a token may be used more than once, until its `exp`.
    pub token_reuse: bool,
    pub created_at: String,
}

impl From<Notifier> for NotifierView {
    fn from(n: Notifier) -> Self {
        let key_ids = n
            .jwks
            .as_deref()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|j| validate_jwks(&j).ok())
            .unwrap_or_default();
        NotifierView {
            id: n.id,
            name: n.name,
            scopes: n.scopes.split_whitespace().map(str::to_owned).collect(),
            jwks_url: n.jwks_url,
            key_ids,
            client_certificate: n
                .client_cert
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            token_reuse: n.token_reuse,
            created_at: rfc3339(n.created_at),
        }
    }
}

/// Body of `PUT /v1/apps/{app}/attestation`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAttestation {
    /// Public keys that sign client attestations, `{"keys": [...]}`.
    #[schema(value_type = Object)]
    pub jwks: serde_json::Value,
    /// When true, registration without a valid attestation is refused.
    pub required: bool,
}

/// Attestation settings as the API shows them.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AttestationView {
    pub key_ids: Vec<String>,
    pub required: bool,
    pub updated_at: String,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/apps/{app}/notifiers",
            get(list_notifiers).post(create_notifier),
        )
        .route(
            "/v1/apps/{app}/notifiers/{id}",
            get(get_notifier).delete(delete_notifier),
        )
        .route(
            "/v1/apps/{app}/attestation",
            get(get_attestation).put(put_attestation),
        )
}

/// A JWKS URL the service may fetch: https, and (resolved now) outside the network.
async fn check_jwks_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    state
        .config
        .fetch
        .check_resolved(raw)
        .await
        .map(|url| url.to_string())
        .map_err(|e| ApiError::invalid(format!("`jwks_url`: {e}")))
}

#[utoipa::path(post, path = "/v1/apps/{app}/notifiers", tag = "notifiers",
    params(("app" = String, Path, description = "App id")), request_body = CreateNotifier,
    security(("admin_token" = [])),
    responses((status = 201, body = NotifierView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(app = %app_id))]
async fn create_notifier(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<CreateNotifier>,
) -> Result<(StatusCode, Json<NotifierView>), ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("`name` must be 1 to 200 characters"));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid("`scopes` must name at least one scope"));
    }
    if let Some(bad) = body.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::invalid(format!(
            "`scopes`: unknown scope `{bad}` (known: {})",
            SCOPES.join(", ")
        )));
    }
    let (jwks, jwks_url) = match (body.jwks, body.jwks_url) {
        (Some(jwks), None) => {
            validate_jwks(&jwks).map_err(|e| ApiError::invalid(format!("`jwks`: {e}")))?;
            (Some(jwks.to_string()), None)
        }
        (None, Some(url)) => (None, Some(check_jwks_url(&state, &url).await?)),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of `jwks` and `jwks_url`",
            ))
        }
    };
    let client_cert = match body.client_certificate {
        Some(binding) => Some(
            serde_json::to_string(
                &binding
                    .validate()
                    .map_err(|e| ApiError::invalid(format!("`client_certificate`: {e}")))?,
            )
            .map_err(|e| ApiError::Internal(e.into()))?,
        ),
        None => None,
    };
    let mut scopes = body.scopes;
    scopes.sort();
    scopes.dedup();
    let notifier = Notifier {
        id: new_id("nfr"),
        app_id,
        name: name.to_owned(),
        scopes: scopes.join(" "),
        jwks,
        jwks_url,
        created_at: now_millis(),
        client_cert,
        token_reuse: body.token_reuse,
    };
    state.store.create_notifier(&notifier).await?;
    state
        .notifiers
        .notifiers
        .forget(&notifier.app_id, &notifier.id);
    tracing::info!(notifier = %notifier.id, "notifier created");
    record(
        state.store.as_ref(),
        Actor::Operator,
        admin.source.as_deref(),
        "notifier.create",
        Some(&notifier.app_id),
        Some(&notifier.id),
        Some(
            serde_json::json!({"name": notifier.name, "scopes": notifier.scopes,
            "client_certificate": notifier.client_cert.is_some()}),
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(notifier.into())))
}

#[utoipa::path(get, path = "/v1/apps/{app}/notifiers", tag = "notifiers",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Vec<NotifierView>), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_notifiers(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<Vec<NotifierView>>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let notifiers = state.store.list_notifiers(&app_id).await?;
    Ok(Json(
        notifiers.into_iter().map(NotifierView::from).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/notifiers/{id}", tag = "notifiers",
    params(("app" = String, Path, description = "App id"), ("id" = String, Path, description = "Notifier id")),
    security(("admin_token" = [])),
    responses((status = 200, body = NotifierView), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_notifier(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((app_id, id)): Path<(String, String)>,
) -> Result<Json<NotifierView>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let notifier = state
        .store
        .get_notifier(&app_id, &id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("notifier `{id}` does not exist in this app"))
        })?;
    Ok(Json(notifier.into()))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/notifiers/{id}", tag = "notifiers",
    params(("app" = String, Path, description = "App id"), ("id" = String, Path, description = "Notifier id")),
    security(("admin_token" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn delete_notifier(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path((app_id, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let deleted = state.store.delete_notifier(&app_id, &id).await?;
    state.notifiers.notifiers.forget(&app_id, &id);
    if deleted {
        record(
            state.store.as_ref(),
            Actor::Operator,
            admin.source.as_deref(),
            "notifier.delete",
            Some(&app_id),
            Some(&id),
            None,
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "notifier `{id}` does not exist in this app"
        )))
    }
}

#[utoipa::path(put, path = "/v1/apps/{app}/attestation", tag = "attestation",
    params(("app" = String, Path, description = "App id")), request_body = PutAttestation,
    security(("admin_token" = [])),
    responses((status = 200, body = AttestationView), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_attestation(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<PutAttestation>,
) -> Result<Json<AttestationView>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let key_ids =
        validate_jwks(&body.jwks).map_err(|e| ApiError::invalid(format!("`jwks`: {e}")))?;
    let attestation = Attestation {
        app_id,
        jwks: body.jwks.to_string(),
        required: body.required,
        updated_at: now_millis(),
    };
    state.store.put_attestation(&attestation).await?;
    record(
        state.store.as_ref(),
        Actor::Operator,
        admin.source.as_deref(),
        "attestation.put",
        Some(&attestation.app_id),
        None,
        Some(serde_json::json!({"key_ids": key_ids, "required": attestation.required})),
    )
    .await;
    Ok(Json(AttestationView {
        key_ids,
        required: attestation.required,
        updated_at: rfc3339(attestation.updated_at),
    }))
}

#[utoipa::path(get, path = "/v1/apps/{app}/attestation", tag = "attestation",
    params(("app" = String, Path, description = "App id")),
    security(("admin_token" = [])),
    responses((status = 200, body = AttestationView), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_attestation(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<AttestationView>, ApiError> {
    require_app(state.store.as_ref(), &app_id).await?;
    let attestation = state.store.get_attestation(&app_id).await?.ok_or_else(|| {
        ApiError::not_found(format!("app `{app_id}` has no attestation settings"))
    })?;
    let jwks: serde_json::Value =
        serde_json::from_str(&attestation.jwks).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(AttestationView {
        key_ids: validate_jwks(&jwks).unwrap_or_default(),
        required: attestation.required,
        updated_at: rfc3339(attestation.updated_at),
    }))
}
