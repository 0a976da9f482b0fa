//! The notify request against the API's and the providers' rules: what APNs or
//! FCM would refuse later is refused here, naming the field.

/// A notification a provider would refuse: what is wrong, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidNotification(pub String);

impl From<String> for InvalidNotification {
    fn from(message: String) -> Self {
        InvalidNotification(message)
    }
}

impl From<&str> for InvalidNotification {
    fn from(message: &str) -> Self {
        InvalidNotification(message.to_owned())
    }
}

use std::collections::BTreeMap;

use super::{Content, NotifyRequest, DEFAULT_TTL_SECONDS, MAX_PAYLOAD_BYTES, MAX_TTL_SECONDS};
use crate::notification::{check_targets, TargetSpec};

/// APNs headers a request may set through `apns.headers`.
const APNS_HEADERS: &[&str] = &[
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-push-type",
];
const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
    "widgets",
    "controls",
];

fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Keys FCM reserves in `data` (and APNs' `aps`, which the APNs payload has at its top).
fn check_data_keys<'a>(
    field: &str,
    keys: impl Iterator<Item = &'a String>,
) -> Result<(), InvalidNotification> {
    for key in keys {
        let lower = key.to_ascii_lowercase();
        if key == "aps" {
            return Err(format!(
                "`{field}`: key `aps` is reserved for APNs' own dictionary (set it through `apns.payload.aps`)"
            ).into());
        }
        if key.is_empty()
            || key.len() > 256
            || lower == "from"
            || lower == "message_type"
            || lower.starts_with("google")
            || lower.starts_with("gcm")
        {
            return Err(format!(
                "`{field}`: key `{key}` is empty, too long, or reserved by FCM (from, message_type, google*, gcm*)"
            ).into());
        }
    }
    Ok(())
}

/// APNs headers a request sets, as APNs would judge their values.
fn check_apns_headers(
    field: &str,
    headers: &BTreeMap<String, String>,
) -> Result<(), InvalidNotification> {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !APNS_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "`{field}`: `{name}` cannot be set (allowed: {})",
                APNS_HEADERS.join(", ")
            )
            .into());
        }
        if !header_safe(value) {
            return Err(format!("`{field}.{name}`: printable ASCII, at most 256 bytes").into());
        }
        let ok = match lower.as_str() {
            "apns-priority" => matches!(value.as_str(), "1" | "5" | "10"),
            "apns-expiration" => value.len() <= 12 && value.bytes().all(|b| b.is_ascii_digit()),
            "apns-collapse-id" => value.len() <= 64,
            "apns-push-type" => PUSH_TYPES.contains(&value.as_str()),
            _ => true,
        };
        if !ok {
            let rule = match lower.as_str() {
                "apns-priority" => "`1`, `5` or `10`".to_owned(),
                "apns-expiration" => {
                    "seconds since the epoch, as digits (`0`: now or never)".to_owned()
                }
                "apns-collapse-id" => "at most 64 bytes".to_owned(),
                _ => format!("one of {}", PUSH_TYPES.join(", ")),
            };
            return Err(format!("`{field}.{name}`: `{value}` is not {rule}").into());
        }
    }
    Ok(())
}

/// Keys of an FCM `message` that choose its target: the registration's token does.
const FCM_TARGET_KEYS: &[&str] = &["token", "topic", "condition", "fid", "name"];

