//! FCM HTTP v1 provider: an OAuth token from the service account (JWT-bearer grant
//! to its `token_uri`), cached and refreshed before expiry; HTTP/2 sends.

pub mod message;

use crate::delivery::ProviderKind;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

use super::http::{client, retry_after, with_path, CredentialSource};
use super::wire::{self, Wire};
use super::{Delivery, Outcome, Provider};
use crate::config::ProviderSettings;
use crate::outbound::network_cause;

/// The OAuth scope of FCM sends.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// An access token is replaced when less than this remains (google-auth uses 3 min 45 s).
pub const REFRESH_MARGIN_SECONDS: i64 = 300;
const RECHECK: Duration = Duration::from_secs(30);
/// OAuth 2.0 token error codes (RFC 6749 §5.2), the only words of a token
/// endpoint's answer repeated in a reason.
const OAUTH_ERRORS: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

/// Whether an access token expiring at `expires_at` must be replaced at `now`.
pub fn needs_new_access_token(expires_at: i64, now: i64) -> bool {
    expires_at - now < REFRESH_MARGIN_SECONDS
}

#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: String,
}

struct FcmClient {
    /// The token endpoint's client, and the sends' when FCM's address is
    /// `http://` or its server did not agree to HTTP/2.
    http: reqwest::Client,
    /// Sends over one HTTP/2 connection (`https://` addresses).
    wire: Option<Wire>,
    /// The server chose HTTP/1.1: sends go through `http` from now on.
    http1: std::sync::atomic::AtomicBool,
    /// `…/v1/projects/{project}/messages:send`, parsed once.
    send_url: reqwest::Url,
    account: ServiceAccount,
    key: EncodingKey,
    /// (access token, expiry in seconds since the epoch)
    token: tokio::sync::Mutex<Option<(Arc<AccessToken>, i64)>>,
    updated_at: i64,
    checked: std::sync::Mutex<Instant>,
    /// A credential error was answered: look at the stored credential on the next use.
    stale: std::sync::atomic::AtomicBool,
}

/// An OAuth access token and its `authorization` header value, made once
/// when the token is granted (it lives about an hour) and shared by sends.
struct AccessToken {
    text: Box<str>,
    bearer: http::HeaderValue,
}

/// The FCM provider of a node.
pub struct FcmProvider {
    settings: ProviderSettings,
    source: CredentialSource,
    clients: tokio::sync::Mutex<HashMap<String, Arc<FcmClient>>>,
}

impl FcmProvider {
    pub fn new(settings: ProviderSettings, source: CredentialSource) -> Self {
        FcmProvider {
            settings,
            source,
            clients: tokio::sync::Mutex::default(),
        }
    }

