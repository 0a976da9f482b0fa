//! Who is calling: device DPoP proofs, client attestations, notifier JWTs.
//!
//! Claims are checked here by hand rather than by a JWT library's validator, so
//! each refusal can say exactly what was wrong.

pub mod attestation;
pub mod cache;
pub mod dpop;
pub mod jwks;
pub mod notifier;
pub mod replay;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::keys::validate_public_jwk;

/// Why a token or proof was refused; the text is safe to show to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AuthError(pub String);

pub(crate) fn fail<T>(message: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(message.into()))
}

/// A compact JWS split into its decoded JSON header and claims.
pub struct UnverifiedJwt<'a> {
    pub token: &'a str,
    pub header: Value,
    pub claims: Value,
}

const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Splits and decodes a compact JWS without verifying it.
pub fn parse_jwt(token: &str) -> Result<UnverifiedJwt<'_>, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return fail("the token is too long");
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail("not a compact JWS (header.payload.signature)");
    };
    let decode = |segment: &str, what: &str| -> Result<Value, AuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| AuthError(format!("the {what} is not base64url")))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError(format!("the {what} is not JSON")))?;
        if value.is_object() {
            Ok(value)
        } else {
            fail(format!("the {what} is not a JSON object"))
        }
    };
    Ok(UnverifiedJwt {
        token,
        header: decode(header, "JWT header")?,
        claims: decode(claims, "JWT payload")?,
    })
}

/// Maps an `alg` name to the algorithm, if it is in `allowed`.
pub fn accepted_alg(header: &Value, allowed: &[&str]) -> Result<Algorithm, AuthError> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !allowed.contains(&alg) {
        return fail(format!(
            "algorithm `{alg}` is not accepted (use one of {})",
            allowed.join(", ")
        ));
    }
    Ok(match alg {
        "RS256" => Algorithm::RS256,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return fail(format!("algorithm `{alg}` is not supported")),
    })
}

/// Verifies the JWS signature with a public JWK, after checking the key suits the algorithm.
pub fn verify_signature(
    jwt: &UnverifiedJwt<'_>,
    alg: Algorithm,
    jwk: &Value,
) -> Result<(), AuthError> {
    validate_public_jwk(jwk).map_err(|e| AuthError(e.0))?;
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
    let fits = match alg {
        Algorithm::RS256 | Algorithm::RS512 => kty == "RSA",
        Algorithm::ES256 => kty == "EC",
        Algorithm::EdDSA => kty == "OKP",
        _ => false,
    };
    if !fits {
        return fail(format!("a `{kty}` key cannot make `{alg:?}` signatures"));
    }
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone())
        .map_err(|_| AuthError("the JWK cannot be read".into()))?;
    let key =
        DecodingKey::from_jwk(&parsed).map_err(|_| AuthError("the JWK cannot be used".into()))?;
    let (message, signature) = jwt
        .token
        .rsplit_once('.')
        .ok_or_else(|| AuthError("not a compact JWS".into()))?;
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg) {
        Ok(true) => Ok(()),
        _ => fail("the signature does not verify"),
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key.
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, AuthError> {
    let member = |name: &str| -> Result<String, AuthError> {
        let value = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError(format!("the JWK lacks `{name}`")))?;
        Ok(serde_json::to_string(value).expect("a string serializes"))
    };
    let canonical = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            member("e")?,
            member("n")?
        ),
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            member("crv")?,
            member("x")?,
            member("y")?
        ),
        Some("OKP") => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            member("crv")?,
            member("x")?
        ),
        _ => return fail("the JWK has no supported `kty`"),
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

pub use crate::ids::now_seconds;

/// A numeric claim (seconds), if present.
pub fn numeric_claim(claims: &Value, name: &str) -> Option<i64> {
    claims
        .get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        // A caller's number near i64::MAX must not overflow the time checks:
        // ±10^12 s (about 31,700 years) keeps every comparison's meaning.
        .map(|t| t.clamp(-CLAIM_TIME_BOUND, CLAIM_TIME_BOUND))
}

/// Largest magnitude a time claim is taken at.
const CLAIM_TIME_BOUND: i64 = 1_000_000_000_000;

/// Whether a caller's string can be stored and compared by every backend: no NUL
/// (PostgreSQL refuses it in text) and no other control character.
pub fn storable_text(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_claims_are_bounded_and_text_is_storable() {
        let claims = serde_json::json!({"a": i64::MAX, "b": i64::MIN, "c": 1e300, "d": 5});
        assert_eq!(numeric_claim(&claims, "a"), Some(CLAIM_TIME_BOUND));
        assert_eq!(numeric_claim(&claims, "b"), Some(-CLAIM_TIME_BOUND));
        assert_eq!(numeric_claim(&claims, "c"), Some(CLAIM_TIME_BOUND));
        assert_eq!(numeric_claim(&claims, "d"), Some(5));
        // The checks that use them cannot overflow.
        let now = 1_800_000_000i64;
        let exp = numeric_claim(&claims, "a").unwrap_or_default();
        assert!(exp - now > 300 && exp + 30 > now);
        for (text, ok) in [
            ("nfr_abc", true),
            ("a\0b", false),
            ("a\nb", false),
            ("é", true),
        ] {
            assert_eq!(storable_text(text), ok, "{text:?}");
        }
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // The example key of RFC 7638 section 3.1 and its published thumbprint.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn parse_refuses_garbage() {
        assert!(parse_jwt("a.b").is_err());
        assert!(parse_jwt("!!.e30.x").is_err());
        assert!(parse_jwt("e30.e30.x.y").is_err());
        assert!(parse_jwt("e30.e30.").is_ok());
    }
}
