//! APNs request content (headers, payload) and the outcome table of its answers.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::notification::{Content, Priority};
use crate::providers::outcome::{apns_class, Class};
use crate::providers::wire::WireError;
use crate::providers::{AlertText, InboxRef, Outcome, MAX_PROVIDER_PAYLOAD};

/// The `apns-topic` suffix a push type needs (docs/providers.md, "Requests").
pub fn topic_for(bundle: &str, push_type: &str) -> String {
    let suffix = match push_type {
        "voip" => ".voip",
        "complication" => ".complication",
        "fileprovider" => ".pushkit.fileprovider",
        "liveactivity" => ".push-type.liveactivity",
        "location" => ".location-query",
        "pushtotalk" => ".voip-ptt",
        "widgets" => ".push-type.widgets",
        "controls" => ".push-type.controls",
        _ => "",
    };
    format!("{bundle}{suffix}")
}

/// A stable `apns-id` per notification and device: retries reuse it, so a
/// redelivery does not show twice.
pub fn apns_id(notification_id: &str, registration_id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::new()
        .chain_update(notification_id)
        .chain_update("/")
        .chain_update(registration_id)
        .finalize();
    // The first 16 bytes in hex, as a UUID: 8-4-4-4-12.
    let mut id = String::with_capacity(36);
    for (i, byte) in digest[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    id
}

/// APNs headers of a delivery: topic, push type, priority, expiration, collapse
/// id, id, then the content's own APNs headers (each replacing one of the same
/// name). `expiration`: seconds since the epoch, or 0 for "now or never" (a
/// zero TTL). The names are known ahead, so they are made without parsing; a
/// value that is not a header value is named in the error (not repeated).
pub fn headers(
    content: &Content,
    bundle: &str,
    expiration: i64,
    id: &str,
) -> Result<HeaderMap, WireError> {
    fn value(name: &str, value: &str) -> Result<HeaderValue, WireError> {
        HeaderValue::from_str(value)
            .map_err(|_| WireError(format!("the value of {name} is not a valid header value")))
    }
    let priority = match (content.push_type.as_str(), content.priority) {
        ("background", _) => "5",
        (_, Priority::High) => "10",
        (_, Priority::Normal) => "5",
    };
    let mut headers = HeaderMap::with_capacity(8);
    let topic = topic_for(bundle, &content.push_type);
    headers.insert(
        HeaderName::from_static("apns-topic"),
        value("apns-topic", &topic)?,
    );
    headers.insert(
        HeaderName::from_static("apns-push-type"),
        value("apns-push-type", &content.push_type)?,
    );
    headers.insert(
        HeaderName::from_static("apns-priority"),
        HeaderValue::from_static(priority),
    );
    headers.insert(
        HeaderName::from_static("apns-expiration"),
        HeaderValue::from(expiration),
    );
    headers.insert(HeaderName::from_static("apns-id"), value("apns-id", id)?);
    if let Some(key) = &content.collapse_key {
        headers.insert(
            HeaderName::from_static("apns-collapse-id"),
            value("apns-collapse-id", key)?,
        );
    }
    if let Some(apns) = &content.apns {
        for (name, raw) in &apns.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| WireError(format!("{name:?} is not a valid header name")))?;
            headers.insert(header, value(name, raw)?);
        }
    }
    Ok(headers)
}

/// The JSON payload: `aps` from the content, custom data beside it, then the
/// raw override merged. A notification with inbox content names its item in
/// `push-inbox` (`id`, and `jwe` when the payload stays within 4 KiB) and,
/// when it shows an alert, sets `mutable-content` so the app's notification
/// service extension can open the JWE and show what it says.
pub fn payload(content: &Content, inbox: Option<InboxRef<'_>>) -> Value {
    let mut aps = Map::new();
    if content.title.is_some() || content.body.is_some() {
        let mut alert = Map::new();
        if let Some(title) = &content.title {
            alert.insert("title".into(), json!(title));
        }
        if let Some(body) = &content.body {
            alert.insert("body".into(), json!(body));
        }
        aps.insert("alert".into(), Value::Object(alert));
    }
    if content.push_type == "background" {
        aps.insert("content-available".into(), json!(1));
    }
    if inbox.is_some() && aps.contains_key("alert") {
        aps.insert("mutable-content".into(), json!(1));
    }
    let mut root = Map::new();
    for (key, value) in &content.data {
        if key != "aps" {
            root.insert(key.clone(), json!(value));
        }
    }
    root.insert("aps".into(), Value::Object(aps));
    let mut payload = Value::Object(root);
    if let Some(extra) = content.apns.as_ref().and_then(|a| a.payload.as_ref()) {
        merge(&mut payload, extra);
    }
    if let Some(inbox) = inbox {
        payload["push-inbox"] = json!({"id": inbox.id});
        if let Some(jwe) = inbox.jwe {
            let mut with = payload.clone();
            with["push-inbox"]["jwe"] = json!(jwe);
            if with.to_string().len() <= MAX_PROVIDER_PAYLOAD {
                payload = with;
            }
        }
    }
    payload
}