    async fn client(&self, app_id: &str) -> Result<Arc<FcmClient>, Outcome> {
        let mut clients = self.clients.lock().await;
        if let Some(existing) = clients.get(app_id) {
            let stale = existing.stale.load(std::sync::atomic::Ordering::Relaxed);
            let mut checked = existing.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < RECHECK && !stale {
                return Ok(existing.clone());
            }
            *checked = Instant::now();
        }
        let loaded = self.source.load(app_id, ProviderKind::Fcm).await?;
        let Some((record, secret)) = loaded else {
            clients.remove(app_id);
            return Err(Outcome::CredentialError(
                "fcm: the app has no FCM credential".into(),
            ));
        };
        if let Some(existing) = clients.get(app_id) {
            if existing.updated_at == record.updated_at {
                existing
                    .stale
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                return Ok(existing.clone());
            }
        }
        let account: ServiceAccount = serde_json::from_slice(&secret)
            .map_err(|e| Outcome::CredentialError(format!("fcm: service account: {e}")))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| Outcome::CredentialError(format!("fcm: private key: {e}")))?;
        let send_url = with_path(
            &self.settings.fcm_url,
            &["v1", "projects", &account.project_id, "messages:send"],
        );
        let wire = match self.settings.fcm_url.scheme() {
            "https" => {
                let tls =
                    wire::tls_config(self.settings.ca_pem.as_deref(), None, &[b"h2", b"http/1.1"])
                        .map_err(|e| Outcome::CredentialError(format!("fcm: {e}")))?;
                let wire = Wire::new(
                    &self.settings.fcm_url,
                    tls,
                    self.settings.timeout,
                    self.settings.proxy.as_ref(),
                )
                .map_err(|e| Outcome::CredentialError(format!("fcm: {e}")))?;
                Some(wire)
            }
            _ => None,
        };
        let built = Arc::new(FcmClient {
            http: client(&self.settings).map_err(Outcome::from)?,
            wire,
            http1: std::sync::atomic::AtomicBool::new(false),
            send_url,
            account,
            key,
            token: tokio::sync::Mutex::new(None),
            updated_at: record.updated_at,
            checked: std::sync::Mutex::new(Instant::now()),
            stale: std::sync::atomic::AtomicBool::new(false),
        });
        clients.insert(app_id.to_owned(), built.clone());
        Ok(built)
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    /// `refused`: the token FCM just answered `401` to. It is replaced only if it is
    /// still the cached one, so sends refused at the same moment cause one grant
    /// (the lock makes the others wait for it, then they take the new token).
    async fn access_token(
        &self,
        client: &FcmClient,
        refused: Option<&str>,
    ) -> Result<Arc<AccessToken>, Outcome> {
        let mut cached = client.token.lock().await;
        let now = crate::ids::now_seconds();
        if let Some((token, expires_at)) = cached.as_ref() {
            if refused != Some(&*token.text) && !needs_new_access_token(*expires_at, now) {
                return Ok(token.clone());
            }
        }
        // The token endpoint is the service account's: Google's, or one the
        // operator allowed, and never an address inside the network.
        let allowed = self
            .settings
            .fetch
            .check_token_uri(&client.account.token_uri)
            .await;
        if let Err(e) = allowed {
            return Err(Outcome::CredentialError(format!("fcm: token_uri {e}")));
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = client.account.private_key_id.clone();
        let claims = serde_json::json!({
            "iss": client.account.client_email, "scope": SCOPE, "aud": client.account.token_uri,
            "iat": now, "exp": now + 3600,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &client.key)
            .map_err(|e| Outcome::CredentialError(format!("fcm: signing the grant: {e}")))?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let response = client
            .http
            .post(&client.account.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| Outcome::Retry {
                reason: format!("fcm: token endpoint: network: {}", network_cause(&e)),
                after: None,
            })?;
        let status = response.status();
        let after = retry_after(response.headers());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(Outcome::Retry {
                reason: format!("fcm: token endpoint {status}"),
                after,
            });
        }
        let (Some(token), Some(expires_in)) =
            (body["access_token"].as_str(), body["expires_in"].as_i64())
        else {
            // What the endpoint wrote is not repeated: only its status and, when it
            // is one of OAuth's own codes (RFC 6749 §5.2), the code.
            let code = body["error"]
                .as_str()
                .filter(|c| OAUTH_ERRORS.contains(c))
                .unwrap_or("no OAuth error code");
            return Err(Outcome::CredentialError(format!(
                "fcm: the token endpoint refused the service account ({status}, {code})"
            )));
        };
        let bearer = wire::bearer(token).map_err(|_| {
            Outcome::CredentialError(format!(
                "fcm: the token endpoint's access token is not a header value ({status})"
            ))
        })?;
        metrics::counter!(crate::telemetry::names::PROVIDER_TOKENS, "provider" => "fcm")
            .increment(1);
        let token = Arc::new(AccessToken {
            text: token.into(),
            bearer,
        });
        *cached = Some((token.clone(), now + expires_in));
        Ok(token)
    }

    /// One send. Answers (status, body, Retry-After, the access token used).
    async fn post(
        &self,
        client: &FcmClient,
        delivery: &Delivery<'_>,
        refused: Option<&str>,
    ) -> Result<(u16, serde_json::Value, Option<Duration>, Arc<AccessToken>), Outcome> {
        let access = self.access_token(client, refused).await?;
        let ttl = if delivery.now_or_never() {
            0
        } else {
            ((delivery.expires_at - crate::ids::now_millis()) / 1000).max(1)
        };
        let body = bytes::Bytes::from(message::body(
            delivery.content,
            delivery.token.unwrap_or_default(),
            ttl,
            delivery.inbox(),
        ));
        let (status, after, answer) = match &client.wire {
            Some(wire) if !client.http1.load(std::sync::atomic::Ordering::Relaxed) => {
                match self.post_h2(client, wire, &access, body.clone()).await {
                    Ok(answer) => answer,
                    Err(e) if e.no_http2() => {
                        client
                            .http1
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        self.post_http1(client, &access, body).await?
                    }
                    Err(e) => {
                        return Err(Outcome::Retry {
                            reason: format!("fcm: network: {e}"),
                            after: None,
                        })
                    }
                }
            }
            _ => self.post_http1(client, &access, body).await?,
        };
        // A success's body (the message's name) is read to its end but not
        // parsed: only an error's says something.
        let body = if status == 200 {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&answer).unwrap_or_default()
        };
        Ok((status, body, after, access))
    }
}

