//! FCM HTTP v1 message content and the outcome table of its answers.

use std::time::Duration;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::notification::{Content, Priority};
use crate::providers::apns::message::merge;
use crate::providers::outcome::{fcm_class, Class};
use crate::providers::{AlertText, InboxRef, Outcome, MAX_PROVIDER_PAYLOAD};

/// The `message` of `messages:send` for one registration token. A
/// notification with inbox content names its item in `data`
/// (`push_inbox_id`, and `push_inbox_jwe` when the message's data and
/// notification stay within 4 KiB); on iOS an alert gets `mutable-content`.
pub fn message(
    content: &Content,
    token: &str,
    ttl_seconds: i64,
    inbox: Option<InboxRef<'_>>,
) -> Value {
    let mut message = Map::new();
    message.insert("token".into(), json!(token));
    if content.title.is_some() || content.body.is_some() {
        let mut notification = Map::new();
        if let Some(title) = &content.title {
            notification.insert("title".into(), json!(title));
        }
        if let Some(body) = &content.body {
            notification.insert("body".into(), json!(body));
        }
        message.insert("notification".into(), Value::Object(notification));
    }
    if !content.data.is_empty() {
        message.insert("data".into(), json!(content.data));
    }
    let mut android = Map::new();
    android.insert(
        "priority".into(),
        json!(if content.priority == Priority::High {
            "HIGH"
        } else {
            "NORMAL"
        }),
    );
    android.insert("ttl".into(), json!(format!("{}s", ttl_seconds.max(0))));
    // iOS through FCM: a zero TTL is APNs' "now or never".
    let zero_ttl = ttl_seconds <= 0;
    if let Some(key) = &content.collapse_key {
        android.insert("collapse_key".into(), json!(key));
    }
    message.insert("android".into(), Value::Object(android));
    // iOS through FCM: data-only messages must use priority 5 (docs/providers.md).
    let alert = content.title.is_some() || content.body.is_some();
    let apns_priority = if alert && content.priority == Priority::High {
        "10"
    } else {
        "5"
    };
    let mut apns_headers = json!({"apns-priority": apns_priority});
    if zero_ttl {
        apns_headers["apns-expiration"] = json!("0");
    }
    if let Some(key) = &content.collapse_key {
        apns_headers["apns-collapse-id"] = json!(key);
    }
    let aps = if alert {
        json!({})
    } else {
        json!({"content-available": 1})
    };
    message.insert(
        "apns".into(),
        json!({"headers": apns_headers, "payload": {"aps": aps}}),
    );
    let mut message = Value::Object(message);
    if let Some(extra) = &content.fcm {
        merge(&mut message, extra);
    }
    if let Some(inbox) = inbox {
        if alert {
            message["apns"]["payload"]["aps"]["mutable-content"] = json!(1);
        }
        message["data"]["push_inbox_id"] = json!(inbox.id);
        if let Some(jwe) = inbox.jwe {
            let size =
                |m: &Value| m["data"].to_string().len() + m["notification"].to_string().len();
            let mut with = message.clone();
            with["data"]["push_inbox_jwe"] = json!(jwe);
            if size(&with) <= MAX_PROVIDER_PAYLOAD {
                message = with;
            }
        }
    }
    message
}

/// The body of `messages:send`, `{"message": …}`, as bytes. A notification
/// without `fcm` overrides and without inbox content is written straight from
/// its content ([`Plain`]: no JSON tree made, copied and dropped per send);
/// otherwise [`message`]'s tree, which the overrides merge into.
pub fn body(
    content: &Content,
    token: &str,
    ttl_seconds: i64,
    inbox: Option<InboxRef<'_>>,
) -> Vec<u8> {
    if content.fcm.is_none() && inbox.is_none() {
        let plain = Plain::new(content, token, ttl_seconds);
        return serde_json::to_vec(&Body { message: plain }).unwrap_or_default();
    }
    let mut body = Map::new();
    body.insert(
        "message".into(),
        message(content, token, ttl_seconds, inbox),
    );
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct Body<'a> {
    message: Plain<'a>,
}

/// [`message`] for content without overrides or inbox, the same members
/// (a unit test holds the two equal).
#[derive(Serialize)]
struct Plain<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<AlertText<'a>>,
    #[serde(skip_serializing_if = "no_data")]
    data: &'a BTreeMap<String, String>,
    android: Android<'a>,
    apns: ApnsPart<'a>,
}

