//! Abuse checks across the whole API: every operation of the OpenAPI document
//! refuses missing, wrong and cross-app credentials; deeply nested JSON and
//! slow bodies get clear 4xx answers and leave the service serving.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sdk_client::{DeviceKey, NewRegistration};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::actors::{device, TestNotifier};
use crate::helpers::{read, spawn, spawn_app, Backend, Options};

/// Every operation of the live OpenAPI document with its security scheme.
async fn operations(app: &crate::helpers::TestApp) -> Vec<(Method, String, String)> {
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let scheme = operation["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned())
                .unwrap_or_default();
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            out.push((method, path.clone(), scheme));
        }
    }
    out
}

#[tokio::test]
async fn every_operation_refuses_missing_wrong_and_foreign_credentials() {
    let app = spawn_app(Backend::Sqlite).await;
    let ours = app.create_app("Ours").await;
    let theirs = app.create_app("Theirs").await;
    let our_notifier = TestNotifier::create(
        &app,
        &ours,
        &["notify", "registrations:read", "registrations:delete"],
    )
    .await;
    let their_notifier = TestNotifier::create(
        &app,
        &theirs,
        &["notify", "registrations:read", "registrations:delete"],
    )
    .await;
    let our_device = device(&app, DeviceKey::generate_p256());
    let our_registration = our_device
        .register(&ours, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let their_device_key = DeviceKey::generate_p256();

    let operations = operations(&app).await;
    assert!(operations.len() >= 30, "{} operations", operations.len());
    let mut checked = 0;
    for (method, template, scheme) in &operations {
        let path = template
            .replace("{app}", &ours)
            .replace("{id}", &our_registration.id);
        let url = app.url(&path);
        let body = matches!(*method, Method::POST | Method::PUT).then(|| json!({}));
        let send = |auth: Option<String>| {
            let mut request = app.client.request(method.clone(), &url);
            if let Some(auth) = auth {
                request = request.bearer_auth(auth);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            async move { read(request.send().await.expect("sent")).await }
        };
        match scheme.as_str() {
            "admin_token" => {
                for (what, auth) in [
                    ("no token", None),
                    (
                        "wrong token",
                        Some("not-the-admin-token-0123456789".to_owned()),
                    ),
                    ("a notifier's JWT", Some(our_notifier.jwt("notify"))),
                ] {
                    let (status, problem) = send(auth).await;
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {template} with {what}: {problem}"
                    );
                    assert_eq!(problem["type"], "urn:push-service:problem:unauthorized");
                }
            }
            "notifier_jwt" => {
                for (what, auth) in [
                    ("no token", None),
                    ("the admin token", Some(app.admin_token.clone())),
                    (
                        "another app's notifier",
                        Some(their_notifier.jwt("notify registrations:read registrations:delete")),
                    ),
                ] {
                    let (status, problem) = send(auth).await;
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {template} with {what}: {problem}"
                    );
                }
                // The other app's notifier on its own app path cannot reach our registration.
                if template.contains("{id}") && template.contains("/registrations/") {
                    let foreign = app.url(
                        &template
                            .replace("{app}", &theirs)
                            .replace("{id}", &our_registration.id),
                    );
                    let mut request = app.client.request(method.clone(), foreign).bearer_auth(
                        their_notifier.jwt("notify registrations:read registrations:delete"),
                    );
                    if *method == Method::PUT {
                        request = request.json(&json!({"aliases": ["x"]}));
                    }
                    let (status, problem) = read(request.send().await.expect("sent")).await;
                    assert_eq!(
                        status,
                        StatusCode::NOT_FOUND,
                        "{method} {template} across apps: {problem}"
                    );
                }
            }
            "dpop" => {
                let (status, _) = send(None).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {template} without a proof"
                );
                // Another device's key proves itself but does not own our registration.
                if template.contains("{id}") && !template.ends_with("/events") {
                    let stranger = device(&app, their_device_key.clone());
                    let result = match *method {
                        Method::GET => stranger.status(&our_registration.id).await.map(|_| ()),
                        Method::DELETE => stranger.delete(&our_registration.id).await,
                        _ => stranger
                            .rotate(&our_registration.id, "direct-token")
                            .await
                            .map(|_| ()),
                    };
                    let err = result.expect_err("a stranger's key is refused");
                    assert!(
                        format!("{err:?}").contains("403") || format!("{err:?}").contains("404"),
                        "{method} {template}: {err:?}"
                    );
                }
            }
            _ => continue,
        }
        checked += 1;
    }
    assert!(checked >= 28, "checked {checked} operations");
    // Nothing of ours changed hands.
    let info = our_device
        .status(&our_registration.id)
        .await
        .expect("still ours");
    assert_eq!(info.status, "active");
}

