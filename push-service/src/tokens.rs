//! Operator tools: a notifier signing key and short-lived notifier JWTs.

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};

/// Writes a new P-256 key (mode 0600) and returns the public JWKS to register.
/// An existing key file is kept and its JWKS printed again, so running the same
/// command twice gives the same key (never an overwritten one).
pub fn notifier_key(out: &Path, kid: &str) -> anyhow::Result<String> {
    let key = if out.exists() {
        use p256::pkcs8::DecodePrivateKey;
        let pem =
            std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
        p256::SecretKey::from_pkcs8_pem(&pem).with_context(|| {
            format!(
                "{} exists and is not a P-256 key; remove it or choose another --out",
                out.display()
            )
        })?
    } else {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the key")?;
        write_private(out, pem.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
        key
    };
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key.public_key(), false);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(point.x().context("point has x")?),
        "y": URL_SAFE_NO_PAD.encode(point.y().context("point has y")?),
    });
    Ok(serde_json::json!({ "keys": [jwk] }).to_string())
}

/// A notifier JWT: `iss`, `aud`, `iat`, `exp` (now + ttl), a random `jti`, `scope`.
pub fn mint(
    key: &Path,
    notifier: &str,
    scope: &str,
    audience: &str,
    kid: &str,
    ttl: i64,
) -> anyhow::Result<String> {
    let pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let (alg, encoding) = match EncodingKey::from_ec_pem(&pem) {
        Ok(k) if is_ec(&pem) => (Algorithm::ES256, k),
        _ => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&pem)
                .context("the key is neither a P-256 nor an RSA PEM key")?,
        ),
    };
    let now = crate::auth::now_seconds();
    let claims = serde_json::json!({
        "iss": notifier, "aud": audience, "iat": now, "exp": now + ttl,
        "jti": crate::ids::random_token(16), "scope": scope,
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &encoding).context("signing")
}

fn is_ec(pem: &[u8]) -> bool {
    use p256::pkcs8::DecodePrivateKey;
    std::str::from_utf8(pem)
        .ok()
        .is_some_and(|p| p256::SecretKey::from_pkcs8_pem(p).is_ok())
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}

/// Seals standard input to a public encryption JWK (`push-service seal`).
pub fn seal(jwk: &str, cty: Option<&str>) -> anyhow::Result<String> {
    use std::io::Read;
    let jwk: serde_json::Value = serde_json::from_str(jwk).context("`--jwk` is not JSON")?;
    let key = push_jose::PublicKey::from_jwk(&jwk)?;
    let mut plaintext = Vec::new();
    std::io::stdin()
        .read_to_end(&mut plaintext)
        .context("reading standard input")?;
    Ok(push_jose::seal(&key, &plaintext, cty)?)
}
