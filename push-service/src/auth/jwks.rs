//! Notifier keys: inline JWKS from the store, or JWKS URLs fetched under the
//! outbound policy and cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use super::{fail, AuthError};
use crate::keys::validate_jwks;
use crate::store::Notifier;

/// Why a JWKS URL gave no key set (one fixed sentence reaches callers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

impl From<String> for FetchError {
    fn from(message: String) -> Self {
        FetchError(message)
    }
}

/// Notifier keys: static JWKS from the store, or JWKS URLs fetched and cached.
/// A URL is fetched at most once per [`JWKS_MIN_REFRESH`], whatever the outcome
/// (a failure is remembered for that long too), one fetch at a time; the body is
/// read in chunks and dropped past [`JWKS_MAX_BYTES`]; the fetch follows the
/// outbound policy (https, nothing inside the network).
#[derive(Clone)]
pub struct JwksCache {
    http: Option<reqwest::Client>,
    policy: crate::outbound::FetchPolicy,
    fetched: Arc<Mutex<HashMap<String, Arc<Mutex<UrlState>>>>>,
}

/// What is known of one JWKS URL.
#[derive(Default)]
struct UrlState {
    /// The last good JWKS and when it was fetched.
    good: Option<(Instant, Value)>,
    /// The last fetch, good or failed.
    attempted: Option<Instant>,
    /// Why the last fetch failed (for the log), when it did.
    failed: Option<String>,
}

/// How long a fetched JWKS is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// A URL is fetched at most this often (an unknown `kid`, a failure).
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
const JWKS_MAX_BYTES: usize = 64 * 1024;
/// What a caller is told when the keys cannot be had: never what the remote said.
const UNAVAILABLE: &str = "the notifier's keys (jwks_url) cannot be fetched";

impl JwksCache {
    pub fn new(policy: &crate::outbound::FetchPolicy) -> Self {
        JwksCache {
            http: policy.client(Duration::from_secs(5)).ok(),
            policy: policy.clone(),
            fetched: Arc::default(),
        }
    }

    /// The notifier's key named `kid` (or its only key when `kid` is absent).
    pub async fn key_for(
        &self,
        notifier: &Notifier,
        kid: Option<&str>,
    ) -> Result<Value, AuthError> {
        if let Some(jwks) = &notifier.jwks {
            let jwks: Value = serde_json::from_str(jwks)
                .map_err(|_| AuthError("stored JWKS unreadable".into()))?;
            return pick(&jwks, kid);
        }
        let url = notifier
            .jwks_url
            .as_deref()
            .ok_or_else(|| AuthError("the notifier has no keys".into()))?;
        let entry = {
            let mut fetched = self.fetched.lock().await;
            if fetched.len() > 10_000 {
                fetched.clear();
            }
            fetched.entry(url.to_owned()).or_default().clone()
        };
        // One fetch per URL at a time: the others wait for it and use its result.
        let mut known = entry.lock().await;
        let recent = known
            .attempted
            .is_some_and(|at| at.elapsed() < JWKS_MIN_REFRESH);
        if let Some((at, jwks)) = &known.good {
            match pick(jwks, kid) {
                Ok(key) if at.elapsed() < JWKS_TTL => return Ok(key),
                // An unknown kid refetches (key rotation), at most once per JWKS_MIN_REFRESH.
                Err(e) if recent => return Err(e),
                _ => {}
            }
        }
        if recent {
            return Err(AuthError(UNAVAILABLE.into()));
        }
        known.attempted = Some(Instant::now());
        match self.fetch(url).await {
            Ok(jwks) => {
                known.good = Some((Instant::now(), jwks.clone()));
                known.failed = None;
                pick(&jwks, kid)
            }
            Err(why) => {
                tracing::warn!(notifier = %notifier.id, reason = %why, "JWKS fetch failed; not tried again for 10 s");
                known.failed = Some(why.0);
                // A JWKS fetched before still serves until its TTL is long past.
                match &known.good {
                    Some((at, jwks)) if at.elapsed() < JWKS_TTL * 12 => pick(jwks, kid),
                    _ => Err(AuthError(UNAVAILABLE.into())),
                }
            }
        }
    }

    /// Fetches and checks a JWKS; the error is for the log only.
    async fn fetch(&self, url: &str) -> Result<Value, FetchError> {
        self.policy.check_url(url).map_err(|e| e.to_string())?;
        let http = self
            .http
            .as_ref()
            .ok_or_else(|| FetchError("no HTTP client".into()))?;
        let mut response = http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("network: {}", crate::outbound::network_cause(&e)))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()).into());
        }
        if response
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
        {
            return Err(format!("larger than {JWKS_MAX_BYTES} bytes").into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body: {}", crate::outbound::network_cause(&e)))?
        {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(format!("larger than {JWKS_MAX_BYTES} bytes").into());
            }
            body.extend_from_slice(&chunk);
        }
        let jwks: Value = serde_json::from_slice(&body).map_err(|_| "not JSON".to_owned())?;
        validate_jwks(&jwks).map_err(|e| format!("not a valid JWKS: {e}"))?;
        Ok(jwks)
    }
}

fn pick(jwks: &Value, kid: Option<&str>) -> Result<Value, AuthError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let key = match kid {
        Some(kid) => keys
            .into_iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
        None if keys.len() == 1 => keys.into_iter().next(),
        None => return fail("the JWT has no `kid`, and the notifier has several keys"),
    };
    key.ok_or_else(|| AuthError(format!("unknown `kid` `{}`", kid.unwrap_or(""))))
}
