//! Who is calling, as axum extractors: a device (DPoP proof) or a notifier
//! (bearer JWT). Each takes only the components it needs from the state
//! (`FromRef`): the verifier of its kind (shared, behind an `Arc`) and the limiter.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;

use super::client_addr::source;
use super::error::ApiError;
use super::extract::bearer_token;
use crate::auth::dpop::{DeviceProof, DeviceVerifier, DPOP_HEADER};
use crate::auth::notifier::{NotifierAuth, NotifierVerifier};
use crate::limits::Limiter;
use crate::tls::ClientCertificate;

impl<S> FromRequestParts<S> for DeviceProof
where
    S: Send + Sync,
    Arc<DeviceVerifier>: FromRef<S>,
    Limiter: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<DeviceVerifier>::from_ref(state);
        let limiter = Limiter::from_ref(state);
        let mut values = parts.headers.get_all(DPOP_HEADER).iter();
        let proof = match (values.next(), values.next()) {
            (Some(value), None) => value
                .to_str()
                .map_err(|_| ApiError::InvalidDpop("the DPoP header is not ASCII".into()))?,
            (None, _) => {
                return Err(ApiError::InvalidDpop(
                    "the `DPoP` proof header is missing".into(),
                ))
            }
            _ => {
                return Err(ApiError::InvalidDpop(
                    "send exactly one `DPoP` header".into(),
                ))
            }
        };
        let url = verifier.expected_url(parts.uri.path()).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("public_url does not join with the path"))
        })?;
        let (proof, until, jti) = verifier.verify(proof, parts.method.as_str(), &url)?;
        let per_minute = limiter.settings.device_requests_per_minute;
        if let Some(bucket) = Limiter::bucket(
            format!("device:{}", proof.thumbprint),
            per_minute / 60.0,
            1.0,
        ) {
            limiter.enforce(&[bucket], "device").await?;
        }
        verifier.take(&proof, &jti, until).await?;
        Ok(proof)
    }
}

impl<S> FromRequestParts<S> for NotifierAuth
where
    S: Send + Sync,
    Arc<NotifierVerifier>: FromRef<S>,
    Limiter: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("no such app"))?;
        let app_id = params
            .get("app")
            .cloned()
            .ok_or_else(|| ApiError::not_found("no such app"))?;
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::Unauthorized("missing `Authorization: Bearer <JWT>`".into())
        })?;
        let peer = parts.extensions.get::<ClientCertificate>();
        let verifier = Arc::<NotifierVerifier>::from_ref(state);
        let limiter = Limiter::from_ref(state);
        let mut auth = verifier.authenticate(&app_id, token, peer).await?;
        auth.source = source(parts);
        let limits = limiter.app_limits(&app_id).await?;
        if let Some(bucket) = Limiter::bucket(
            format!("notifier:{}", auth.notifier.id),
            limits.notifier_requests_per_second,
            1.0,
        ) {
            limiter.enforce(&[bucket], "notifier request").await?;
        }
        Ok(auth)
    }
}