/// [`payload`] as bytes. Content without a payload override and without an
/// inbox item is written straight from the content ([`PlainPayload`]: no
/// JSON tree made and dropped per send); otherwise the tree is written.
pub fn payload_bytes(content: &Content, inbox: Option<InboxRef<'_>>) -> Vec<u8> {
    let overridden = content.apns.as_ref().is_some_and(|a| a.payload.is_some());
    if overridden || inbox.is_some() {
        return payload(content, inbox).to_string().into_bytes();
    }
    serde_json::to_vec(&PlainPayload(content)).unwrap_or_default()
}

/// [`payload`] of content without override or inbox item: the data's
/// members (`aps` left out), then `aps` (a unit test holds the two equal).
struct PlainPayload<'a>(&'a Content);

impl serde::Serialize for PlainPayload<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let content = self.0;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &content.data {
            if key != "aps" {
                map.serialize_entry(key, value)?;
            }
        }
        let aps = PlainAps {
            alert: AlertText::of(content),
            content_available: (content.push_type == "background").then_some(1),
        };
        map.serialize_entry("aps", &aps)?;
        map.end()
    }
}

#[derive(serde::Serialize)]
struct PlainAps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<AlertText<'a>>,
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    content_available: Option<u8>,
}

/// Deep-merges `extra` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra.clone(),
    }
}

