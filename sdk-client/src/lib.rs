//! Client registration module for push-service.
//!
//! An app embeds this to register its push token with the service, keep it
//! current, and remove it, proving on every call that it holds its device key
//! (DPoP, RFC 9449). Optionally it pins the server's public keys.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sdk_client::Error> {
//! use sdk_client::{Client, DeviceKey, NewRegistration};
//! let key = DeviceKey::generate_rsa(2048)?;          // keep key.to_pkcs8_pem() in the keychain
//! let client = Client::builder("https://push.example.com", key).build()?;
//! let reg = client
//!     .register("app_123", &NewRegistration::apns("a1b2…", "ios"))
//!     .await?;
//! // Later, from the OS token-refresh callback:
//! client.rotate(&reg.id, "c3d4…").await?;
//! # Ok(()) }
//! ```

mod inbox;
mod key;
mod listen;
mod pinning;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

pub use inbox::{
    open_content, push_payload_item, Attachment, Content, Decrypter, EncryptionKey,
    EncryptionPublicKey, InboxItem, SEALED_CTY,
};
pub use key::{
    check_signer, jwk_thumbprint, random_id, signed_dpop_proof, signed_jws, unix_now, DeviceKey,
    RsaAlg, Signer,
};
pub use listen::{Listener, PushEvent};
pub use pinning::{is_pin_mismatch, Pin, PinMismatch};
pub use rustls::pki_types::CertificateDer;

/// A problem+json answer from the service.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// The stable kind URI, e.g. `urn:push-service:problem:invalid-dpop-proof`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default)]
    pub detail: Option<String>,
}