fn no_data(data: &&BTreeMap<String, String>) -> bool {
    data.is_empty()
}

#[derive(Serialize)]
struct Android<'a> {
    priority: &'static str,
    ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse_key: Option<&'a str>,
}

#[derive(Serialize)]
struct ApnsPart<'a> {
    headers: ApnsHeaders<'a>,
    payload: ApnsPayload,
}

#[derive(Serialize)]
struct ApnsHeaders<'a> {
    #[serde(rename = "apns-priority")]
    priority: &'static str,
    #[serde(rename = "apns-expiration", skip_serializing_if = "Option::is_none")]
    expiration: Option<&'static str>,
    #[serde(rename = "apns-collapse-id", skip_serializing_if = "Option::is_none")]
    collapse_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ApnsPayload {
    aps: Aps,
}

#[derive(Serialize)]
struct Aps {
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    content_available: Option<u8>,
}

impl<'a> Plain<'a> {
    fn new(content: &'a Content, token: &'a str, ttl_seconds: i64) -> Self {
        let alert = content.title.is_some() || content.body.is_some();
        let high = content.priority == Priority::High;
        Plain {
            token,
            notification: AlertText::of(content),
            data: &content.data,
            android: Android {
                priority: if high { "HIGH" } else { "NORMAL" },
                ttl: format!("{}s", ttl_seconds.max(0)),
                collapse_key: content.collapse_key.as_deref(),
            },
            apns: ApnsPart {
                headers: ApnsHeaders {
                    priority: if alert && high { "10" } else { "5" },
                    expiration: (ttl_seconds <= 0).then_some("0"),
                    collapse_id: content.collapse_key.as_deref(),
                },
                payload: ApnsPayload {
                    aps: Aps {
                        content_available: (!alert).then_some(1),
                    },
                },
            },
        }
    }
}

/// What an FCM answer means for the delivery (the table in [`crate::providers::outcome`]).
/// A 401 without an FcmError (our OAuth token refused) is retried by the client first.
pub fn outcome(status: u16, body: &Value, retry_after: Option<Duration>) -> Outcome {
    if status == 200 {
        return Outcome::Sent;
    }
    let error = &body["error"];
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let code = details
        .iter()
        .find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("fcm.v1.FcmError"))
        })
        .and_then(|d| d["errorCode"].as_str())
        .unwrap_or("")
        .to_owned();
    let message = error["message"].as_str().unwrap_or_default();
    let on_token = details.iter().any(|d| {
        d["fieldViolations"]
            .as_array()
            .is_some_and(|v| v.iter().any(|f| f["field"] == "message.token"))
    }) || message.contains("registration token");
    let name = if code.is_empty() {
        error["status"].as_str().unwrap_or("")
    } else {
        &code
    };
    let class = fcm_class(status, &code, on_token);
    let reason = match class {
        Class::Device if code == "INVALID_ARGUMENT" || code.is_empty() => {
            "fcm:INVALID_ARGUMENT token".to_owned()
        }
        Class::Device => format!("fcm:{code}"),
        Class::Provider => format!("fcm:{status} {name}"),
        // FCM's message names the refused field; it never holds the token.
        _ => format!("fcm:{status} {name}: {}", clip(message, 200)),
    };
    let after = match (class, status) {
        // Quota: at least a minute before trying again (docs/providers.md).
        (Class::Provider, 429) => Some(
            retry_after
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(60)),
        ),
        _ => retry_after,
    };
    class.outcome(reason, after)
}

