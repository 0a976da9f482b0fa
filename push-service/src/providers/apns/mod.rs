//! APNs provider: HTTP/2 to Apple (or the simulator), token auth (ES256 provider JWT,
//! reused and refreshed between 20 and 60 minutes) or certificate auth (`.p12`).

pub mod message;

use crate::delivery::ProviderKind;
use crate::providers::SetupError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

use super::http::{retry_after, with_path, CredentialSource};
use super::wire::{self, Wire};
use super::{Delivery, Outcome, Provider};
use crate::config::ProviderSettings;
use crate::credentials::{ApnsCredentialInfo, ApnsSecret};

/// A provider JWT is replaced after this long: inside Apple's 20–60 minute window.
pub const TOKEN_REFRESH_AFTER_SECONDS: i64 = 50 * 60;
/// A new token is never minted sooner than this after the last (Apple's 20-minute rule),
/// except when APNs itself says the token expired.
pub const TOKEN_MIN_AGE_SECONDS: i64 = 20 * 60;
/// How often a cached client checks whether its credential changed.
const RECHECK: Duration = Duration::from_secs(30);

/// Whether a provider JWT issued at `issued_at` must be replaced at `now`:
/// when it is old enough to refresh, when APNs said it expired, or when APNs
/// refused it (`InvalidProviderToken`) and Apple's 20-minute floor has passed.
pub fn needs_new_token(issued_at: i64, now: i64, expired_by_apns: bool, refused: bool) -> bool {
    let age = now - issued_at;
    age >= TOKEN_REFRESH_AFTER_SECONDS
        || (expired_by_apns && age >= 0)
        || (refused && age >= TOKEN_MIN_AGE_SECONDS)
}

/// The provider token of one signing key, shared by every client built from it:
/// rebuilding a client (a replaced credential with the same key) keeps the token.
struct TokenAuth {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<Minted>>,
}

struct Minted {
    token: Arc<str>,
    /// `bearer <token>`, made once per token (a header value is checked and copied).
    bearer: http::HeaderValue,
    issued_at: i64,
    /// APNs answered `InvalidProviderToken` to it.
    refused: bool,
}

impl TokenAuth {
    /// The token to send. `expired`: the token APNs just answered
    /// `ExpiredProviderToken` to; a new one is minted only if that is still the
    /// current one (of two requests told so at once, one mints).
    fn jwt(&self, expired: Option<&str>) -> Result<(Arc<str>, http::HeaderValue), SetupError> {
        let now = crate::ids::now_seconds();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(minted) = current.as_ref() {
            let told_expired = expired == Some(&*minted.token);
            if !needs_new_token(minted.issued_at, now, told_expired, minted.refused) {
                return Ok((minted.token.clone(), minted.bearer.clone()));
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = None;
        let claims = serde_json::json!({"iss": self.team_id, "iat": now});
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("apns: signing the provider token: {e}"))?;
        metrics::counter!(crate::telemetry::names::PROVIDER_TOKENS, "provider" => "apns")
            .increment(1);
        let mut bearer = http::HeaderValue::try_from(format!("bearer {token}"))
            .map_err(|_| "apns: the provider token is not a header value".to_owned())?;
        bearer.set_sensitive(true);
        let token: Arc<str> = token.into();
        *current = Some(Minted {
            token: token.clone(),
            bearer: bearer.clone(),
            issued_at: now,
            refused: false,
        });
        Ok((token, bearer))
    }

    /// APNs refused `token` (`InvalidProviderToken`): replace it once the 20-minute floor allows.
    fn refused(&self, token: &str) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(minted) = current.as_mut().filter(|m| &*m.token == token) {
            minted.refused = true;
        }
    }
}

/// Connections and auth of one app's APNs credential.
struct ApnsClient {
    /// HTTP/2 connections to the production and the sandbox host, each
    /// opened on its first request.
    production: Vec<Wire>,
    sandbox: Vec<Wire>,
    next: AtomicUsize,
    bundle: String,
    auth: Option<Arc<TokenAuth>>,
    updated_at: i64,
    checked: Mutex<Instant>,
    /// A credential error was answered: look at the stored credential on the next use.
    stale: AtomicBool,
}

/// The APNs provider of a node.
pub struct ApnsProvider {
    settings: ProviderSettings,
    source: CredentialSource,
    clients: tokio::sync::Mutex<HashMap<String, Arc<ApnsClient>>>,
    /// Provider tokens by signing key (team, key id and key), outliving clients.
    tokens: Mutex<HashMap<String, Arc<TokenAuth>>>,
}

