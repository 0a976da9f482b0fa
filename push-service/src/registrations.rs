//! Device registrations: what a valid one looks like, per provider.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::delivery::ProviderKind;
use crate::ids::rfc3339;
use crate::store::Registration;

/// A registration request a provider would refuse: what is wrong, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRegistration(pub String);

impl From<String> for InvalidRegistration {
    fn from(message: String) -> Self {
        InvalidRegistration(message)
    }
}

impl From<&str> for InvalidRegistration {
    fn from(message: &str) -> Self {
        InvalidRegistration(message.to_owned())
    }
}

impl ProviderKind {
    /// Platforms this provider can reach.
    fn platforms(self) -> &'static [&'static str] {
        match self {
            ProviderKind::Apns => &["ios", "ipados", "macos", "watchos", "tvos", "visionos"],
            ProviderKind::Fcm => &["android", "ios", "web"],
            ProviderKind::Direct => &["macos", "windows", "linux", "ios", "android", "web"],
        }
    }

    /// Checks a provider token's shape; `direct` takes none.
    pub fn check_token(self, token: Option<&str>) -> Result<Option<String>, InvalidRegistration> {
        match (self, token) {
            (ProviderKind::Direct, None) => Ok(None),
            (ProviderKind::Direct, Some(_)) => {
                Err("`token`: a `direct` registration has no token".into())
            }
            (_, None) => Err(format!("`token` is required for `{}`", self.as_str()).into()),
            (ProviderKind::Apns, Some(token)) => {
                // Apple: "don't make assumptions about device token size"; it is hex bytes.
                let ok = (32..=400).contains(&token.len())
                    && token.len() % 2 == 0
                    && token.bytes().all(|b| b.is_ascii_hexdigit());
                if ok {
                    Ok(Some(token.to_ascii_lowercase()))
                } else {
                    Err(
                        "`token`: an APNs device token is an even number (32 to 400) of hex digits"
                            .into(),
                    )
                }
            }
            (ProviderKind::Fcm, Some(token)) => {
                let ok = (32..=4096).contains(&token.len())
                    && token.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.')
                    });
                if ok {
                    Ok(Some(token.to_owned()))
                } else {
                    Err("`token`: an FCM registration token is 32 to 4096 characters of A-Z a-z 0-9 - _ : .".into())
                }
            }
        }
    }
}

/// Body of `POST /v1/apps/{app}/registrations`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRegistration {
    pub provider: ProviderKind,
    /// ProviderKind token (APNs hex device token, FCM registration token); none for `direct`.
    pub token: Option<String>,
    /// APNs: `production` (default) or `sandbox`.
    pub environment: Option<String>,
    /// `ios`, `ipados`, `macos`, `watchos`, `tvos`, `visionos`, `android`, `windows`, `linux`, `web`.
    pub platform: String,
    /// The public key content is sealed to (optional; rotatable with
    /// `PUT /v1/registrations/{id}`): a JWK with `use` `enc` when given —
    /// RSA of 2048 to 4096 bits (`RSA-OAEP-256`), EC P-256 or OKP X25519
    /// (`ECDH-ES+A256KW`). Sent in this DPoP-proven request, it is bound to
    /// the device key. `encryption_jwk` is an older name of the field.
    #[serde(alias = "encryption_jwk")]
    #[schema(value_type = Option<Object>)]
    pub encryption_key: Option<serde_json::Value>,
}

/// Checks an encryption key and gives the JWK the store keeps (the key's
/// members, `use`, `alg` and `kid`: its thumbprint).
pub fn encryption_key(jwk: &serde_json::Value) -> Result<String, InvalidRegistration> {
    push_jose::PublicKey::from_jwk(jwk)
        .map(|key| key.to_jwk().to_string())
        .map_err(|e| format!("`encryption_key`: {e}").into())
}

/// A validated registration request.
pub struct NewRegistration {
    pub provider: ProviderKind,
    pub token: Option<String>,
    pub environment: Option<String>,
    pub platform: String,
    pub encryption_jwk: Option<String>,
}

