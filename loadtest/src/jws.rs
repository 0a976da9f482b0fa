//! Just enough JWS for the simulators: split, decode, verify ES256 (raw or DER) and RS256.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// A decoded compact JWS.
pub struct Jws {
    pub header: Value,
    pub claims: Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS; `None` when malformed.
pub fn parse(token: &str) -> Option<Jws> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |segment: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?).ok()
    };
    Some(Jws {
        header: decode(h)?,
        claims: decode(c)?,
        signing_input: format!("{h}.{c}"),
        signature: URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?,
    })
}

/// Verifies an ES256 signature, accepting raw R‖S and DER (as APNs does).
pub fn verify_es256(jws: &Jws, key: &p256::ecdsa::VerifyingKey) -> bool {
    use p256::ecdsa::signature::Verifier;
    let signature = p256::ecdsa::Signature::from_slice(&jws.signature)
        .or_else(|_| p256::ecdsa::Signature::from_der(&jws.signature));
    match signature {
        Ok(signature) => key.verify(jws.signing_input.as_bytes(), &signature).is_ok(),
        Err(_) => false,
    }
}

/// Verifies an RS256 signature.
pub fn verify_rs256(jws: &Jws, key: &rsa::RsaPublicKey) -> bool {
    use rsa::signature::Verifier;
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone());
    match rsa::pkcs1v15::Signature::try_from(jws.signature.as_slice()) {
        Ok(signature) => verifier
            .verify(jws.signing_input.as_bytes(), &signature)
            .is_ok(),
        Err(_) => false,
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Signs a compact JWS with ES256 (raw R‖S), for clients of the simulators.
pub fn sign_es256(key: &p256::ecdsa::SigningKey, header: &Value, claims: &Value) -> String {
    use p256::ecdsa::signature::Signer;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// Signs a compact JWS with RS256.
pub fn sign_rs256(key: &rsa::RsaPrivateKey, header: &Value, claims: &Value) -> String {
    use rsa::signature::{SignatureEncoding, Signer};
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature =
        rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone()).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}
