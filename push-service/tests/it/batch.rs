//! `POST /v1/apps/{app}/notifications/batch`: one JWT, many notifications, each
//! answered in order and delivered, each idempotent on its own key.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sdk_client::{DeviceKey, NewRegistration};
use serde_json::{json, Value};

use crate::actors::{device, with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};
use crate::notify::next_within;

async fn a_batch_is_answered_in_order_and_delivered(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        let desktop = device(&app, DeviceKey::generate_p256());
        let registration = desktop
            .register(&app_id, &NewRegistration::direct("linux"))
            .await
            .expect("register");
        devices.push((desktop, registration.id));
    }
    let path = format!("/v1/apps/{app_id}/notifications/batch");
    let item = |i: usize, key: Option<&str>| {
        let mut body = json!({"targets": {"registrations": [devices[i].1]},
            "notification": {"title": format!("request {i}")}});
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        body
    };
    let batch = json!({"notifications": [
        item(0, Some("batch-0")),
        {"targets": {"registrations": [devices[1].1]}, "ttl_seconds": 99999999},
        item(1, None),
        item(2, Some("batch-2")),
    ]});
    let (status, answer) = with_jwt(
        &app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(batch.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{answer}");
    for i in [0, 2, 3] {
        assert_eq!(results[i]["status"], 202, "{answer}");
        assert_eq!(results[i]["notification"]["accepted"], 1, "{answer}");
    }
    assert_eq!(results[1]["status"], 422);
    let detail = results[1]["problem"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("notifications[1]:") && detail.contains("ttl_seconds"),
        "the problem names the item and the field: {detail}"
    );
    assert_eq!(
        results[1]["problem"]["type"],
        "urn:push-service:problem:invalid-request"
    );
    let ids: Vec<&Value> = [0, 2, 3]
        .iter()
        .map(|&i| &results[i]["notification"]["id"])
        .collect();
    for ((desktop, registration), id) in devices.iter().zip(&ids) {
        let mut listener = desktop.listen(registration);
        let event = next_within(&mut listener, Duration::from_secs(20))
            .await
            .expect("delivered");
        assert_eq!(&&event.notification["id"], id);
    }

    // The same batch again: the keyed items answer their first response, the
    // unkeyed one is a new notification.
    let (status, again) = with_jwt(
        &app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(batch),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["results"][0], results[0]);
    assert_eq!(again["results"][3], results[3]);
    assert_ne!(again["results"][2]["notification"]["id"], *ids[1]);

    // A batch without keys whose items all read as notify requests is read
    // straight from the body: answered in order and delivered the same way.
    let plain = json!({"notifications": [item(2, None), item(0, None), item(1, None)]});
    let (status, answer) = with_jwt(
        &app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(plain),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{answer}");
    for (result, device) in results.iter().zip([2, 0, 1]) {
        assert_eq!(result["status"], 202, "{answer}");
        assert_eq!(result["notification"]["accepted"], 1, "{answer}");
        let (desktop, registration) = &devices[device];
        let id = &result["notification"]["id"];
        let mut listener = desktop.listen(registration);
        // A stream opened again may first repeat what it already handed over.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = next_within(&mut listener, left).await.expect("delivered");
            if &event.notification["id"] == id {
                assert_eq!(
                    event.notification["title"],
                    format!("request {device}"),
                    "{answer}"
                );
                break;
            }
        }
    }
}
both_backends!(
    a_batch_is_answered_in_order_and_delivered,
    super::a_batch_is_answered_in_order_and_delivered
);

async fn a_batch_that_cannot_be_read_is_refused_whole(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let reader = TestNotifier::create(&app, &app_id, &["registrations:read"]).await;
    let path = format!("/v1/apps/{app_id}/notifications/batch");
    let one = json!({"targets": {"all": true}, "data": {"k": "v"}});
    let cases = [
        (json!({"notifications": []}), "1 to 500"),
        (json!({"notifications": vec![one.clone(); 501]}), "1 to 500"),
        (
            json!({"notifications": [one.clone(), 7]}),
            "notifications[1]",
        ),
        (
            json!({"notifications": [{"targets": {"all": true}, "idempotency_key": ""}]}),
            "idempotency_key",
        ),
        (json!({"items": [one.clone()]}), "unknown field"),
        (
            json!({"notifications": [one.clone(), {"targets": {"all": true}, "extra": 1}]}),
            "notifications[1]",
        ),
        (
            json!({"notifications": [{"targets": {"all": true}, "ttl_seconds": "soon"}]}),
            "notifications[0]",
        ),
    ];
    for (body, says) in cases {
        let (status, problem) = with_jwt(
            &app,
            Method::POST,
            &path,
            &notifier.jwt("notify"),
            Some(body),
        )
        .await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            says,
        );
    }
    let (status, problem) = with_jwt(
        &app,
        Method::POST,
        &path,
        &reader.jwt("registrations:read"),
        Some(json!({"notifications": [one]})),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::FORBIDDEN,
        "insufficient-scope",
        "notify",
    );
}
both_backends!(
    a_batch_that_cannot_be_read_is_refused_whole,
    super::a_batch_that_cannot_be_read_is_refused_whole
);