/// The raw `fcm` object, as FCM would judge it.
fn check_fcm(fcm: &serde_json::Value) -> Result<(), InvalidNotification> {
    let Some(object) = fcm.as_object() else {
        return Err("`fcm` must be a JSON object".into());
    };
    if let Some(key) = FCM_TARGET_KEYS.iter().find(|k| object.contains_key(**k)) {
        return Err(format!(
            "`fcm.{key}`: the target is the registration's; {} cannot be set",
            FCM_TARGET_KEYS.join(", ")
        )
        .into());
    }
    if let Some(data) = object.get("data") {
        let Some(map) = data.as_object() else {
            return Err("`fcm.data` must be an object of strings".into());
        };
        if let Some((key, _)) = map.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!("`fcm.data.{key}`: FCM takes string values only").into());
        }
        check_data_keys("fcm.data", map.keys())?;
    }
    if let Some(android) = object.get("android") {
        if !android.is_object() {
            return Err("`fcm.android` must be a JSON object".into());
        }
        if let Some(priority) = android.get("priority") {
            if !matches!(priority.as_str(), Some("NORMAL" | "HIGH")) {
                return Err(format!(
                    "`fcm.android.priority`: {priority} is not `NORMAL` or `HIGH`"
                )
                .into());
            }
        }
        if let Some(ttl) = android.get("ttl") {
            let valid = ttl
                .as_str()
                .and_then(duration_seconds)
                .is_some_and(|s| s <= MAX_TTL_SECONDS as f64);
            if !valid {
                return Err(format!(
                    "`fcm.android.ttl`: {ttl} is not a duration like \"3600s\" of at most {MAX_TTL_SECONDS}s"
                ).into());
            }
        }
    }
    if let Some(apns) = object.get("apns") {
        if let Some(headers) = apns.get("headers") {
            let headers: BTreeMap<String, String> = serde_json::from_value(headers.clone())
                .map_err(|_| "`fcm.apns.headers` must be an object of strings".to_owned())?;
            check_apns_headers("fcm.apns.headers", &headers)?;
        }
    }
    Ok(())
}

/// Seconds of a protobuf JSON duration (`"3.5s"`: digits, up to 9 fraction digits, `s`).
fn duration_seconds(text: &str) -> Option<f64> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 12
        || !digits(whole)
        || fraction.len() > 9
        || !digits(fraction)
    {
        return None;
    }
    number.parse().ok()
}

