//! Provider credentials: validated on upload, sealed at rest, shown as metadata only.

use base64::Engine;
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crypto::fingerprint;
use crate::delivery::ProviderKind;

/// Associated data binding a sealed credential to its row (app and provider).
pub fn credential_aad(app_id: &str, provider: ProviderKind) -> String {
    credential_aad_str(app_id, provider.as_str())
}

/// [`credential_aad`] with the provider as the store names it (`apns`, `fcm`).
pub fn credential_aad_str(app_id: &str, provider: &str) -> String {
    format!("{app_id}/{provider}")
}

/// Why an uploaded credential was refused. Messages never quote secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("`{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> CredentialError {
    CredentialError::Invalid {
        field,
        message: message.into(),
    }
}

/// APNs environment of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    Production,
    #[serde(alias = "development")]
    Sandbox,
}

/// Body of `PUT /v1/apps/{app}/credentials/apns`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "auth", rename_all = "lowercase", deny_unknown_fields)]
pub enum ApnsCredentialInput {
    /// Token-based authentication with a `.p8` signing key.
    Token {
        team_id: String,
        key_id: String,
        /// The `.p8` file: a PEM PKCS#8 P-256 private key.
        private_key: String,
        topic: String,
        environment: ApnsEnvironment,
    },
    /// Certificate-based authentication with a `.p12` bundle.
    Certificate {
        /// The `.p12` file, base64.
        p12: String,
        password: String,
        topic: String,
        environment: ApnsEnvironment,
    },
}

/// Whether deliveries with a credential work, as the last attempts saw it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialStatus {
    /// `ok`, or `failing` after the provider refused the credential (the circuit opened).
    pub status: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// What an operator sees of an APNs credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApnsCredentialInfo {
    /// `token` or `certificate`.
    pub auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub topic: String,
    pub environment: ApnsEnvironment,
    /// SHA-256 of the public key (token auth) or of the certificate (certificate auth).
    pub fingerprint: String,
    /// Certificate subject (certificate auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Certificate `notAfter`, RFC 3339 (certificate auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub updated_at: String,
    /// Delivery status of the credential (in reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CredentialStatus>,
}

/// The secret part of an APNs credential, sealed in the store.
#[derive(Serialize, Deserialize)]
#[serde(tag = "auth", rename_all = "lowercase")]
pub enum ApnsSecret {
    Token { private_key_pem: String },
    Certificate { p12_der: Vec<u8>, password: String },
}

/// A validated APNs credential: metadata, secret, and expiry in ms if any.
pub struct ValidatedApns {
    pub info: ApnsCredentialInfo,
    pub secret: ApnsSecret,
    pub expires_at: Option<i64>,
}

fn check_apple_id(field: &'static str, value: &str) -> Result<(), CredentialError> {
    if value.len() == 10 && value.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be the 10-character identifier Apple issued",
        ))
    }
}

fn check_topic(topic: &str) -> Result<(), CredentialError> {
    if topic.is_empty() || topic.len() > 255 || topic.chars().any(|c| c.is_whitespace()) {
        Err(invalid(
            "topic",
            "must be the app's bundle id, e.g. com.example.app",
        ))
    } else {
        Ok(())
    }
}