/// At most `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, code: &str, field: Option<&str>) -> Value {
        let mut details = vec![
            json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}),
        ];
        if let Some(field) = field {
            details.push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": "x"}]}));
        }
        json!({"error": {"code": status, "message": "m", "status": "S", "details": details}})
    }

    #[test]
    fn outcome_table() {
        assert_eq!(outcome(200, &json!({}), None), Outcome::Sent);
        assert!(matches!(
            outcome(404, &error(404, "UNREGISTERED", None), None),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(403, &error(403, "SENDER_ID_MISMATCH", None), None),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(
                400,
                &error(400, "INVALID_ARGUMENT", Some("message.token")),
                None
            ),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(
            outcome(
                400,
                &error(400, "INVALID_ARGUMENT", Some("message.android.ttl")),
                None
            ),
            Outcome::Failed(_)
        ));
        assert!(
            matches!(outcome(429, &error(429, "QUOTA_EXCEEDED", None), None),
            Outcome::Retry { after: Some(d), .. } if d >= Duration::from_secs(60))
        );
        assert!(
            matches!(outcome(503, &error(503, "UNAVAILABLE", None), Some(Duration::from_secs(2))),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(2))
        );
        assert!(matches!(
            outcome(500, &error(500, "INTERNAL", None), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            outcome(401, &error(401, "THIRD_PARTY_AUTH_ERROR", None), None),
            Outcome::CredentialError(_)
        ));
        assert!(matches!(
            outcome(
                403,
                &json!({"error": {"status": "PERMISSION_DENIED"}}),
                None
            ),
            Outcome::CredentialError(_)
        ));
    }

    #[test]
    fn an_inbox_item_is_named_in_data_and_its_jwe_rides_when_it_fits() {
        let content = Content {
            title: Some("Sign in?".into()),
            body: None,
            data: Default::default(),
            priority: Priority::High,
            collapse_key: None,
            push_type: "alert".into(),
            apns: None,
            fcm: None,
            inbox: true,
        };
        let small = "h.k.i.c.t";
        let m = message(
            &content,
            "tok",
            60,
            Some(InboxRef {
                id: "ntf_1",
                jwe: Some(small),
            }),
        );
        assert_eq!(
            m["data"],
            json!({"push_inbox_id": "ntf_1", "push_inbox_jwe": small})
        );
        assert_eq!(m["apns"]["payload"]["aps"]["mutable-content"], json!(1));
        let large = "x".repeat(4090);
        let m = message(
            &content,
            "tok",
            60,
            Some(InboxRef {
                id: "ntf_1",
                jwe: Some(&large),
            }),
        );
        assert_eq!(m["data"], json!({"push_inbox_id": "ntf_1"}));
    }

    #[test]
    fn a_plain_body_is_the_message_tree_written() {
        let data: BTreeMap<String, String> = [("k".to_owned(), "v".to_owned())].into();
        // (title, body, data, priority, collapse key, push type, ttl)
        let cases = [
            (
                Some("T"),
                Some("B"),
                data.clone(),
                Priority::High,
                Some("c"),
                "alert",
                120,
            ),
            (
                Some("T"),
                None,
                BTreeMap::new(),
                Priority::Normal,
                None,
                "alert",
                0,
            ),
            (
                None,
                Some("B"),
                data.clone(),
                Priority::High,
                None,
                "alert",
                -5,
            ),
            (
                None,
                None,
                data.clone(),
                Priority::Normal,
                Some("c"),
                "background",
                60,
            ),
            (
                None,
                None,
                BTreeMap::new(),
                Priority::High,
                None,
                "background",
                0,
            ),
            (
                Some("\"q\" \u{e9}\n"),
                None,
                data,
                Priority::High,
                None,
                "alert",
                1,
            ),
        ];
        for (i, (title, body, data, priority, collapse, push_type, ttl)) in
            cases.into_iter().enumerate()
        {
            let content = Content {
                title: title.map(Into::into),
                body: body.map(Into::into),
                data,
                priority,
                collapse_key: collapse.map(Into::into),
                push_type: push_type.into(),
                apns: None,
                fcm: None,
                inbox: false,
            };
            let written: Value =
                serde_json::from_slice(&super::body(&content, "tok", ttl, None)).expect("json");
            let tree = json!({"message": message(&content, "tok", ttl, None)});
            assert_eq!(written, tree, "case {i}");
        }
    }

    #[test]
    fn message_shape() {
        let content = Content {
            title: Some("T".into()),
            body: None,
            data: [("k".to_owned(), "v".to_owned())].into(),
            priority: Priority::Normal,
            collapse_key: None,
            push_type: "alert".into(),
            apns: None,
            fcm: Some(json!({"android": {"notification": {"channel_id": "login"}}})),
            inbox: false,
        };
        let m = message(&content, "tok", 120, None);
        assert_eq!(m["token"], "tok");
        assert_eq!(m["notification"], json!({"title": "T"}));
        assert_eq!(m["data"], json!({"k": "v"}));
        assert_eq!(m["android"]["ttl"], "120s");
        assert_eq!(m["android"]["priority"], "NORMAL");
        assert_eq!(m["android"]["notification"]["channel_id"], "login");
    }
}
