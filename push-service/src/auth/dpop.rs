//! DPoP proofs (RFC 9449) on device requests: the device proves it holds its key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;

use super::{
    accepted_alg, fail, jwk_thumbprint, now_seconds, numeric_claim, parse_jwt, verify_signature,
    AuthError,
};
use crate::error::ApiError;
use crate::AppState;

/// Algorithms a device may sign proofs with.
pub const DPOP_ALGS: &[&str] = &["RS256", "RS512", "ES256"];
/// Name of the proof header.
pub const DPOP_HEADER: &str = "dpop";

/// A verified proof: the device's public key and its RFC 7638 thumbprint.
pub struct DeviceProof {
    pub jwk: Value,
    pub thumbprint: String,
}

/// What a proof must match: the request's method and URL, the clock.
pub struct Expected<'a> {
    pub method: &'a str,
    /// The public URL of the request, without query or fragment.
    pub url: &'a str,
    pub now: i64,
    pub window_seconds: i64,
}

/// Checks everything but replay: header, key, signature, `htm`, `htu`, `iat`, `jti`.
/// Returns the proof and its `jti`.
pub fn verify_proof(
    proof: &str,
    expected: &Expected<'_>,
) -> Result<(DeviceProof, String), AuthError> {
    let jwt = parse_jwt(proof)?;
    if jwt.header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return fail("the proof's `typ` must be `dpop+jwt`");
    }
    let alg = accepted_alg(&jwt.header, DPOP_ALGS)?;
    let jwk = jwt
        .header
        .get("jwk")
        .cloned()
        .ok_or_else(|| AuthError("the proof's header has no `jwk`".into()))?;
    verify_signature(&jwt, alg, &jwk)?;
    let claims = &jwt.claims;
    let htm = claims.get("htm").and_then(Value::as_str).unwrap_or("");
    if htm != expected.method {
        return fail(format!(
            "`htm` is `{htm}`, the request is `{}`",
            expected.method
        ));
    }
    let htu = claims.get("htu").and_then(Value::as_str).unwrap_or("");
    if normalize_url(htu).as_deref() != Some(expected.url) {
        return fail(format!(
            "`htu` `{htu}` is not this request's URL `{}`",
            expected.url
        ));
    }
    let iat =
        numeric_claim(claims, "iat").ok_or_else(|| AuthError("the proof has no `iat`".into()))?;
    if (iat - expected.now).abs() > expected.window_seconds {
        return fail(format!(
            "`iat` is {}s away from the server clock (at most {}s allowed)",
            iat - expected.now,
            expected.window_seconds
        ));
    }
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
    if jti.is_empty() || jti.len() > 256 || !crate::auth::storable_text(jti) {
        return fail("the proof needs a `jti` of 1 to 256 characters, no control characters");
    }
    let thumbprint = jwk_thumbprint(&jwk)?;
    Ok((DeviceProof { jwk, thumbprint }, jti.to_owned()))
}

/// A URL without query and fragment, in the `url` crate's normal form.
pub fn normalize_url(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.to_string())
}

impl FromRequestParts<AppState> for DeviceProof {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
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
        let config = &state.config;
        let url = normalize_url(&format!(
            "{}{}",
            config.public_url.as_str().trim_end_matches('/'),
            parts.uri.path()
        ))
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("public_url does not join with the path"))
        })?;
        let window = config.dpop_window.as_secs() as i64;
        let expected = Expected {
            method: parts.method.as_str(),
            url: &url,
            now: now_seconds(),
            window_seconds: window,
        };
        let (proof, jti) =
            verify_proof(proof, &expected).map_err(|e| ApiError::InvalidDpop(e.0))?;
        let per_minute = state.limiter.settings.device_requests_per_minute;
        if let Some(bucket) = crate::limits::Limiter::bucket(
            format!("device:{}", proof.thumbprint),
            per_minute / 60.0,
            1.0,
        ) {
            state.limiter.enforce(&[bucket], "device").await?;
        }
        let key = format!("dpop:{}:{jti}", proof.thumbprint);
        let until = (expected.now + 2 * window + 1) * 1000;
        if !state.replay.first_use(&key, until).await? {
            return Err(ApiError::InvalidDpop(
                "the proof's `jti` was already used".into(),
            ));
        }
        Ok(proof)
    }
}