/// Validates an APNs credential upload: the `.p8` parses as a P-256 PKCS#8 key,
/// or the `.p12` opens with its password and its certificate is current.
pub fn validate_apns(
    input: ApnsCredentialInput,
    now_millis: i64,
) -> Result<ValidatedApns, CredentialError> {
    match input {
        ApnsCredentialInput::Token {
            team_id,
            key_id,
            private_key,
            topic,
            environment,
        } => {
            check_apple_id("team_id", &team_id)?;
            check_apple_id("key_id", &key_id)?;
            check_topic(&topic)?;
            let key = p256::SecretKey::from_pkcs8_pem(private_key.trim()).map_err(|_| {
                invalid(
                    "private_key",
                    "is not a PEM PKCS#8 P-256 private key (the .p8 file from Apple, \
                     starting with -----BEGIN PRIVATE KEY-----)",
                )
            })?;
            let public = p256::pkcs8::EncodePublicKey::to_public_key_der(&key.public_key())
                .map_err(|_| invalid("private_key", "public key cannot be derived"))?;
            Ok(ValidatedApns {
                info: ApnsCredentialInfo {
                    auth: "token".into(),
                    team_id: Some(team_id),
                    key_id: Some(key_id),
                    topic,
                    environment,
                    fingerprint: fingerprint(public.as_bytes()),
                    subject: None,
                    expires_at: None,
                    updated_at: String::new(),
                    status: None,
                },
                secret: ApnsSecret::Token {
                    private_key_pem: private_key.trim().to_owned(),
                },
                expires_at: None,
            })
        }
        ApnsCredentialInput::Certificate {
            p12,
            password,
            topic,
            environment,
        } => {
            check_topic(&topic)?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(p12.trim())
                .map_err(|_| invalid("p12", "is not base64"))?;
            let store = p12_keystore::KeyStore::from_pkcs12(
                &der,
                &password,
                p12_keystore::Pkcs12ImportPolicy::Strict,
            )
            .map_err(|_| {
                invalid(
                    "p12",
                    "cannot be opened: wrong password, or not a PKCS#12 file",
                )
            })?;
            let (_, chain) = store
                .private_key_chain()
                .ok_or_else(|| invalid("p12", "holds no private key with its certificate"))?;
            let leaf = chain
                .certs()
                .first()
                .ok_or_else(|| invalid("p12", "holds no certificate for its private key"))?;
            let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_der())
                .map_err(|_| invalid("p12", "certificate cannot be parsed"))?;
            let not_after = cert.validity().not_after.timestamp() * 1000;
            let not_before = cert.validity().not_before.timestamp() * 1000;
            let expires = crate::ids::rfc3339(not_after);
            if not_after <= now_millis {
                return Err(invalid("p12", format!("certificate expired at {expires}")));
            }
            if not_before > now_millis {
                return Err(invalid(
                    "p12",
                    format!(
                        "certificate is not valid before {}",
                        crate::ids::rfc3339(not_before)
                    ),
                ));
            }
            Ok(ValidatedApns {
                info: ApnsCredentialInfo {
                    auth: "certificate".into(),
                    team_id: None,
                    key_id: None,
                    topic,
                    environment,
                    fingerprint: fingerprint(leaf.as_der()),
                    subject: Some(leaf.subject().to_owned()),
                    expires_at: Some(expires),
                    updated_at: String::new(),
                    status: None,
                },
                secret: ApnsSecret::Certificate {
                    p12_der: der,
                    password,
                },
                expires_at: Some(not_after),
            })
        }
    }
}

/// Body of `PUT /v1/apps/{app}/credentials/fcm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FcmCredentialInput {
    /// The service-account JSON file Google issues, as an object.
    #[schema(value_type = Object)]
    pub service_account: serde_json::Value,
}

/// What an operator sees of an FCM credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FcmCredentialInfo {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    /// SHA-256 of the service account's public key.
    pub fingerprint: String,
    #[serde(default)]
    pub updated_at: String,
    /// Delivery status of the credential (in reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CredentialStatus>,
}

/// A validated FCM credential: metadata and the service-account JSON to seal.
pub struct ValidatedFcm {
    pub info: FcmCredentialInfo,
    pub service_account_json: String,
}

fn required_string(sa: &serde_json::Value, field: &'static str) -> Result<String, CredentialError> {
    match sa.get(field).and_then(|v| v.as_str()) {
        Some(value) if !value.trim().is_empty() => Ok(value.to_owned()),
        _ => Err(invalid(field, "is missing from the service account")),
    }
}

/// Validates a service-account JSON: `project_id`, `client_email`, `token_uri` and an RSA key.
pub fn validate_fcm(input: FcmCredentialInput) -> Result<ValidatedFcm, CredentialError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePublicKey;
    let sa = &input.service_account;
    if !sa.is_object() {
        return Err(invalid(
            "service_account",
            "must be the JSON object of the key file",
        ));
    }
    if let Some(kind) = sa.get("type").and_then(|v| v.as_str()) {
        if kind != "service_account" {
            return Err(invalid(
                "type",
                format!("is `{kind}`, expected `service_account`"),
            ));
        }
    }
    let project_id = required_string(sa, "project_id")?;
    let client_email = required_string(sa, "client_email")?;
    let token_uri = required_string(sa, "token_uri")?;
    let parsed = url::Url::parse(&token_uri).map_err(|_| invalid("token_uri", "is not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(invalid("token_uri", "must be an https URL"));
    }
    let pem = required_string(sa, "private_key")?;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem.trim())
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem.trim()))
        .map_err(|_| invalid("private_key", "is not a PEM RSA private key"))?;
    let public = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|_| invalid("private_key", "public key cannot be derived"))?;
    Ok(ValidatedFcm {
        info: FcmCredentialInfo {
            project_id,
            client_email,
            private_key_id: sa
                .get("private_key_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            token_uri,
            fingerprint: fingerprint(public.as_bytes()),
            updated_at: String::new(),
            status: None,
        },
        service_account_json: sa.to_string(),
    })
}
