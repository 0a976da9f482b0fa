//! Sealed content: what a notify request may carry for the device to fetch
//! from its inbox — plaintext the service seals per registration at
//! acceptance, or JWEs the notifier sealed itself (end to end) — and the
//! rules it must meet. Plaintext content is never stored: only JWEs are.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The content type of what the service seals: the plaintext document.
pub const SEALED_CTY: &str = "application/push-content+json";
/// Most attachments on one notification.
pub const MAX_ATTACHMENTS: usize = 16;
/// Most registrations one notification with content may name.
pub const MAX_CONTENT_TARGETS: usize = 64;
/// Longest attachment name and media type.
const MAX_NAME: usize = 255;

/// `content` of a notify request: plaintext (`media_type`, `data`,
/// `attachments`) or `sealed`, never both.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentRequest {
    /// Plaintext: the media type of `data` (e.g. `application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Plaintext: the request itself — any JSON value for a JSON media type,
    /// else a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// Plaintext: files (a PDF to sign, an image), base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// End to end: a compact JWE per target registration id, sealed by the
    /// notifier to that registration's encryption key (`RSA-OAEP-256` or
    /// `ECDH-ES+A256KW`, `A256GCM`). The service stores and forwards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<BTreeMap<String, String>>,
}

/// Sizes only: the content itself is the caller's secret.
impl std::fmt::Debug for ContentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentRequest")
            .field("media_type", &self.media_type)
            .field("attachments", &self.attachments.len())
            .field("sealed", &self.sealed.as_ref().map(BTreeMap::len))
            .finish_non_exhaustive()
    }
}

/// A file carried with the content.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// A file name: no `/`, `\` or control characters, at most 255 bytes.
    pub name: String,
    pub media_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data: String,
}

/// Content that passed the rules, ready to be sealed per registration.
#[derive(Clone)]
pub enum Plan {
    /// The plaintext document (JSON) to seal to each registration's key.
    Plain(Vec<u8>),
    /// The notifier's JWE per registration id.
    Sealed(BTreeMap<String, String>),
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plan::Plain(doc) => write!(f, "Plan::Plain({} bytes)", doc.len()),
            Plan::Sealed(jwes) => write!(f, "Plan::Sealed({} registrations)", jwes.len()),
        }
    }
}

/// Why content was refused: the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidContent(pub String);

fn media_type_ok(value: &str) -> bool {
    let mut parts = value.splitn(2, '/');
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value.len() <= MAX_NAME
        && matches!((parts.next(), parts.next()), (Some(t), Some(s)) if token(t) && token(s))
}

fn json_media_type(value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    value == "application/json" || value.ends_with("+json")
}

/// Largest JWE a plaintext of `max_bytes` seals to (base64url of the
/// ciphertext, the header and a wrapped key of up to 4096 bits).
pub fn max_jwe_bytes(max_bytes: usize) -> usize {
    max_bytes.div_ceil(3) * 4 + 4096
}

