//! Notifier (auth server) JWTs: `Authorization: Bearer <JWT>` signed by a key registered
//! for the notifier, scoped to its app.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sha2::Digest;

use super::cache::{NotifierCache, VerifiedToken, VerifiedTokens};
pub use super::jwks::{FetchError, JwksCache};
use super::replay::{ReplayCache, ReplayError};
use super::{accepted_alg, now_seconds, numeric_claim, parse_jwt, verify_signature, AuthError};
use crate::keys::ALLOWED_ALGS;
use crate::store::{Notifier, Store, StoreError};
use crate::tls::ClientCertificate;

/// A client-certificate binding that cannot be used, or a certificate it refuses: why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BindingError(pub String);

impl From<String> for BindingError {
    fn from(message: String) -> Self {
        BindingError(message)
    }
}

impl From<&str> for BindingError {
    fn from(message: &str) -> Self {
        BindingError(message.to_owned())
    }
}

/// Why a notifier's request is refused (or could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum NotifierAuthError {
    /// The token or certificate does not prove this notifier: 401, with why.
    #[error("{0}")]
    Unauthorized(String),
    /// The notifier lacks a scope the call needs: 403.
    #[error("{0}")]
    MissingScope(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A stored certificate binding that does not parse.
    #[error("stored certificate binding unreadable: {0}")]
    Binding(String),
}

fn unauthorized(message: impl Into<String>) -> NotifierAuthError {
    NotifierAuthError::Unauthorized(message.into())
}

/// The rules a notifier token is held to (from the configuration).
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// The `aud` every token must name.
    pub audience: String,
    pub clock_skew: Duration,
    /// Longest `exp - now` accepted of a single-use token.
    pub max_lifetime: Duration,
}

/// Longest `exp - now` of a token a `token_reuse` notifier may reuse: APNs's hour.
pub const REUSABLE_LIFETIME: Duration = Duration::from_secs(3600);

/// Authenticates notifiers: their registered keys (inline or fetched), the
/// token rules, single use of each `jti` (or reuse until `exp` for notifiers
/// that chose it), certificate binding.
pub struct NotifierVerifier {
    pub store: Arc<dyn Store>,
    pub jwks: JwksCache,
    pub replay: ReplayCache,
    pub rules: TokenRules,
    /// Notifiers as last read (at most `cache::NOTIFIER_TTL` ago).
    pub notifiers: NotifierCache,
    /// Reusable tokens already verified.
    pub verified: VerifiedTokens,
}

/// An authenticated notifier with its granted scopes.
pub struct NotifierAuth {
    pub notifier: Notifier,
    pub app_id: String,
    /// The caller's address, for the audit log.
    pub source: Option<String>,
    scopes: Vec<String>,
}

/// A notifier's client-certificate binding: its JWTs are accepted only over a
/// TLS connection presenting a certificate with this key, or issued by this CA.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertBinding {
    /// SHA-256 of the client certificate's SubjectPublicKeyInfo, base64 (standard or URL-safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// PEM of the CA(s) that must have issued the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl CertBinding {
    /// Checks the binding is usable; returns it normalized (pin as standard base64).
    pub fn validate(self) -> Result<Self, BindingError> {
        match (&self.spki_sha256, &self.ca) {
            (Some(pin), None) => {
                let bytes = decode_b64(pin)
                    .filter(|b| b.len() == 32)
                    .ok_or("`spki_sha256` must be the base64 of a 32-byte SHA-256 digest")?;
                Ok(CertBinding {
                    spki_sha256: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                    ca: None,
                })
            }
            (None, Some(pem)) => {
                ca_roots(pem)?;
                Ok(self)
            }
            _ => Err("give exactly one of `spki_sha256` and `ca`".into()),
        }
    }

    /// Whether `peer` satisfies the binding.
    fn admits(&self, peer: &ClientCertificate) -> Result<(), BindingError> {
        if let Some(pin) = &self.spki_sha256 {
            let want = decode_b64(pin).unwrap_or_default();
            return match peer.spki_sha256() {
                Some(got) if bool::from(subtle::ConstantTimeEq::ct_eq(&got[..], &want[..])) => {
                    Ok(())
                }
                _ => {
                    Err("the client certificate's key is not the one bound to this notifier".into())
                }
            };
        }
        let pem = self.ca.as_deref().unwrap_or("");
        let roots = ca_roots(pem)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .map_err(|e| format!("the bound CA cannot verify: {e}"))?;
        verifier
            .verify_client_cert(
                peer.leaf(),
                &peer.0[1..],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| {
                BindingError(format!(
                    "the client certificate is not valid under the bound CA: {e}"
                ))
            })
    }
}