/// Checks a request against the API's and the providers' rules; the error names the field.
pub fn validate(request: NotifyRequest) -> Result<(TargetSpec, Content, u64), InvalidNotification> {
    let targets = check_targets(request.targets).map_err(|e| InvalidNotification(e.0))?;
    let alert = request.notification.unwrap_or_default();
    for (name, value, max) in [("title", &alert.title, 256), ("body", &alert.body, 2048)] {
        if let Some(v) = value {
            if v.chars().count() > max {
                return Err(format!("`notification.{name}`: at most {max} characters").into());
            }
        }
    }
    check_data_keys("data", request.data.keys())?;
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl > MAX_TTL_SECONDS {
        return Err(format!("`ttl_seconds`: at most {MAX_TTL_SECONDS} (28 days)").into());
    }
    if let Some(key) = &request.collapse_key {
        if key.is_empty() || key.len() > 64 || !header_safe(key) {
            return Err("`collapse_key`: 1 to 64 printable ASCII bytes".into());
        }
    }
    let mut apns = request.apns;
    // `apns.headers.apns-push-type` is another way to say `push_type`: one value.
    let header_push_type = match &mut apns {
        Some(apns) => {
            let key = apns
                .headers
                .keys()
                .find(|k| k.eq_ignore_ascii_case("apns-push-type"))
                .cloned();
            key.and_then(|k| apns.headers.remove(&k))
        }
        None => None,
    };
    let from_header = request.push_type.is_none() && header_push_type.is_some();
    let requested = match (request.push_type, header_push_type) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "`apns.headers.apns-push-type` (`{b}`) differs from `push_type` (`{a}`)"
            )
            .into())
        }
        (a, b) => a.or(b),
    };
    let push_type_field = if from_header {
        "apns.headers.apns-push-type"
    } else {
        "push_type"
    };
    let has_alert = alert.title.is_some() || alert.body.is_some();
    let push_type = match requested {
        Some(t) if PUSH_TYPES.contains(&t.as_str()) => t,
        Some(t) => {
            return Err(format!(
                "`{push_type_field}`: `{t}` is not one of {}",
                PUSH_TYPES.join(", ")
            )
            .into())
        }
        None if has_alert => "alert".into(),
        None => "background".into(),
    };
    if let Some(apns) = &apns {
        check_apns_headers("apns.headers", &apns.headers)?;
        if let Some(payload) = &apns.payload {
            if !payload.is_object() {
                return Err("`apns.payload` must be a JSON object".into());
            }
            if payload.get("aps").is_some_and(|aps| !aps.is_object()) {
                return Err("`apns.payload.aps` must be a JSON object".into());
            }
        }
    }
    let aps = apns
        .as_ref()
        .and_then(|a| a.payload.as_ref())
        .and_then(|p| p.get("aps"));
    let aps_shows = ["alert", "badge", "sound"]
        .iter()
        .any(|k| aps.is_some_and(|aps| aps.get(*k).is_some()));
    let priority_header = apns.as_ref().and_then(|a| {
        a.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("apns-priority"))
            .map(|(_, v)| v.as_str())
    });
    match push_type.as_str() {
        "alert" if !has_alert && !aps_shows => {
            return Err(
                "`push_type` alert: APNs needs something to show: `notification.title`, \
                 `notification.body`, or `apns.payload.aps` alert, badge or sound"
                    .into(),
            )
        }
        "background" if has_alert || aps_shows => {
            return Err(
                "`push_type` background: APNs refuses a title, body, alert, badge or \
                 sound in a background push (send it as `alert`)"
                    .into(),
            )
        }
        "background" if priority_header == Some("10") => {
            return Err(
                "`apns.headers.apns-priority`: a background push takes priority 5 or 1, not 10"
                    .into(),
            )
        }
        _ => {}
    }
    if let Some(fcm) = &request.fcm {
        check_fcm(fcm)?;
    }
    let content = Content {
        title: alert.title,
        body: alert.body,
        data: request.data,
        priority: request.priority.unwrap_or_default(),
        collapse_key: request.collapse_key,
        push_type,
        apns,
        fcm: request.fcm,
        inbox: false,
    };
    let size = serde_json::to_vec(&content)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "the notification is {size} bytes as JSON; providers accept at most {MAX_PAYLOAD_BYTES}"
        )
        .into());
    }
    Ok((targets, content, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: serde_json::Value) -> Result<Content, InvalidNotification> {
        let mut full = json!({"targets": {"registrations": ["reg_1"]}});
        for (k, v) in body.as_object().expect("object") {
            full[k] = v.clone();
        }
        let request: NotifyRequest = serde_json::from_value(full).map_err(|e| e.to_string())?;
        validate(request).map(|(_, content, _)| content)
    }

    #[test]
    fn the_payload_limit_is_the_stored_json_s_length() {
        let with =
            |n: usize| check(json!({"notification": {"title": "t"}, "data": {"k": "x".repeat(n)}}));
        let length = |c: &Content| serde_json::to_vec(c).expect("json").len();
        let fits = MAX_PAYLOAD_BYTES - length(&with(0).expect("small"));
        let content = with(fits).expect("exactly at the limit");
        assert_eq!(length(&content), MAX_PAYLOAD_BYTES);
        let over = with(fits + 1).expect_err("one byte over");
        assert!(
            over.0
                .contains(&format!("is {} bytes", MAX_PAYLOAD_BYTES + 1)),
            "{}",
            over.0
        );
    }

    #[test]
    fn what_a_provider_would_refuse_is_refused_here() {
        let alert = json!({"title": "t"});
        // (request fields, the field the error must name; None: accepted)
        let table = [
            (json!({"notification": alert}), None),
            (
                json!({"notification": alert, "fcm": {"token": "other"}}),
                Some("fcm.token"),
            ),
            (
                json!({"notification": alert, "fcm": {"topic": "news"}}),
                Some("fcm.topic"),
            ),
            (
                json!({"notification": alert, "fcm": {"condition": "'a' in topics"}}),
                Some("fcm.condition"),
            ),
            (
                json!({"notification": alert, "fcm": {"name": "x"}}),
                Some("fcm.name"),
            ),
            (
                json!({"notification": alert, "fcm": {"android": {"priority": "urgent"}}}),
                Some("fcm.android.priority"),
            ),
            (
                json!({"notification": alert, "fcm": {"android": {"priority": "HIGH", "ttl": "60s"}}}),
                None,
            ),
            (
                json!({"notification": alert, "fcm": {"android": {"ttl": "soon"}}}),
                Some("fcm.android.ttl"),
            ),
            (
                json!({"notification": alert, "fcm": {"android": {"ttl": "2419201s"}}}),
                Some("fcm.android.ttl"),
            ),
            (
                json!({"notification": alert, "fcm": {"android": {"ttl": "1.5s"}}}),
                None,
            ),
            (
                json!({"notification": alert, "fcm": {"data": {"k": 1}}}),
                Some("fcm.data.k"),
            ),
            (
                json!({"notification": alert, "fcm": {"data": {"google.x": "v"}}}),
                Some("fcm.data"),
            ),
            (
                json!({"notification": alert, "fcm": {"apns": {"headers": {"apns-priority": "7"}}}}),
                Some("fcm.apns.headers.apns-priority"),
            ),
            (
                json!({"notification": alert, "apns": {"headers": {"apns-priority": "7"}}}),
                Some("apns.headers.apns-priority"),
            ),
            (
                json!({"notification": alert, "apns": {"headers": {"apns-priority": "5"}}}),
                None,
            ),
            (
                json!({"notification": alert, "apns": {"headers": {"apns-expiration": "tomorrow"}}}),
                Some("apns.headers.apns-expiration"),
            ),
            (
                json!({"notification": alert, "apns": {"headers": {"apns-expiration": "0"}}}),
                None,
            ),
            (
                json!({"notification": alert, "apns": {"headers": {"apns-push-type": "telepathy"}}}),
                Some("apns.headers.apns-push-type"),
            ),
            (
                json!({"notification": alert, "push_type": "alert", "apns": {"headers": {"apns-push-type": "voip"}}}),
                Some("apns-push-type"),
            ),
            (
                json!({"data": {"k": "v"}, "apns": {"headers": {"apns-priority": "10"}}}),
                Some("apns-priority"),
            ),
            (json!({"data": {"k": "v"}, "push_type": "background"}), None),
            (
                json!({"notification": alert, "push_type": "background"}),
                Some("push_type"),
            ),
            (
                json!({"data": {"k": "v"}, "push_type": "alert"}),
                Some("push_type"),
            ),
            (
                json!({"push_type": "alert", "apns": {"payload": {"aps": {"badge": 3}}}}),
                None,
            ),
            (
                json!({"apns": {"payload": {"aps": 3}}}),
                Some("apns.payload.aps"),
            ),
            (
                json!({"notification": alert, "data": {"aps": "x"}}),
                Some("data"),
            ),
            (
                json!({"notification": alert, "data": {"from": "x"}}),
                Some("data"),
            ),
            (json!({"notification": alert, "ttl_seconds": 0}), None),
        ];
        for (i, (body, field)) in table.into_iter().enumerate() {
            let result = check(body.clone());
            match field {
                None => assert!(result.is_ok(), "row {i}: {body} → {result:?}"),
                Some(field) => {
                    let error = result.err().map(|e| e.0).unwrap_or_default();
                    assert!(error.contains(field), "row {i}: {body} → {error:?}");
                }
            }
        }
    }

    #[test]
    fn the_push_type_header_becomes_the_push_type() {
        let content = check(json!({"data": {"k": "v"},
            "apns": {"headers": {"apns-push-type": "background", "apns-priority": "5"}}}))
        .expect("valid");
        assert_eq!(content.push_type, "background");
        let headers = &content.apns.expect("apns").headers;
        assert!(!headers.contains_key("apns-push-type"), "{headers:?}");
    }
}