/// Checks content against the rules and the size limit (`max_bytes`: the
/// attachments' decoded bytes plus `data` as JSON, or each JWE's size).
pub fn check(content: ContentRequest, max_bytes: usize) -> Result<Plan, InvalidContent> {
    let err = |m: String| Err(InvalidContent(m));
    if let Some(sealed) = content.sealed {
        if content.media_type.is_some() || content.data.is_some() || !content.attachments.is_empty()
        {
            return err(
                "`content.sealed` goes alone: the service cannot read it, so it \
                        takes no `media_type`, `data` or `attachments`"
                    .into(),
            );
        }
        if sealed.is_empty() || sealed.len() > MAX_CONTENT_TARGETS {
            return err(format!(
                "`content.sealed`: a JWE for each of 1 to {MAX_CONTENT_TARGETS} registrations"
            ));
        }
        for (registration, jwe) in &sealed {
            if jwe.len() > max_jwe_bytes(max_bytes) {
                return err(format!(
                    "`content.sealed.{registration}`: larger than the limit for \
                     {max_bytes} bytes of content (max_content_bytes)"
                ));
            }
            push_jose::inspect(jwe)
                .map_err(|e| InvalidContent(format!("`content.sealed.{registration}`: {e}")))?;
        }
        return Ok(Plan::Sealed(sealed));
    }
    let Some(media_type) = content.media_type.as_deref() else {
        return err("`content.media_type` is required (or give `content.sealed`)".into());
    };
    if !media_type_ok(media_type) {
        return err(format!(
            "`content.media_type`: `{media_type}` is not a media type (type/subtype)"
        ));
    }
    if content.data.is_none() && content.attachments.is_empty() {
        return err("`content`: give `data`, `attachments` or both".into());
    }
    if content.data.as_ref().is_some_and(|d| !d.is_string()) && !json_media_type(media_type) {
        return err(format!(
            "`content.data`: a `{media_type}` document is a string (JSON values go with a JSON media type)"
        ));
    }
    let mut size = content.data.as_ref().map_or(0, |d| d.to_string().len());
    if content.attachments.len() > MAX_ATTACHMENTS {
        return err(format!("`content.attachments`: at most {MAX_ATTACHMENTS}"));
    }
    for (i, attachment) in content.attachments.iter().enumerate() {
        let name = &attachment.name;
        if name.is_empty()
            || name.len() > MAX_NAME
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return err(format!(
                "`content.attachments[{i}].name`: 1 to {MAX_NAME} bytes, no `/`, `\\` or control characters"
            ));
        }
        if !media_type_ok(&attachment.media_type) {
            return err(format!(
                "`content.attachments[{i}].media_type`: `{}` is not a media type",
                attachment.media_type
            ));
        }
        let bytes = STANDARD.decode(&attachment.data).map_err(|_| {
            InvalidContent(format!("`content.attachments[{i}].data` is not base64"))
        })?;
        size += bytes.len();
    }
    if size > max_bytes {
        return err(format!(
            "`content`: {size} bytes, more than the {max_bytes} allowed (max_content_bytes)"
        ));
    }
    let document = serde_json::to_vec(&ContentRequest {
        sealed: None,
        ..content
    })
    .map_err(|e| InvalidContent(e.to_string()))?;
    Ok(Plan::Plain(document))
}

/// What binds an item's blob at rest to its row: a blob moved to another
/// registration's or notification's row does not open.
pub fn at_rest_aad(registration_id: &str, notification_id: &str) -> String {
    format!("inbox/{registration_id}/{notification_id}")
}

/// An item's state at `now`: `pending` (never fetched), `fetched`, `acked`,
/// or `expired` (its TTL ended: its content is gone, or about to be).
pub fn item_state(entry: &crate::store::InboxEntry, now: i64) -> &'static str {
    let live = entry.held && entry.expires_at > now;
    match (entry.acked_at, live, entry.fetched_at) {
        (Some(_), _, _) => "acked",
        (None, false, _) => "expired",
        (None, true, Some(_)) => "fetched",
        (None, true, None) => "pending",
    }
}

/// Why one registration gets no item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealable {
    /// The registration registered no encryption key.
    NoKey,
    /// What the notifier sealed does not fit the registration's key, or is missing.
    Refused(String),
}

/// The JWE for one registration whose stored encryption key is `jwk`.
pub fn seal_for(
    plan: &Plan,
    registration_id: &str,
    jwk: Option<&str>,
) -> Result<String, Unsealable> {
    let jwk = jwk.ok_or(Unsealable::NoKey)?;
    let key = serde_json::from_str(jwk)
        .ok()
        .and_then(|v| push_jose::PublicKey::from_jwk(&v).ok())
        .ok_or(Unsealable::NoKey)?;
    match plan {
        Plan::Plain(document) => push_jose::seal(&key, document, Some(SEALED_CTY))
            .map_err(|e| Unsealable::Refused(e.to_string())),
        Plan::Sealed(jwes) => {
            let field = format!("`content.sealed.{registration_id}`");
            let jwe = jwes
                .get(registration_id)
                .ok_or_else(|| Unsealable::Refused(format!("{field}: missing for this target")))?;
            let header = push_jose::inspect(jwe)
                .map_err(|e| Unsealable::Refused(format!("{field}: {e}")))?;
            if header.alg != key.alg() {
                return Err(Unsealable::Refused(format!(
                    "{field}: `alg` is `{}`, the registration's key takes `{}`",
                    header.alg,
                    key.alg()
                )));
            }
            if header
                .kid
                .as_deref()
                .is_some_and(|kid| kid != key.thumbprint())
            {
                return Err(Unsealable::Refused(format!(
                    "{field}: `kid` names another key than the registration's ({})",
                    key.thumbprint()
                )));
            }
            Ok(jwe.clone())
        }
    }
}

#[cfg(test)]
#[path = "inbox_tests.rs"]
mod tests;