#[tokio::test]
async fn deeply_nested_json_is_a_clear_400_and_the_service_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"targets\": {{\"all\": true}}, \"data\": {}{}}}",
        "{\"a\":".repeat(5_000),
        "1".to_owned() + &"}".repeat(5_000)
    );
    for (path, token, body) in [
        (
            "/v1/apps".to_owned(),
            app.admin_token.clone(),
            nested.clone(),
        ),
        (
            format!("/v1/apps/{app_id}/notifications"),
            notifier.jwt("notify"),
            nested.clone(),
        ),
        (
            format!("/v1/apps/{app_id}/notifications"),
            notifier.jwt("notify"),
            deep_object,
        ),
    ] {
        let (status, problem) = read(
            app.client
                .post(app.url(&path))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {status} {problem}"
        );
        assert!(problem["detail"].as_str().is_some(), "{problem}");
    }
    let (status, _) = app.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_body_gets_408_without_holding_up_others() {
    let mut options = Options::new(Backend::Sqlite);
    options.extra = "request_timeout_seconds = 2\n".into();
    let app = spawn(options).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/apps HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{",
        app.admin_token
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    let started = Instant::now();
    // Trickle a byte every 300 ms, never finishing the body, while another client is served.
    let trickle = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.admin(Method::GET, "/v1/apps", None).await.0
    };
    let ((), other) = tokio::join!(trickle, meanwhile);
    assert_eq!(other, StatusCode::OK, "another client is served meanwhile");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "answered after {:?}",
        started.elapsed()
    );
}

/// NUL (and other control characters) in ids, claims and bodies: a 4xx before
/// any query, the same on both backends (PostgreSQL cannot store a NUL in text).
async fn control_characters(app: crate::helpers::TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify", "registrations:read"]).await;
    // In a path id, unauthenticated and authenticated.
    for path in [
        format!("/v1/apps/{app_id}%00/notifications/x"),
        format!("/v1/apps/{app_id}/notifications/ntf_%00"),
        format!("/v1/apps/{app_id}/registrations/reg%00x"),
        "/v1/registrations/reg_%00".to_string(),
        "/v1/apps/app%00".to_string(),
    ] {
        for token in [None, Some(notifier.jwt("registrations:read"))] {
            let mut request = app.client.get(app.url(&path));
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let (status, body) = read(request.send().await.expect("sent")).await;
            assert!(status.is_client_error(), "{path}: {status} {body}");
        }
    }
    let (status, _) = app.admin(Method::GET, "/v1/apps/app%00x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // In a query parameter.
    let (status, _) = app.admin(Method::GET, "/v1/apps?after=a%00b", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // In a JWT's `iss` and `jti`.
    for (claim, value) in [("iss", "nfr_\u{0}x"), ("jti", "a\u{0}b")] {
        let (header, mut claims) = notifier.parts("notify");
        claims[claim] = json!(value);
        let token = notifier.key.sign_jws(&header, &claims);
        let (status, body) = read(
            app.client
                .post(app.url(&format!("/v1/apps/{app_id}/notifications")))
                .bearer_auth(token)
                .json(&json!({"targets": {"registrations": ["reg_x"]}, "notification": {"title": "t"}}))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claim}: {body}");
    }
    // In a body.
    let (status, body) = app
        .admin(Method::POST, "/v1/apps", Some(json!({"name": "a\u{0}b"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = read(
        app.client
            .post(app.url(&format!("/v1/apps/{app_id}/notifications")))
            .bearer_auth(notifier.jwt("notify"))
            .json(&json!({"targets": {"registrations": ["reg_\u{0}"]}, "notification": {"title": "t"}}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // The service still serves.
    let (status, _) = app.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::OK);
}
crate::both_backends!(
    control_characters_in_ids_claims_and_bodies_are_4xx,
    super::control_characters
);
