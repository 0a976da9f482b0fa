//! The device inbox: pending requests sealed to the registration's
//! encryption key — listed, fetched and opened here, acknowledged.
//!
//! Opening goes through a [`Decrypter`]: the in-memory [`EncryptionKey`], or
//! a platform keystore that does the RSA-OAEP decryption or the ECDH
//! agreement itself, so the private key never leaves it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, Error, Signer};
pub use push_jose::{Decrypter, PrivateKey as EncryptionKey, PublicKey as EncryptionPublicKey};

/// The content type of what the service seals (the plaintext document).
pub const SEALED_CTY: &str = "application/push-content+json";

/// An item of the inbox, without its content.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct InboxItem {
    /// The item's id (its notification's id).
    pub id: String,
    pub notification: String,
    pub created_at: String,
    pub expires_at: String,
    /// Bytes of the sealed content.
    pub size: i64,
    /// `pending` or `fetched`.
    pub state: String,
    #[serde(default)]
    pub fetched_at: Option<String>,
}

#[derive(Deserialize)]
struct InboxPage {
    items: Vec<InboxItem>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Fetched {
    jwe: String,
}

/// A file that came with the content.
#[derive(Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The media type of `data` (for content the notifier sealed itself in
    /// another form: the JWE's `cty`, or `application/octet-stream`).
    pub media_type: String,
    /// The request: a JSON value (a string for a non-JSON media type).
    pub data: Option<serde_json::Value>,
    pub attachments: Vec<Attachment>,
    /// The plaintext as it was sealed.
    pub raw: Vec<u8>,
}

#[derive(Deserialize)]
struct Document {
    media_type: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    attachments: Vec<DocumentAttachment>,
}

#[derive(Deserialize)]
struct DocumentAttachment {
    name: String,
    media_type: String,
    data: String,
}

/// Opens a JWE (from the inbox, or from inside an APNs/FCM payload) with the
/// registration's encryption key.
pub fn open_content(jwe: &str, decrypter: &dyn Decrypter) -> Result<Content, Error> {
    let header = push_jose::inspect(jwe).map_err(|e| Error::Key(e.to_string()))?;
    let raw = push_jose::open(jwe, decrypter).map_err(|e| Error::Key(e.to_string()))?;
    let document = (header.cty.as_deref() == Some(SEALED_CTY))
        .then(|| serde_json::from_slice::<Document>(&raw).ok())
        .flatten();
    let Some(document) = document else {
        // The notifier's own form: JSON when its `cty` says so, text when it
        // is text, the raw bytes in any case.
        let media_type = header
            .cty
            .unwrap_or_else(|| "application/octet-stream".into());
        let json = media_type == "application/json" || media_type.ends_with("+json");
        let data = if json {
            serde_json::from_slice(&raw).ok()
        } else if media_type.starts_with("text/") {
            std::str::from_utf8(&raw).ok().map(|t| serde_json::json!(t))
        } else {
            None
        };
        return Ok(Content {
            media_type,
            data,
            attachments: Vec::new(),
            raw,
        });
    };
    let mut attachments = Vec::with_capacity(document.attachments.len());
    for a in document.attachments {
        let bytes = STANDARD.decode(&a.data).map_err(|_| {
            Error::UnexpectedResponse(format!("attachment `{}` is not base64", a.name))
        })?;
        attachments.push(Attachment {
            name: a.name,
            media_type: a.media_type,
            bytes,
        });
    }
    Ok(Content {
        media_type: document.media_type,
        data: document.data,
        attachments,
        raw,
    })
}

/// The JWE an APNs or FCM payload carries, if it carries one: APNs
/// `push-inbox.jwe`, FCM data `push_inbox_jwe`. Without it, the payload's
/// item id (`push-inbox.id`, `push_inbox_id`) is fetched from the inbox.
pub fn push_payload_item(payload: &serde_json::Value) -> (Option<String>, Option<String>) {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let apns = &payload["push-inbox"];
    let fcm = if payload["data"].is_object() {
        &payload["data"]
    } else {
        payload
    };
    let id = text(&apns["id"]).or_else(|| text(&fcm["push_inbox_id"]));
    let jwe = text(&apns["jwe"]).or_else(|| text(&fcm["push_inbox_jwe"]));
    (id, jwe)
}