impl FcmProvider {
    /// A send on the HTTP/2 connection: (status, Retry-After, body).
    async fn post_h2(
        &self,
        client: &FcmClient,
        wire: &Wire,
        access: &AccessToken,
        body: bytes::Bytes,
    ) -> Result<(u16, Option<Duration>, bytes::Bytes), wire::WireError> {
        let headers = wire::json_with_authorization(access.bearer.clone());
        let answer = wire.post(client.send_url.path(), headers, body).await?;
        Ok((answer.status, retry_after(&answer.headers), answer.body))
    }

    /// A send through the HTTP/1.1 client: (status, Retry-After, body).
    async fn post_http1(
        &self,
        client: &FcmClient,
        access: &AccessToken,
        body: bytes::Bytes,
    ) -> Result<(u16, Option<Duration>, bytes::Bytes), Outcome> {
        let response = client
            .http
            .post(client.send_url.clone())
            .header(http::header::AUTHORIZATION, access.bearer.clone())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Outcome::Retry {
                reason: format!("fcm: network: {}", network_cause(&e)),
                after: None,
            })?;
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        Ok((status, after, body))
    }
}

#[async_trait]
impl Provider for FcmProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Fcm
    }

    async fn send(&self, delivery: &Delivery<'_>) -> Outcome {
        let client = match self.client(delivery.app_id).await {
            Ok(client) => client,
            Err(outcome) => return outcome,
        };
        let mut answer = match self.post(&client, delivery, None).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let our_token_refused = answer.0 == 401
            && answer.1["error"]["details"]
                .as_array()
                .is_none_or(|d| d.is_empty());
        if our_token_refused {
            // The access token was refused: get a new one, once.
            let refused = answer.3.clone();
            answer = match self.post(&client, delivery, Some(&refused.text)).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
        }
        let outcome = message::outcome(answer.0, &answer.1, answer.2);
        if let Outcome::CredentialError(_) = outcome {
            // Look at the stored credential on the next try: the operator may have
            // replaced it. The client stays if it did not change.
            client
                .stale
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_are_replaced_before_they_expire() {
        assert!(!needs_new_access_token(3600, 0));
        assert!(!needs_new_access_token(3600, 3600 - REFRESH_MARGIN_SECONDS));
        assert!(needs_new_access_token(
            3600,
            3600 - REFRESH_MARGIN_SECONDS + 1
        ));
        assert!(needs_new_access_token(3600, 4000));
    }
}
