//! The values that cross: records (Kotlin data classes, Swift structs) and
//! their conversions from sdk-client's types.

use std::sync::Arc;

use crate::keys::PlatformDecrypter;
use crate::{Decrypter, PushClientError};

/// How the client talks to the service.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct ClientOptions {
    /// Pinned public keys: base64 of the SHA-256 of a certificate's SPKI. With
    /// pins, a chain matching none is refused before anything is sent.
    #[uniffi(default)]
    pub pins: Vec<String>,
    /// Extra trusted root certificates (DER), e.g. a private CA.
    #[uniffi(default)]
    pub root_certificates: Vec<Vec<u8>>,
    /// Timeout of one HTTP exchange, in milliseconds (default 30,000).
    #[uniffi(default)]
    pub timeout_ms: Option<u64>,
    /// Tries per call, the first included (default 4): network errors, 429 and
    /// 5xx are retried with backoff, honouring `Retry-After`.
    #[uniffi(default)]
    pub attempts: Option<u32>,
}

/// What to register.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NewRegistration {
    /// `apns`, `fcm` or `direct`.
    pub provider: String,
    /// The APNs device token (hex) or FCM registration token; none for `direct`.
    pub token: Option<String>,
    /// `ios`, `android`, `macos`, `windows`, `linux`, …
    pub platform: String,
    /// APNs `sandbox` or `production`.
    #[uniffi(default)]
    pub environment: Option<String>,
    /// The public JWK (JSON text) content for this registration is sealed to.
    #[uniffi(default)]
    pub encryption_key: Option<String>,
    /// A client attestation JWT, when the app requires one.
    #[uniffi(default)]
    pub attestation: Option<String>,
}

pub(crate) fn public_encryption_key(
    jwk: &str,
) -> Result<sdk_client::EncryptionPublicKey, PushClientError> {
    let value: serde_json::Value =
        serde_json::from_str(jwk).map_err(|e| PushClientError::Config {
            detail: format!("the encryption key is not JSON: {e}"),
        })?;
    sdk_client::EncryptionPublicKey::from_jwk(&value).map_err(|e| PushClientError::Config {
        detail: format!("the encryption key: {e}"),
    })
}

impl TryFrom<NewRegistration> for sdk_client::NewRegistration {
    type Error = PushClientError;

    fn try_from(r: NewRegistration) -> Result<Self, PushClientError> {
        let mut out = match r.provider.as_str() {
            "apns" | "fcm" => {
                let token = r.token.as_deref().ok_or_else(|| PushClientError::Config {
                    detail: format!("a `{}` registration needs a token", r.provider),
                })?;
                if r.provider == "apns" {
                    sdk_client::NewRegistration::apns(token, &r.platform)
                } else {
                    sdk_client::NewRegistration::fcm(token, &r.platform)
                }
            }
            "direct" => sdk_client::NewRegistration::direct(&r.platform),
            other => {
                return Err(PushClientError::Config {
                    detail: format!("provider `{other}` is not apns, fcm or direct"),
                })
            }
        };
        if let Some(environment) = &r.environment {
            out = out.environment(environment);
        }
        if let Some(jwk) = &r.encryption_key {
            out = out.with_encryption_key(&public_encryption_key(jwk)?);
        }
        if let Some(jwt) = &r.attestation {
            out = out.attestation(jwt);
        }
        Ok(out)
    }
}

/// A registration as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RegistrationInfo {
    pub id: String,
    pub app: String,
    pub provider: String,
    pub platform: String,
    pub environment: Option<String>,
    /// `active` or `invalid` (the provider refused the token; see `invalid_reason`).
    pub status: String,
    pub invalid_reason: Option<String>,
    pub invalidated_at: Option<String>,
    pub encryption_key_thumbprint: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<sdk_client::RegistrationInfo> for RegistrationInfo {
    fn from(r: sdk_client::RegistrationInfo) -> Self {
        RegistrationInfo {
            id: r.id,
            app: r.app,
            provider: r.provider,
            platform: r.platform,
            environment: r.environment,
            status: r.status,
            invalid_reason: r.invalid_reason,
            invalidated_at: r.invalidated_at,
            encryption_key_thumbprint: r.encryption_key_thumbprint,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A notification received on the direct channel.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushEvent {
    /// The stream's event id: keep it to resume with `listen(…, lastEventId)`.
    pub event_id: String,
    /// The notification's id.
    pub notification_id: Option<String>,
    pub title: Option<String>,
    pub body: Option<String>,
    /// The notification's whole JSON (`data`, `inbox`, `created_at`, …).
    pub notification_json: String,
}

impl From<sdk_client::PushEvent> for PushEvent {
    fn from(e: sdk_client::PushEvent) -> Self {
        let text = |name: &str| e.notification[name].as_str().map(str::to_owned);
        PushEvent {
            notification_id: text("id"),
            title: text("title"),
            body: text("body"),
            notification_json: e.notification.to_string(),
            event_id: e.event_id,
        }
    }
}

/// An inbox item, without its content.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InboxItem {
    pub id: String,
    pub notification: String,
    pub created_at: String,
    pub expires_at: String,
    /// Bytes of the sealed content.
    pub size: i64,
    /// `pending` or `fetched`.
    pub state: String,
    pub fetched_at: Option<String>,
}

impl From<sdk_client::InboxItem> for InboxItem {
    fn from(i: sdk_client::InboxItem) -> Self {
        InboxItem {
            id: i.id,
            notification: i.notification,
            created_at: i.created_at,
            expires_at: i.expires_at,
            size: i.size,
            state: i.state,
            fetched_at: i.fetched_at,
        }
    }
}

/// A file that came with the content.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct Attachment {
    pub name: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("name", &self.name)
            .field("media_type", &self.media_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Opened content: what the notifier sent.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct Content {
    pub media_type: String,
    /// The request as JSON text (a JSON string for a non-JSON media type).
    pub data_json: Option<String>,
    pub attachments: Vec<Attachment>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("media_type", &self.media_type)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl From<sdk_client::Content> for Content {
    fn from(c: sdk_client::Content) -> Self {
        Content {
            media_type: c.media_type,
            data_json: c.data.map(|d| d.to_string()),
            attachments: c
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    name: a.name,
                    media_type: a.media_type,
                    bytes: a.bytes,
                })
                .collect(),
        }
    }
}

/// The inbox item an APNs or FCM payload names, and its JWE when it rode inline.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushPayloadItem {
    pub id: Option<String>,
    pub jwe: Option<String>,
}

/// Reads the inbox keys of a push payload (APNs `userInfo` or FCM `data`, as
/// JSON text): the notification service extension's first step.
#[uniffi::export]
pub fn push_payload_item(payload_json: String) -> Result<PushPayloadItem, PushClientError> {
    let payload: serde_json::Value =
        serde_json::from_str(&payload_json).map_err(|e| PushClientError::Config {
            detail: format!("the payload is not JSON: {e}"),
        })?;
    let (id, jwe) = sdk_client::push_payload_item(&payload);
    Ok(PushPayloadItem { id, jwe })
}

/// Opens a JWE that rode inside a push payload (no network).
#[uniffi::export]
pub fn open_push(jwe: String, decrypter: Arc<dyn Decrypter>) -> Result<Content, PushClientError> {
    Ok(sdk_client::open_content(&jwe, &PlatformDecrypter(decrypter))?.into())
}
