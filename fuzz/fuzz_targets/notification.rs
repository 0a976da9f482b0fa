//! Notification bodies: any bytes as a notify request never panic; whatever
//! validates becomes APNs headers that are valid HTTP header names and values
//! (no header injection through data fields), and APNs and FCM payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_service::notify::{validate, NotifyRequest};
use push_service::providers::{apns, fcm};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<NotifyRequest>(data) else {
        return;
    };
    let Ok((_targets, content, ttl)) = validate(request) else {
        return;
    };
    for (name, value) in apns::message::headers(&content, "com.example.app", 1_800_000_000_000, "id") {
        assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok(), "header name {name:?}");
        assert!(http::HeaderValue::from_str(&value).is_ok(), "header {name}: {value:?}");
    }
    let payload = apns::message::payload(&content);
    assert!(serde_json::to_vec(&payload).is_ok());
    let message = fcm::message::message(&content, "token", ttl as i64);
    assert!(serde_json::to_vec(&message).is_ok());
});