fn decode_b64(value: &str) -> Option<Vec<u8>> {
    let value = value.trim().trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
        .ok()
}

fn ca_roots(pem: &str) -> Result<rustls::RootCertStore, BindingError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("`ca`: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("`ca`: not a usable CA certificate ({e})"))?;
    }
    if roots.is_empty() {
        return Err("`ca` holds no PEM certificate".into());
    }
    Ok(roots)
}

/// Certificate-bound tokens: a notifier bound to a client certificate, or a JWT
/// with `cnf.x5t#S256` (RFC 8705), needs the matching certificate on the connection.
fn check_certificate(
    notifier: &Notifier,
    x5t: Option<&str>,
    peer: Option<&ClientCertificate>,
) -> Result<(), NotifierAuthError> {
    let binding = match notifier.client_cert.as_deref() {
        Some(json) => Some(
            serde_json::from_str::<CertBinding>(json)
                .map_err(|e| NotifierAuthError::Binding(e.to_string()))?,
        ),
        None => None,
    };
    if x5t.is_none() && binding.is_none() {
        return Ok(());
    }
    let peer = peer.ok_or_else(|| {
        unauthorized(
            "this notifier's tokens are bound to a client certificate; present it over TLS",
        )
    })?;
    if let Some(x5t) = x5t {
        let want = decode_b64(x5t).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &peer.thumbprint()[..],
            &want[..],
        )) {
            return Err(unauthorized(
                "`cnf.x5t#S256` does not match the client certificate",
            ));
        }
    }
    if let Some(binding) = binding {
        binding
            .admits(peer)
            .map_err(|e| NotifierAuthError::Unauthorized(e.0))?;
    }
    Ok(())
}

impl NotifierAuth {
    /// The scopes both the notifier holds and the token asked for.
    fn granted(app_id: &str, notifier: Notifier, token_scopes: &[String]) -> Self {
        let scopes = notifier
            .scopes
            .split_whitespace()
            .filter(|s| token_scopes.iter().any(|t| t == s))
            .map(str::to_owned)
            .collect();
        NotifierAuth {
            app_id: app_id.to_owned(),
            notifier,
            source: None,
            scopes,
        }
    }

    /// A notifier as if its token had been verified with `scopes` (unit tests
    /// of the components behind authentication).
    #[cfg(test)]
    pub(crate) fn verified(notifier: Notifier, scopes: &[&str]) -> Self {
        NotifierAuth {
            app_id: notifier.app_id.clone(),
            notifier,
            source: None,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Refuses (403) unless both the notifier and its token hold `scope`.
    pub fn require(&self, scope: &str) -> Result<(), NotifierAuthError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(NotifierAuthError::MissingScope(format!(
                "this call needs the `{scope}` scope"
            )))
        }
    }
}

impl NotifierVerifier {
    pub fn new(
        store: Arc<dyn Store>,
        jwks: JwksCache,
        replay: ReplayCache,
        rules: TokenRules,
    ) -> Self {
        NotifierVerifier {
            store,
            jwks,
            replay,
            rules,
            notifiers: NotifierCache::default(),
            verified: VerifiedTokens::default(),
        }
    }

    /// The notifier `id` of `app_id`, read at most once a second.
    async fn notifier(&self, app_id: &str, id: &str) -> Result<Option<Notifier>, StoreError> {
        if let Some(known) = self.notifiers.get(app_id, id) {
            return Ok(known);
        }
        let notifier = self.store.get_notifier(app_id, id).await?;
        self.notifiers.put(app_id, id, notifier.clone());
        Ok(notifier)
    }