impl Problem {
    /// The kind without its URI prefix (`invalid-dpop-proof`).
    pub fn short_kind(&self) -> &str {
        self.kind.rsplit(':').next().unwrap_or(&self.kind)
    }
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS chain matched none of the pins; nothing was sent.
    #[error("the server's certificate matches none of the pinned keys; nothing was sent")]
    PinMismatch,
    /// The service refused the request.
    #[error("{} {}: {}", .0.status, .0.title, .0.detail.as_deref().unwrap_or(""))]
    Problem(Problem),
    /// Network, TLS or timeout failure (after the retries).
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The service answered something that is not the API.
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    #[error("key: {0}")]
    Key(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The problem's short kind, when the service refused the request.
    pub fn problem_kind(&self) -> Option<&str> {
        match self {
            Error::Problem(p) => Some(p.short_kind()),
            _ => None,
        }
    }
}

/// What to register.
#[derive(Debug, Clone, Serialize)]
pub struct NewRegistration {
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub platform: String,
    /// The public key content is sealed to (see [`NewRegistration::with_encryption_key`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<serde_json::Value>,
    /// Client attestation JWT (sent as `Push-Client-Attestation`), when the app requires one.
    #[serde(skip)]
    pub attestation: Option<String>,
}

impl NewRegistration {
    /// An APNs device token (hex) on an Apple platform, production environment.
    pub fn apns(token: &str, platform: &str) -> Self {
        Self::with("apns", Some(token), platform)
    }
    /// An FCM registration token.
    pub fn fcm(token: &str, platform: &str) -> Self {
        Self::with("fcm", Some(token), platform)
    }
    /// The service's own direct channel (desktop).
    pub fn direct(platform: &str) -> Self {
        Self::with("direct", None, platform)
    }
    fn with(provider: &str, token: Option<&str>, platform: &str) -> Self {
        NewRegistration {
            provider: provider.into(),
            token: token.map(str::to_owned),
            environment: None,
            platform: platform.into(),
            encryption_key: None,
            attestation: None,
        }
    }
    /// Registers the public half of an encryption key: content for this
    /// registration is sealed to it, and only its private half opens it.
    pub fn with_encryption_key(mut self, key: &EncryptionPublicKey) -> Self {
        self.encryption_key = Some(key.to_jwk());
        self
    }
    /// APNs `sandbox` or `production`.
    pub fn environment(mut self, environment: &str) -> Self {
        self.environment = Some(environment.into());
        self
    }
    /// Attaches a client attestation JWT.
    pub fn attestation(mut self, jwt: &str) -> Self {
        self.attestation = Some(jwt.into());
        self
    }
}

/// A registration as the service reports it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct RegistrationInfo {
    pub id: String,
    pub app: String,
    pub provider: String,
    pub platform: String,
    #[serde(default)]
    pub environment: Option<String>,
    pub status: String,
    #[serde(default)]
    pub invalid_reason: Option<String>,
    #[serde(default)]
    pub invalidated_at: Option<String>,
    /// The thumbprint of the registered encryption key, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_thumbprint: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// How failed calls are retried: network errors, 429 and 5xx.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Delay before try `attempt` (1-based retry count): exponential with full jitter,
    /// or the server's `Retry-After` when it gave one (capped at `max_delay`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_delay);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// Builder of a [`Client`].
pub struct ClientBuilder<S: Signer = DeviceKey> {
    base_url: String,
    key: S,
    pins: Vec<Pin>,
    roots: Vec<CertificateDer<'static>>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl<S: Signer + Clone> ClientBuilder<S> {
    /// Pins a public key (SHA-256 of its SPKI); with pins, a chain matching none is refused.
    pub fn pin(mut self, pin: Pin) -> Self {
        self.pins.push(pin);
        self
    }
    /// Trusts an extra root certificate (DER), e.g. a private CA.
    pub fn add_root_certificate(mut self, der: CertificateDer<'static>) -> Self {
        self.roots.push(der);
        self
    }
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Timeout of one HTTP exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    pub fn build(self) -> Result<Client<S>, Error> {
        check_signer(&self.key.alg(), &self.key.public_jwk())?;
        let base = url::Url::parse(&self.base_url)
            .map_err(|e| Error::Config(format!("base URL `{}`: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(
                "the base URL must be http:// or https://".into(),
            ));
        }
        let tls = pinning::tls_config(&self.roots, self.pins)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(self.timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client {
            http,
            base: self.base_url.trim_end_matches('/').to_owned(),
            key: self.key,
            retry: self.retry,
        })
    }
}

/// A device's client of push-service. It signs with a [`DeviceKey`] in
/// memory, or with any [`Signer`] (a key in a platform keystore).
#[derive(Clone)]
pub struct Client<S: Signer = DeviceKey> {
    http: reqwest::Client,
    base: String,
    key: S,
    retry: RetryPolicy,
}

impl Client {
    /// Starts a builder for the service at `base_url` (its public URL) and this device key.
    pub fn builder(base_url: &str, key: DeviceKey) -> ClientBuilder {
        Client::builder_with_signer(base_url, key)
    }
}

impl<S: Signer + Clone> Client<S> {
    /// Starts a builder for the service at `base_url` that signs with
    /// `signer`: the private key stays wherever the signer keeps it.
    pub fn builder_with_signer(base_url: &str, signer: S) -> ClientBuilder<S> {
        ClientBuilder {
            base_url: base_url.into(),
            key: signer,
            pins: Vec::new(),
            roots: Vec::new(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// The device key (or signer) this client signs with.
    pub fn key(&self) -> &S {
        &self.key
    }

    /// Registers this device for `app`; one key may hold several registrations.
    pub async fn register(
        &self,
        app: &str,
        registration: &NewRegistration,
    ) -> Result<RegistrationInfo, Error> {
        let body = serde_json::to_value(registration).map_err(|e| Error::Config(e.to_string()))?;
        let mut headers = Vec::new();
        if let Some(attestation) = &registration.attestation {
            headers.push(("push-client-attestation", attestation.clone()));
        }
        self.call(
            Method::POST,
            &format!("/v1/apps/{app}/registrations"),
            Some(body),
            &headers,
        )
        .await?
        .ok_or_else(|| Error::UnexpectedResponse("empty body".into()))
    }

    /// Reads this device's registration.
    pub async fn status(&self, id: &str) -> Result<RegistrationInfo, Error> {
        self.call(Method::GET, &format!("/v1/registrations/{id}"), None, &[])
            .await?
            .ok_or_else(|| Error::UnexpectedResponse("empty body".into()))
    }

    /// Replaces the provider token (call it from the OS token-refresh callback).
    pub async fn rotate(&self, id: &str, token: &str) -> Result<RegistrationInfo, Error> {
        let body = serde_json::json!({ "token": token });
        self.call(
            Method::PUT,
            &format!("/v1/registrations/{id}"),
            Some(body),
            &[],
        )
        .await?
        .ok_or_else(|| Error::UnexpectedResponse("empty body".into()))
    }

    /// Deletes the registration (sign-out, uninstall flow).
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        self.call::<serde_json::Value>(
            Method::DELETE,
            &format!("/v1/registrations/{id}"),
            None,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Sends one API call with a fresh DPoP proof per try, retrying per the policy.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, String)],
    ) -> Result<Option<T>, Error> {
        let url = format!("{}{path}", self.base);
        let mut retry = 0;
        loop {
            let proof = signed_dpop_proof(&self.key, method.as_str(), &url)?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("dpop", proof);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let outcome = request.send().await;
            retry += 1;
            let may_retry = retry < self.retry.attempts;
            match outcome {
                Err(e) if is_pin_mismatch(&e) => return Err(Error::PinMismatch),
                Err(e) if may_retry && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                    tokio::time::sleep(self.retry.delay(retry, None)).await;
                }
                Err(e) => return Err(Error::Transport(e)),
                Ok(response) => {
                    let status = response.status();
                    if may_retry
                        && (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
                    {
                        let after = retry_after(&response);
                        tokio::time::sleep(self.retry.delay(retry, after)).await;
                        continue;
                    }
                    return decode(response).await;
                }
            }
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<Option<T>, Error> {
    if !response.status().is_success() {
        return Err(decode_problem(response).await);
    }
    let bytes = response.bytes().await.map_err(Error::Transport)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::UnexpectedResponse(e.to_string()))
}

/// The problem document of an error response (or one made from its status).
pub(crate) async fn decode_problem(response: reqwest::Response) -> Error {
    let status = response.status();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => return Error::Transport(e),
    };
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) => Error::Problem(problem),
        Err(_) => Error::Problem(Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("error").into(),
            status: status.as_u16(),
            detail: Some(String::from_utf8_lossy(&bytes).chars().take(200).collect()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        for retry in 1..6 {
            let delay = policy.delay(retry, None);
            assert!(delay <= policy.base_delay * (1 << retry));
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            policy.max_delay
        );
    }

    #[test]
    fn keys_round_trip_through_pem_and_sign() {
        let key = DeviceKey::generate_p256();
        let pem = key.to_pkcs8_pem().expect("pem");
        let loaded = DeviceKey::from_pkcs8_pem(&pem).expect("load");
        assert_eq!(key.thumbprint(), loaded.thumbprint());
        let proof = key.dpop_proof("GET", "https://x/v1");
        assert_eq!(proof.split('.').count(), 3);
        assert!(DeviceKey::generate_rsa(1024).is_err());
    }
}