impl<S: Signer + Clone> Client<S> {
    /// The pending items of a registration's inbox, oldest id first.
    pub async fn inbox(&self, registration: &str) -> Result<Vec<InboxItem>, Error> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                None => format!("/v1/registrations/{registration}/inbox?limit=100"),
                Some(after) => {
                    format!("/v1/registrations/{registration}/inbox?limit=100&after={after}")
                }
            };
            let page: InboxPage = self
                .call(Method::GET, &path, None, &[])
                .await?
                .ok_or_else(|| Error::UnexpectedResponse("empty body".into()))?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Fetches an item and opens it with `decrypter` (the registration's
    /// encryption key).
    pub async fn fetch(
        &self,
        registration: &str,
        item: &str,
        decrypter: &dyn Decrypter,
    ) -> Result<Content, Error> {
        open_content(&self.fetch_jwe(registration, item).await?, decrypter)
    }

    /// Fetches an item as it is stored: the compact JWE, not opened.
    pub async fn fetch_jwe(&self, registration: &str, item: &str) -> Result<String, Error> {
        let fetched: Fetched = self
            .call(
                Method::GET,
                &format!("/v1/registrations/{registration}/inbox/{item}"),
                None,
                &[],
            )
            .await?
            .ok_or_else(|| Error::UnexpectedResponse("empty body".into()))?;
        Ok(fetched.jwe)
    }

    /// Acknowledges an item: the service drops its content.
    pub async fn ack(&self, registration: &str, item: &str) -> Result<(), Error> {
        self.call::<serde_json::Value>(
            Method::POST,
            &format!("/v1/registrations/{registration}/inbox/{item}/ack"),
            None,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Opens the JWE an APNs or FCM payload carried (see [`push_payload_item`]).
    pub fn open_push(&self, jwe: &str, decrypter: &dyn Decrypter) -> Result<Content, Error> {
        open_content(jwe, decrypter)
    }

    /// Replaces the key content is sealed to.
    pub async fn rotate_encryption_key(
        &self,
        registration: &str,
        key: &EncryptionPublicKey,
    ) -> Result<crate::RegistrationInfo, Error> {
        self.call(
            Method::PUT,
            &format!("/v1/registrations/{registration}"),
            Some(serde_json::json!({ "encryption_key": key.to_jwk() })),
            &[],
        )
        .await?
        .ok_or_else(|| Error::UnexpectedResponse("empty body".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_the_services_document_and_anything_else_as_raw() {
        let key = EncryptionKey::generate_p256();
        let document = serde_json::json!({"media_type": "application/json", "data": {"ask": "sign"},
            "attachments": [{"name": "a.pdf", "media_type": "application/pdf", "data": STANDARD.encode(b"%PDF")}]});
        let jwe = push_jose::seal(
            &key.public(),
            document.to_string().as_bytes(),
            Some(SEALED_CTY),
        )
        .expect("seal");
        let content = open_content(&jwe, &key).expect("open");
        assert_eq!(content.media_type, "application/json");
        assert_eq!(content.data, Some(serde_json::json!({"ask": "sign"})));
        assert_eq!(content.attachments[0].bytes, b"%PDF");
        let jwe = push_jose::seal(&key.public(), b"opaque", Some("text/plain")).expect("seal");
        let content = open_content(&jwe, &key).expect("open");
        assert_eq!(
            (content.media_type.as_str(), content.raw.as_slice()),
            ("text/plain", &b"opaque"[..])
        );
        assert_eq!(content.data, Some(serde_json::json!("opaque")));
        assert!(open_content(&jwe, &EncryptionKey::generate_p256()).is_err());
        let jwe =
            push_jose::seal(&key.public(), br#"{"a":1}"#, Some("application/json")).expect("seal");
        let data = open_content(&jwe, &key).expect("open").data;
        assert_eq!(data, Some(serde_json::json!({"a": 1})));
        let jwe = push_jose::seal(&key.public(), &[0, 159], None).expect("seal");
        assert_eq!(open_content(&jwe, &key).expect("open").data, None);
    }

    #[test]
    fn finds_the_item_in_apns_and_fcm_payloads() {
        let apns = serde_json::json!({"aps": {}, "push-inbox": {"id": "ntf_1", "jwe": "j"}});
        assert_eq!(
            push_payload_item(&apns),
            (Some("ntf_1".into()), Some("j".into()))
        );
        let fcm = serde_json::json!({"data": {"push_inbox_id": "ntf_2"}});
        assert_eq!(push_payload_item(&fcm), (Some("ntf_2".into()), None));
        let data = serde_json::json!({"push_inbox_id": "ntf_3", "push_inbox_jwe": "k"});
        assert_eq!(
            push_payload_item(&data),
            (Some("ntf_3".into()), Some("k".into()))
        );
    }
}
