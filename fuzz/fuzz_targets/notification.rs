//! Notification bodies: any bytes as a notify request never panic; whatever
//! validates becomes APNs headers that are valid HTTP header names and values
//! (no header injection through data fields), and APNs and FCM payloads — with
//! and without an inbox item, whose JWE rides only within the 4 KiB limit.
//! The payloads written straight from the content (no override, no inbox
//! item) are the same JSON as the trees they stand for. Content for the
//! inbox goes through its rules without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_service::notify::{validate, NotifyRequest};
use push_service::providers::{apns, fcm, InboxRef, MAX_PROVIDER_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = serde_json::from_slice::<NotifyRequest>(data) else {
        return;
    };
    if let Some(content) = request.content.take() {
        let _ = push_service::inbox::check(content, 1 << 20);
    }
    let Ok((_targets, content, ttl)) = validate(request) else {
        return;
    };
    // Validated content makes headers HTTP takes (names and values).
    if let Err(e) = apns::message::headers(&content, "com.example.app", 1_800_000_000_000, "id") {
        panic!("validated content made a header HTTP refuses: {}", e.0);
    }
    let jwe = "eyJhbGciOiJFQ0RILUVTK0EyNTZLVyJ9.a.b.c.d".repeat(40);
    for inbox in [None, Some(InboxRef { id: "ntf_fuzz", jwe: Some(jwe.as_str()) })] {
        let payload = apns::message::payload(&content, inbox);
        let text = serde_json::to_string(&payload).expect("serializes");
        if payload["push-inbox"].get("jwe").is_some() {
            assert!(text.len() <= MAX_PROVIDER_PAYLOAD, "an inline JWE past 4 KiB");
        }
        let written: serde_json::Value =
            serde_json::from_slice(&apns::message::payload_bytes(&content, inbox))
                .expect("the APNs payload is JSON");
        assert_eq!(written, payload, "the APNs payload as written");
        let message = fcm::message::message(&content, "token", ttl as i64, inbox);
        let written: serde_json::Value =
            serde_json::from_slice(&fcm::message::body(&content, "token", ttl as i64, inbox))
                .expect("the FCM body is JSON");
        assert_eq!(written, serde_json::json!({ "message": message }), "the FCM body as written");
    }
});