impl ApnsProvider {
    pub fn new(settings: ProviderSettings, source: CredentialSource) -> Self {
        ApnsProvider {
            settings,
            source,
            clients: tokio::sync::Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// The app's client, built on first use and rebuilt when its credential changes.
    async fn client(&self, app_id: &str) -> Result<Arc<ApnsClient>, Outcome> {
        let mut clients = self.clients.lock().await;
        if let Some(existing) = clients.get(app_id) {
            let fresh = {
                let mut checked = existing.checked.lock().unwrap_or_else(|p| p.into_inner());
                if checked.elapsed() < RECHECK && !existing.stale.load(Ordering::Relaxed) {
                    true
                } else {
                    *checked = Instant::now();
                    false
                }
            };
            if fresh {
                return Ok(existing.clone());
            }
        }
        let loaded = self.source.load(app_id, ProviderKind::Apns).await?;
        let Some((record, secret)) = loaded else {
            clients.remove(app_id);
            return Err(Outcome::CredentialError(
                "apns: the app has no APNs credential".into(),
            ));
        };
        if let Some(existing) = clients.get(app_id) {
            if existing.updated_at == record.updated_at {
                existing.stale.store(false, Ordering::Relaxed);
                return Ok(existing.clone());
            }
        }
        let built = Arc::new(
            self.build(&record.metadata, &secret, record.updated_at)
                .map_err(Outcome::from)?,
        );
        if let Some(expires_at) = record.expires_at {
            metrics::gauge!(crate::telemetry::names::CREDENTIAL_EXPIRY, "app" => app_id.to_owned(), "provider" => "apns")
                .set(((expires_at - crate::ids::now_millis()) / 1000) as f64);
        }
        clients.insert(app_id.to_owned(), built.clone());
        Ok(built)
    }

    fn build(
        &self,
        metadata: &str,
        secret: &[u8],
        updated_at: i64,
    ) -> Result<ApnsClient, SetupError> {
        let info: ApnsCredentialInfo = serde_json::from_str(metadata).map_err(|e| e.to_string())?;
        let secret: ApnsSecret = serde_json::from_slice(secret).map_err(|e| e.to_string())?;
        let (auth, identity) = match secret {
            ApnsSecret::Token { private_key_pem } => {
                let key_id = info.key_id.clone().unwrap_or_default();
                let team_id = info.team_id.clone().unwrap_or_default();
                let fingerprint = hex::encode(Sha256::digest(
                    format!("{team_id}\n{key_id}\n{private_key_pem}").as_bytes(),
                ));
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                let auth = match tokens.get(&fingerprint) {
                    Some(auth) => auth.clone(),
                    None => {
                        let auth = Arc::new(TokenAuth {
                            key: EncodingKey::from_ec_pem(private_key_pem.as_bytes())
                                .map_err(|e| format!("apns: .p8 unusable: {e}"))?,
                            key_id,
                            team_id,
                            current: Mutex::new(None),
                        });
                        tokens.insert(fingerprint, auth.clone());
                        auth
                    }
                };
                (Some(auth), None)
            }
            ApnsSecret::Certificate { p12_der, password } => {
                (None, Some(identity(&p12_der, &password)?))
            }
        };
        let tls = wire::tls_config(self.settings.ca_pem.as_deref(), identity, &[b"h2"])
            .map_err(|e| SetupError(format!("apns: {e}")))?;
        let wires = |base: &url::Url| {
            (0..self.settings.apns_connections.max(1))
                .map(|_| {
                    Wire::new(
                        base,
                        tls.clone(),
                        self.settings.timeout,
                        self.settings.proxy.as_ref(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ApnsClient {
            production: wires(&self.settings.apns_production_url)?,
            sandbox: wires(&self.settings.apns_sandbox_url)?,
            next: AtomicUsize::new(0),
            bundle: info.topic,
            auth,
            updated_at,
            checked: Mutex::new(Instant::now()),
            stale: AtomicBool::new(false),
        })
    }

    /// One request. Answers (status, reason, Retry-After, the provider token used).
    async fn post(
        &self,
        client: &ApnsClient,
        delivery: &Delivery<'_>,
        expired: Option<&str>,
    ) -> Result<Answer, Outcome> {
        let (base, wires) = match delivery.environment {
            Some("sandbox") => (&self.settings.apns_sandbox_url, &client.sandbox),
            _ => (&self.settings.apns_production_url, &client.production),
        };
        let token = delivery.token.unwrap_or_default();
        let id = message::apns_id(delivery.notification_id, delivery.registration_id);
        let connection = &wires[client.next.fetch_add(1, Ordering::Relaxed) % wires.len()];
        let expiration = if delivery.now_or_never() {
            0
        } else {
            delivery.expires_at / 1000
        };
        let mut headers = message::headers(delivery.content, &client.bundle, expiration, &id)
            .map_err(|e| Outcome::Failed(format!("apns: {e}")))?;
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let jwt = match &client.auth {
            Some(auth) => {
                let (jwt, bearer) = auth.jwt(expired).map_err(Outcome::from)?;
                headers.insert(http::header::AUTHORIZATION, bearer);
                Some(jwt)
            }
            None => None,
        };
        let path = device_path(base, token);
        let body = message::payload_bytes(delivery.content, delivery.inbox());
        let response = connection
            .post(&path, headers, body.into())
            .await
            .map_err(|e| Outcome::Retry {
                reason: format!("apns: network: {e}"),
                after: None,
            })?;
        let status = response.status;
        let after = retry_after(&response.headers);
        if status == 200 {
            return Ok(Answer {
                status,
                reason: String::new(),
                after: None,
                jwt,
            });
        }
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let reason = body["reason"].as_str().unwrap_or("Unknown").to_owned();
        Ok(Answer {
            status,
            reason,
            after,
            jwt,
        })
    }
}

/// An APNs answer, and the provider token the request carried.
struct Answer {
    status: u16,
    reason: String,
    after: Option<Duration>,
    jwt: Option<Arc<str>>,
}

/// The request path of a device token under the base URL's path:
/// `…/3/device/<token>`. A token of letters and digits (as APNs issues them,
/// in hex) is put in as it is; anything else is percent-encoded as a path
/// segment.
fn device_path(base: &reqwest::Url, token: &str) -> String {
    if token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{}/3/device/{token}", base.path().trim_end_matches('/'))
    } else {
        with_path(base, &["3", "device", token]).path().to_owned()
    }
}

/// A TLS client identity from a `.p12`: its key (PKCS #8) and certificate chain.
fn identity(p12: &[u8], password: &str) -> Result<wire::Identity, SetupError> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        p12,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|_| "apns: the .p12 no longer opens".to_owned())?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or("apns: the .p12 holds no key")?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec());
    let chain = chain
        .certs()
        .iter()
        .map(|cert| rustls::pki_types::CertificateDer::from(cert.as_der().to_vec()))
        .collect();
    Ok(wire::Identity {
        chain,
        key: key.into(),
    })
}

#[async_trait]
impl Provider for ApnsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Apns
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
        if answer.status == 403 && answer.reason == "ExpiredProviderToken" {
            // Apple says the token is too old: mint a new one and try once more.
            answer = match self.post(&client, delivery, answer.jwt.as_deref()).await {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
        }
        if answer.reason == "InvalidProviderToken" {
            if let (Some(auth), Some(jwt)) = (&client.auth, &answer.jwt) {
                auth.refused(jwt);
            }
        }
        let suffixed =
            message::topic_for(&client.bundle, &delivery.content.push_type) != client.bundle;
        let outcome = message::outcome(answer.status, &answer.reason, answer.after, suffixed);
        if let Outcome::CredentialError(_) = outcome {
            // Look at the stored credential on the next try: the operator may have
            // replaced it. The client (and its provider token) stays if it did not change.
            client.stale.store(true, Ordering::Relaxed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_p12_becomes_the_connections_client_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["push.example".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("sign");
        let chain = p12_keystore::PrivateKeyChain::new(
            "apns",
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).expect("key der"),
            [p12_keystore::Certificate::from_der(cert.der()).expect("cert der")],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("apns", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let p12 = store.writer("pw").write().expect("p12");

        let opened = identity(&p12, "pw").expect("the .p12 opens");
        assert_eq!(opened.chain.len(), 1);
        assert_eq!(opened.chain[0].as_ref(), cert.der().as_ref());
        let config = wire::tls_config(None, Some(opened), &[b"h2"]).expect("rustls takes the key");
        assert!(config.client_auth_cert_resolver.has_certs());
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(identity(&p12, "wrong").is_err());
    }

    #[test]
    fn device_paths_keep_the_base_path_and_encode_odd_tokens() {
        let table = [
            ("https://api.push.apple.com", "ab12", "/3/device/ab12"),
            ("https://api.push.apple.com/", "AB12", "/3/device/AB12"),
            (
                "https://127.0.0.1:8443/apns/",
                "ab12",
                "/apns/3/device/ab12",
            ),
            (
                "https://127.0.0.1:8443/apns",
                "a b/c",
                "/apns/3/device/a%20b%2Fc",
            ),
        ];
        for (base, token, path) in table {
            let base = reqwest::Url::parse(base).expect("url");
            assert_eq!(device_path(&base, token), path, "{base} {token}");
            assert_eq!(
                device_path(&base, token),
                with_path(&base, &["3", "device", token]).path(),
                "the same as the URL's own segments"
            );
        }
    }

    #[test]
    fn provider_tokens_live_between_20_and_60_minutes() {
        // (age in seconds, APNs said expired, APNs refused it) → mint a new one?
        let table = [
            (0, false, false, false),
            (19 * 60, false, false, false),
            (49 * 60, false, false, false),
            (50 * 60, false, false, true),
            (60, true, false, true),
            (60, false, true, false),
            (19 * 60 + 59, false, true, false),
            (20 * 60, false, true, true),
        ];
        for (age, expired, refused, mint) in table {
            assert_eq!(
                needs_new_token(0, age, expired, refused),
                mint,
                "{age} {expired} {refused}"
            );
        }
        const {
            assert!(
                TOKEN_REFRESH_AFTER_SECONDS >= TOKEN_MIN_AGE_SECONDS
                    && TOKEN_REFRESH_AFTER_SECONDS < 3600
            )
        };
    }
}