    /// Verifies a notifier JWT for `app_id`.
    pub async fn authenticate(
        &self,
        app_id: &str,
        token: &str,
        peer: Option<&ClientCertificate>,
    ) -> Result<NotifierAuth, NotifierAuthError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.verified.get(&digest) {
            if let Some(auth) = self.reuse(app_id, &digest, known, peer).await? {
                return Ok(auth);
            }
        }
        let refused = |e: AuthError| NotifierAuthError::Unauthorized(e.0);
        let jwt = parse_jwt(token).map_err(refused)?;
        let alg = accepted_alg(&jwt.header, ALLOWED_ALGS).map_err(refused)?;
        let iss = jwt.claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss.is_empty() {
            return Err(unauthorized("the JWT has no `iss` (the notifier id)"));
        }
        if iss.len() > 128 || !crate::auth::storable_text(iss) {
            return Err(unauthorized(
                "`iss` is not a notifier id (at most 128 characters, no control characters)",
            ));
        }
        let notifier = self
            .notifier(app_id, iss)
            .await?
            .ok_or_else(|| unauthorized(format!("`iss` `{iss}` is not a notifier of this app")))?;
        let kid = jwt.header.get("kid").and_then(Value::as_str);
        let key = self.jwks.key_for(&notifier, kid).await.map_err(refused)?;
        verify_signature(&jwt, alg, &key).map_err(refused)?;
        let claims = &jwt.claims;
        let x5t = claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .map(|v| v.as_str().unwrap_or(""));
        check_certificate(&notifier, x5t, peer)?;

        let rules = &self.rules;
        let now = now_seconds();
        let skew = rules.clock_skew.as_secs() as i64;
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == &rules.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&rules.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(unauthorized(format!("`aud` must be `{}`", rules.audience)));
        }
        let exp =
            numeric_claim(claims, "exp").ok_or_else(|| unauthorized("the JWT has no `exp`"))?;
        if exp + skew < now {
            return Err(unauthorized("the JWT has expired"));
        }
        let lifetime = if notifier.token_reuse {
            REUSABLE_LIFETIME
        } else {
            rules.max_lifetime
        };
        if exp - now > lifetime.as_secs() as i64 + skew {
            return Err(unauthorized(format!(
                "`exp` is more than {}s ahead; use short-lived tokens",
                lifetime.as_secs()
            )));
        }
        let iat =
            numeric_claim(claims, "iat").ok_or_else(|| unauthorized("the JWT has no `iat`"))?;
        if iat - skew > now {
            return Err(unauthorized("`iat` is in the future"));
        }
        let jti = claims.get("jti").and_then(Value::as_str);
        let jti_ok =
            |jti: &str| !jti.is_empty() && jti.len() <= 256 && crate::auth::storable_text(jti);
        let token_scopes: Vec<String> = claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if notifier.token_reuse {
            // Reuse until `exp`: `jti` is optional and not remembered.
            if jti.is_some_and(|j| !jti_ok(j)) {
                return Err(unauthorized(
                    "`jti`, when given, must be 1 to 256 characters, no control characters",
                ));
            }
            let verified = VerifiedToken {
                app_id: app_id.to_owned(),
                notifier_id: notifier.id.clone(),
                exp: exp + skew,
                scopes: token_scopes.clone(),
                x5t: x5t.map(str::to_owned),
            };
            self.verified.put(digest, verified, now);
        } else {
            let jti = jti.filter(|j| jti_ok(j)).ok_or_else(|| {
                unauthorized("the JWT needs a `jti` of 1 to 256 characters, no control characters")
            })?;
            let replay_key = format!("jwt:{}:{jti}", notifier.id);
            if !self
                .replay
                .first_use(&replay_key, (exp + skew + 1) * 1000)
                .await?
            {
                return Err(unauthorized("the JWT's `jti` was already used"));
            }
        }
        Ok(NotifierAuth::granted(app_id, notifier, &token_scopes))
    }

    /// A reusable token verified before: accepted while it has not expired and
    /// its notifier still exists and still reuses tokens. `None`: verify it afresh.
    async fn reuse(
        &self,
        app_id: &str,
        digest: &[u8; 32],
        known: VerifiedToken,
        peer: Option<&ClientCertificate>,
    ) -> Result<Option<NotifierAuth>, NotifierAuthError> {
        if known.app_id != app_id {
            return Ok(None);
        }
        if known.exp < now_seconds() {
            self.verified.forget(digest);
            return Err(unauthorized("the JWT has expired"));
        }
        match self.notifier(app_id, &known.notifier_id).await? {
            Some(notifier) if notifier.token_reuse => {
                check_certificate(&notifier, known.x5t.as_deref(), peer)?;
                Ok(Some(NotifierAuth::granted(app_id, notifier, &known.scopes)))
            }
            _ => {
                self.verified.forget(digest);
                Ok(None)
            }
        }
    }
}