/// What an APNs answer means for the delivery (the table in [`crate::providers::outcome`]).
/// `ExpiredProviderToken` is handled by the client (new token, one retry) before this.
/// `suffixed_topic`: the request's topic carried a push type's suffix.
pub fn outcome(
    status: u16,
    reason: &str,
    retry_after: Option<Duration>,
    suffixed_topic: bool,
) -> Outcome {
    if status == 200 {
        return Outcome::Sent;
    }
    let class = apns_class(status, reason, suffixed_topic);
    let text = match class {
        Class::Device => format!("apns:{reason}"),
        _ => format!("apns:{status} {reason}"),
    };
    class.outcome(text, retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::ApnsOverride;

    fn content() -> Content {
        Content {
            title: Some("Hi".into()),
            body: Some("There".into()),
            data: [("request_id".to_owned(), "r-1".to_owned())].into(),
            priority: Priority::High,
            collapse_key: Some("login-1".into()),
            push_type: "alert".into(),
            apns: None,
            fcm: None,
            inbox: false,
        }
    }

    #[test]
    fn payload_and_headers() {
        let mut c = content();
        c.apns = Some(ApnsOverride {
            headers: [("apns-priority".to_owned(), "5".to_owned())].into(),
            payload: Some(json!({"aps": {"sound": "default"}, "extra": 1})),
        });
        let p = payload(&c, None);
        assert_eq!(
            p,
            json!({"aps": {"alert": {"title": "Hi", "body": "There"}, "sound": "default"},
            "request_id": "r-1", "extra": 1})
        );
        let h = headers(&c, "com.acme", 1_700_000_000, "id").expect("headers");
        let all: Vec<(&str, &str)> = h
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
            .collect();
        assert_eq!(
            all,
            vec![
                ("apns-topic", "com.acme"),
                ("apns-push-type", "alert"),
                ("apns-priority", "5"),
                ("apns-expiration", "1700000000"),
                ("apns-id", "id"),
                ("apns-collapse-id", "login-1"),
            ],
            "the override replaced the priority, once"
        );
        c.apns = Some(ApnsOverride {
            headers: [("APNS-Topic".to_owned(), "com.acme.other".to_owned())].into(),
            payload: None,
        });
        c.collapse_key = None;
        let h = headers(&c, "com.acme", 0, "id").expect("headers");
        assert_eq!(h.get_all("apns-topic").iter().count(), 1);
        assert_eq!(h["apns-topic"], "com.acme.other");
        assert_eq!(h["apns-expiration"], "0");
        assert_eq!(h["apns-priority"], "10");
        c.collapse_key = Some("line\nbreak".into());
        let refused = headers(&c, "com.acme", 0, "id").expect_err("not a header value");
        assert!(refused.0.contains("apns-collapse-id"), "{}", refused.0);
        assert!(!refused.0.contains("line"), "the value is not repeated");
        c.collapse_key = None;
        c.apns = Some(ApnsOverride {
            headers: [("bad name".to_owned(), "v".to_owned())].into(),
            payload: None,
        });
        let refused = headers(&c, "com.acme", 0, "id").expect_err("not a header name");
        assert!(refused.0.contains("\"bad name\""), "{}", refused.0);
        assert_eq!(topic_for("com.acme", "voip"), "com.acme.voip");
        assert_eq!(apns_id("n", "r"), apns_id("n", "r"));
        assert_ne!(apns_id("n", "r"), apns_id("n", "s"));
        assert_eq!(apns_id("n", "r").len(), 36);
        // The same id as every build before gave (a retry after an upgrade
        // keeps its id): SHA-256 of "ntf_a/reg_b", first 16 bytes, 8-4-4-4-12.
        assert_eq!(
            apns_id("ntf_a", "reg_b"),
            "ae19ae7f-fe72-fe0a-2882-c7a224b11446"
        );
    }

    #[test]
    fn a_plain_payload_is_the_tree_written() {
        let data: std::collections::BTreeMap<String, String> = [
            ("k".to_owned(), "v".to_owned()),
            ("aps".to_owned(), "not ours".to_owned()),
            ("\u{e9}\"".to_owned(), "\n".to_owned()),
        ]
        .into();
        // (title, body, data, push type)
        let cases = [
            (Some("T"), Some("B"), data.clone(), "alert"),
            (Some("T"), None, Default::default(), "alert"),
            (None, Some("B"), data.clone(), "voip"),
            (None, None, data, "background"),
            (None, None, Default::default(), "alert"),
        ];
        for (i, (title, body, data, push_type)) in cases.into_iter().enumerate() {
            let mut c = content();
            c.title = title.map(Into::into);
            c.body = body.map(Into::into);
            c.data = data;
            c.push_type = push_type.into();
            let bytes = payload_bytes(&c, None);
            let written: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(written, payload(&c, None), "case {i}");
            // A data member named `aps` is left out, not written twice (a
            // parser keeps the last of two, APNs need not).
            let text = String::from_utf8(bytes).expect("utf-8");
            assert_eq!(text.matches("\"aps\":").count(), 1, "case {i}: {text}");
        }
        // With an override, the tree itself.
        let mut c = content();
        c.apns = Some(ApnsOverride {
            headers: Default::default(),
            payload: Some(json!({"aps": {"sound": "default"}})),
        });
        assert_eq!(
            payload_bytes(&c, None),
            payload(&c, None).to_string().into_bytes()
        );
    }

    /// Content in the inbox: its id always, the JWE only while the payload
    /// stays within 4 KiB, `mutable-content` only with an alert.
    #[test]
    fn an_inbox_item_is_named_and_its_jwe_rides_when_it_fits() {
        let mut c = content();
        c.inbox = true;
        let small = "h.k.i.c.t";
        let p = payload(
            &c,
            Some(InboxRef {
                id: "ntf_1",
                jwe: Some(small),
            }),
        );
        assert_eq!(p["push-inbox"], json!({"id": "ntf_1", "jwe": small}));
        assert_eq!(p["aps"]["mutable-content"], json!(1));
        let large = "x".repeat(4000);
        let p = payload(
            &c,
            Some(InboxRef {
                id: "ntf_1",
                jwe: Some(&large),
            }),
        );
        assert_eq!(p["push-inbox"], json!({"id": "ntf_1"}));
        assert!(p.to_string().len() <= MAX_PROVIDER_PAYLOAD);
        c.title = None;
        c.body = None;
        c.push_type = "background".into();
        let p = payload(
            &c,
            Some(InboxRef {
                id: "ntf_1",
                jwe: None,
            }),
        );
        assert_eq!(p["aps"], json!({"content-available": 1}));
    }

    #[test]
    fn outcome_table() {
        let outcome = |status, reason, after| outcome(status, reason, after, false);
        assert_eq!(outcome(200, "", None), Outcome::Sent);
        assert!(matches!(
            outcome(410, "Unregistered", None),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(400, "BadDeviceToken", None),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(400, "DeviceTokenNotForTopic", None),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(403, "InvalidProviderToken", None),
            Outcome::CredentialError(_)
        ));
        assert!(matches!(
            outcome(429, "TooManyRequests", None),
            Outcome::Retry { .. }
        ));
        assert!(
            matches!(outcome(503, "ServiceUnavailable", Some(Duration::from_secs(3))),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        assert!(matches!(
            outcome(413, "PayloadTooLarge", None),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            outcome(400, "BadPriority", None),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            outcome(400, "TopicDisallowed", None),
            Outcome::CredentialError(_)
        ));
        assert!(matches!(
            super::outcome(400, "TopicDisallowed", None, true),
            Outcome::Failed(r) if r.contains("TopicDisallowed")
        ));
        assert!(matches!(
            outcome(400, "SomethingNew", None),
            Outcome::Unknown { .. }
        ));
    }
}
