//! Client attestation: a JWT from the app's implementer binding the device key (`cnf.jwk`).

use serde_json::Value;

use super::{
    accepted_alg, fail, jwk_thumbprint, numeric_claim, parse_jwt, verify_signature, AuthError,
};
use crate::keys::ALLOWED_ALGS;

/// Header carrying the attestation JWT.
pub const ATTESTATION_HEADER: &str = "push-client-attestation";

/// Verifies an attestation against the app's keys: signature by a known key, not
/// expired, and bound (`cnf.jwk`) to the device key with `device_thumbprint`.
pub fn verify_attestation(
    token: &str,
    jwks: &Value,
    device_thumbprint: &str,
    now: i64,
    skew: i64,
) -> Result<(), AuthError> {
    let jwt = parse_jwt(token)?;
    let alg = accepted_alg(&jwt.header, ALLOWED_ALGS)?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kid = jwt.header.get("kid").and_then(Value::as_str);
    let key = match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => return fail("the attestation has no `kid`, and the app has several keys"),
    }
    .ok_or_else(|| AuthError("the attestation is signed by a key this app does not know".into()))?;
    verify_signature(&jwt, alg, key)
        .map_err(|e| AuthError(format!("the attestation's signature is not valid: {e}")))?;
    let exp = numeric_claim(&jwt.claims, "exp")
        .ok_or_else(|| AuthError("the attestation has no `exp`".into()))?;
    if exp + skew < now {
        return fail("the attestation has expired");
    }
    if let Some(iat) = numeric_claim(&jwt.claims, "iat") {
        if iat - skew > now {
            return fail("the attestation's `iat` is in the future");
        }
    }
    let bound = jwt
        .claims
        .get("cnf")
        .and_then(|c| c.get("jwk"))
        .ok_or_else(|| AuthError("the attestation has no `cnf.jwk`".into()))?;
    if jwk_thumbprint(bound)? != device_thumbprint {
        return fail("the attestation is bound to another key than the one signing the DPoP proof");
    }
    Ok(())
}