/// Checks a registration request; the error names the field.
pub fn validate(body: CreateRegistration) -> Result<NewRegistration, InvalidRegistration> {
    let token = body.provider.check_token(body.token.as_deref())?;
    let platform = body.platform.to_ascii_lowercase();
    if !body.provider.platforms().contains(&platform.as_str()) {
        return Err(format!(
            "`platform`: `{}` cannot be reached through `{}` (one of: {})",
            body.platform,
            body.provider.as_str(),
            body.provider.platforms().join(", ")
        )
        .into());
    }
    let environment = match (body.provider, body.environment.as_deref()) {
        (ProviderKind::Apns, None | Some("production")) => Some("production".to_owned()),
        (ProviderKind::Apns, Some("sandbox" | "development")) => Some("sandbox".to_owned()),
        (ProviderKind::Apns, Some(other)) => {
            return Err(format!("`environment`: `{other}` is not production or sandbox").into())
        }
        (_, None) => None,
        (_, Some(_)) => return Err("`environment` applies to APNs registrations only".into()),
    };
    let encryption_jwk = body
        .encryption_key
        .as_ref()
        .map(encryption_key)
        .transpose()?;
    Ok(NewRegistration {
        provider: body.provider,
        token,
        environment,
        platform,
        encryption_jwk,
    })
}

/// Most aliases one registration may carry, and their longest length.
pub const MAX_ALIASES: usize = 32;
const MAX_ALIAS_LEN: usize = 256;

/// Checks a set of aliases and returns it sorted and deduplicated.
pub fn validate_aliases(aliases: Vec<String>) -> Result<Vec<String>, InvalidRegistration> {
    if aliases.len() > MAX_ALIASES {
        return Err(format!("`aliases`: at most {MAX_ALIASES}").into());
    }
    validate_aliases_unbounded("aliases", aliases)
}

/// Checks each alias (length, no control characters), without a count limit;
/// an error names `field`, where the aliases came from.
pub fn validate_aliases_unbounded(
    field: &str,
    mut aliases: Vec<String>,
) -> Result<Vec<String>, InvalidRegistration> {
    for alias in &aliases {
        if alias.is_empty() || alias.len() > MAX_ALIAS_LEN || alias.chars().any(char::is_control) {
            return Err(format!(
                "`{field}`: each is 1 to {MAX_ALIAS_LEN} bytes without control characters"
            )
            .into());
        }
    }
    aliases.sort();
    aliases.dedup();
    Ok(aliases)
}

/// A registration as the API shows it. The provider token is never shown.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RegistrationView {
    pub id: String,
    pub app: String,
    pub provider: String,
    pub platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `active` or `invalid`.
    pub status: String,
    pub invalid_reason: Option<String>,
    pub invalidated_at: Option<String>,
    /// Identity aliases bound by the auth server (shown to the auth server only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// The public key content is sealed to, if the device registered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub encryption_key: Option<serde_json::Value>,
    /// Its RFC 7638 thumbprint: the `kid` of a JWE sealed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_thumbprint: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl RegistrationView {
    pub fn new(r: Registration, aliases: Option<Vec<String>>) -> Self {
        let encryption_key: Option<serde_json::Value> = r
            .encryption_jwk
            .as_deref()
            .and_then(|jwk| serde_json::from_str(jwk).ok());
        let encryption_key_thumbprint = encryption_key
            .as_ref()
            .and_then(|jwk| push_jose::PublicKey::from_jwk(jwk).ok())
            .map(|key| key.thumbprint());
        RegistrationView {
            id: r.id,
            app: r.app_id,
            provider: r.provider,
            platform: r.platform,
            environment: r.environment,
            status: r.status,
            invalid_reason: r.invalid_reason,
            invalidated_at: r.invalidated_at.map(rfc3339),
            aliases,
            encryption_key,
            encryption_key_thumbprint,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}
