//! Validation of public JWK sets given by operators (notifier and attestation keys).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Algorithms accepted for notifier and attestation signatures. Symmetric and `none` never.
pub const ALLOWED_ALGS: &[&str] = &["RS256", "RS512", "ES256", "EdDSA"];
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const MAX_KEYS: usize = 20;

/// Why a JWK or JWK set was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Checks one public JWK: supported type, no private members, strong enough.
pub fn validate_public_jwk(jwk: &serde_json::Value) -> Result<(), KeyError> {
    let obj = jwk
        .as_object()
        .ok_or_else(|| KeyError("a JWK must be a JSON object".into()))?;
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(KeyError(format!(
            "the JWK holds private key material (`{member}`); give the public key only"
        )));
    }
    if let Some(alg) = obj.get("alg").and_then(|a| a.as_str()) {
        if !ALLOWED_ALGS.contains(&alg) {
            return Err(KeyError(format!(
                "algorithm `{alg}` is not accepted (use one of {})",
                ALLOWED_ALGS.join(", ")
            )));
        }
    }
    let member = |name: &str| obj.get(name).and_then(|v| v.as_str());
    match member("kty") {
        Some("RSA") => {
            let n = member("n")
                .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                .ok_or_else(|| KeyError("RSA JWK needs base64url `n`".into()))?;
            member("e")
                .and_then(|e| URL_SAFE_NO_PAD.decode(e).ok())
                .ok_or_else(|| KeyError("RSA JWK needs base64url `e`".into()))?;
            let bits = rsa_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(KeyError(format!(
                    "RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"
                )));
            }
        }
        Some("EC") => {
            if member("crv") != Some("P-256") {
                return Err(KeyError("EC JWK must use curve P-256".into()));
            }
            for c in ["x", "y"] {
                let coordinate = member(c)
                    .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                    .ok_or_else(|| KeyError(format!("EC JWK needs base64url `{c}`")))?;
                if coordinate.len() != 32 {
                    return Err(KeyError(format!("EC JWK `{c}` must be 32 bytes")));
                }
            }
        }
        Some("OKP") => {
            if member("crv") != Some("Ed25519") {
                return Err(KeyError("OKP JWK must use curve Ed25519".into()));
            }
            let x = member("x")
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or_else(|| KeyError("OKP JWK needs base64url `x`".into()))?;
            if x.len() != 32 {
                return Err(KeyError("Ed25519 JWK `x` must be 32 bytes".into()));
            }
        }
        Some(other) => return Err(KeyError(format!("key type `{other}` is not supported"))),
        None => return Err(KeyError("the JWK has no `kty`".into())),
    }
    Ok(())
}

/// Size in bits of a big-endian unsigned modulus.
pub fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(first) => &n[first..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// Checks a JWK set (`{"keys": [...]}`) and returns its key ids, which must be
/// present and unique so a token's `kid` names exactly one key.
pub fn validate_jwks(jwks: &serde_json::Value) -> Result<Vec<String>, KeyError> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| KeyError("a JWK set is an object with a `keys` array".into()))?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(KeyError(format!("a JWK set holds 1 to {MAX_KEYS} keys")));
    }
    let mut kids = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        validate_public_jwk(key).map_err(|KeyError(m)| KeyError(format!("keys[{i}]: {m}")))?;
        let kid = key
            .get("kid")
            .and_then(|k| k.as_str())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| KeyError(format!("keys[{i}]: every key needs a `kid`")))?;
        if kids.iter().any(|k| k == kid) {
            return Err(KeyError(format!("keys[{i}]: `kid` {kid:?} appears twice")));
        }
        kids.push(kid.to_owned());
    }
    Ok(kids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modulus_bits() {
        assert_eq!(rsa_bits(&[0, 0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0xff]), 9);
        assert_eq!(rsa_bits(&[0]), 0);
    }

    #[test]
    fn refuses_private_and_weak_keys() {
        let small_n = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let err = validate_public_jwk(&json!({"kty":"RSA","n":small_n,"e":"AQAB"})).unwrap_err();
        assert!(err.0.contains("1024 bits"), "{err}");
        let big_n = URL_SAFE_NO_PAD.encode([0xffu8; 256]);
        assert!(validate_public_jwk(&json!({"kty":"RSA","n":big_n,"e":"AQAB"})).is_ok());
        let err =
            validate_public_jwk(&json!({"kty":"RSA","n":big_n,"e":"AQAB","d":"AA"})).unwrap_err();
        assert!(err.0.contains("private"), "{err}");
        let err = validate_public_jwk(&json!({"kty":"oct","k":"AA"})).unwrap_err();
        assert!(err.0.contains("private"), "{err}");
        let err = validate_public_jwk(&json!({"kty":"RSA","n":big_n,"e":"AQAB","alg":"HS256"}))
            .unwrap_err();
        assert!(err.0.contains("HS256"), "{err}");
    }
}
