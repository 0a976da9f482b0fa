//! DPoP proofs (RFC 9449) on device requests: the device proves it holds its key.

use std::time::Duration;

use serde_json::Value;

use super::replay::{ReplayCache, ReplayError};
use super::{
    accepted_alg, fail, jwk_thumbprint, now_seconds, numeric_claim, parse_jwt, verify_signature,
    AuthError,
};

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

/// Why a device's request is refused (or could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum DeviceAuthError {
    /// No valid proof: 401 with `WWW-Authenticate: DPoP`, and why.
    #[error("{0}")]
    InvalidProof(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Checks device proofs against this node's public URL, the proof window and
/// the replay cache.
#[derive(Clone)]
pub struct DeviceVerifier {
    pub public_url: url::Url,
    pub window: Duration,
    pub replay: ReplayCache,
}

impl DeviceVerifier {
    /// What a proof for `method` on `path` must match, now.
    pub fn expected_url(&self, path: &str) -> Option<String> {
        normalize_url(&format!(
            "{}{}",
            self.public_url.as_str().trim_end_matches('/'),
            path
        ))
    }

    /// Verifies one proof (the `DPoP` header's value) for `method` on `url`:
    /// the proof, until when its `jti` must be remembered (ms), and the `jti`.
    /// The `jti` is taken apart ([`Self::take`]), so a device over its rate
    /// is refused before its proof is remembered.
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        url: &str,
    ) -> Result<(DeviceProof, i64, String), DeviceAuthError> {
        let window = self.window.as_secs() as i64;
        let expected = Expected {
            method,
            url,
            now: now_seconds(),
            window_seconds: window,
        };
        let (proof, jti) =
            verify_proof(proof, &expected).map_err(|e| DeviceAuthError::InvalidProof(e.0))?;
        Ok((proof, (expected.now + 2 * window + 1) * 1000, jti))
    }

    /// Takes a proof's `jti` until `until` (ms): refused when already used.
    pub async fn take(
        &self,
        proof: &DeviceProof,
        jti: &str,
        until: i64,
    ) -> Result<(), DeviceAuthError> {
        let key = format!("dpop:{}:{jti}", proof.thumbprint);
        if self.replay.first_use(&key, until).await? {
            Ok(())
        } else {
            Err(DeviceAuthError::InvalidProof(
                "the proof's `jti` was already used".into(),
            ))
        }
    }
}
