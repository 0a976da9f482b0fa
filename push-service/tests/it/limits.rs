//! Rate limits shared by nodes through Redis, per-app overrides, and the audit log.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::actors::TestNotifier;
use crate::fixtures::service_account;
use crate::helpers::{spawn, spawn_app, Backend, Options, TestApp};

/// Sends one notification (to an unknown registration: accepted, nothing to deliver).
async fn notify(app: &TestApp, app_id: &str, notifier: &TestNotifier) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/apps/{app_id}/notifications")))
        .bearer_auth(notifier.jwt("notify"))
        .json(&json!({"targets": {"registrations": ["reg_nobody"]},
            "notification": {"title": "t"}}))
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn a_notifier_over_its_limit_gets_429_on_every_node_while_another_keeps_service() {
    let a = spawn_app(Backend::Postgres).await;
    let mut join = Options::new(Backend::Postgres);
    join.join = Some((a.database_url.clone(), a.prefix.clone()));
    let b = spawn(join).await;
    let app_id = a.create_app("Acme").await;

    // 5 requests/s per notifier; the burst is 10 (the floor).
    let (status, body) = a
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/limits"),
            Some(json!({"notifier_requests_per_second": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["notifier_requests_per_second"], json!(5.0));
    assert_eq!(body["custom"], json!(true));
    let (_, body) = a
        .admin(Method::GET, &format!("/v1/apps/{app_id}/limits"), None)
        .await;
    assert_eq!(body["notifier_requests_per_second"], json!(5.0));
    let noisy = TestNotifier::create(&a, &app_id, &["notify"]).await;
    let quiet = TestNotifier::create(&a, &app_id, &["notify"]).await;

    // The noisy one sends 40 requests alternating between the nodes, the quiet
    // one 8 (within its own burst) interleaved with them.
    let start = Instant::now();
    let mut noisy_ok = 0;
    let mut refused = Vec::new();
    let mut refused_on = [0, 0];
    let mut quiet_statuses = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        let response = notify(node, &app_id, &noisy).await;
        match response.status() {
            StatusCode::ACCEPTED => noisy_ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused_on[i % 2] += 1;
                refused.push(response);
            }
            other => panic!("unexpected {other}"),
        }
        if i % 5 == 0 {
            let node = if i % 2 == 0 { &b } else { &a };
            quiet_statuses.push(notify(node, &app_id, &quiet).await.status());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Shared across nodes: at most the burst plus what refilled meanwhile
    // (per-node buckets would have let about twice as many through).
    let allowed = 10.0 + 5.0 * elapsed + 1.0;
    assert!(
        (noisy_ok as f64) <= allowed && noisy_ok >= 10,
        "noisy got {noisy_ok} through in {elapsed:.2}s (allowed {allowed:.1})"
    );
    assert!(
        refused_on[0] > 0 && refused_on[1] > 0,
        "both nodes refuse: {refused_on:?}"
    );
    assert!(
        quiet_statuses.iter().all(|s| *s == StatusCode::ACCEPTED),
        "the other notifier keeps full service: {quiet_statuses:?}"
    );

    let response = refused.pop().expect("a refusal");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let retry_after: u64 = header("retry-after").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header("ratelimit-limit"), "10");
    assert_eq!(header("ratelimit-remaining"), "0");
    assert_eq!(
        header("content-type"),
        "application/problem+json",
        "a problem document"
    );
    let problem: Value = response.json().await.expect("json");
    assert_eq!(
        problem["type"],
        json!("urn:push-service:problem:rate-limited")
    );

    // After Retry-After, the noisy notifier is served again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(
        notify(&b, &app_id, &noisy).await.status(),
        StatusCode::ACCEPTED
    );

    // Back to the defaults.
    let (status, _) = a
        .admin(Method::DELETE, &format!("/v1/apps/{app_id}/limits"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = b
        .admin(Method::GET, &format!("/v1/apps/{app_id}/limits"), None)
        .await;
    assert_eq!(body["custom"], json!(false));
}

/// Anonymous requests from the test's address until one is refused; how many passed.
async fn anonymous_until_refused(app: &TestApp, forwarded_for: Option<&str>) -> usize {
    for i in 0..100 {
        let mut request = app.client.get(app.url("/openapi.json"));
        if let Some(hop) = forwarded_for {
            request = request.header("x-forwarded-for", hop);
        }
        let response = request.send().await.expect("sent");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            return i;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    100
}

async fn no_lock_out(backend: Backend) {
    let mut options = Options::new(backend);
    options.extra = "rate_limit_address_requests_per_second = 2
"
    .into();
    let app = spawn(options).await;
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let device = crate::actors::device(&app, sdk_client::DeviceKey::generate_p256());
    let registration = device
        .register(&app_id, &sdk_client::NewRegistration::direct("linux"))
        .await
        .expect("register");
    // 1,000 failed authentications from this address: charged per address, and
    // answered 429 once its allowance is used up.
    let mut unauthorized = 0;
    let mut limited = 0;
    for _ in 0..1000 {
        let response = app
            .client
            .post(app.url(&format!("/v1/apps/{app_id}/notifications")))
            .bearer_auth("not.a.jwt")
            .json(&json!({}))
            .send()
            .await
            .expect("sent");
        match response.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert!(
        unauthorized <= 40 && limited >= 950,
        "{unauthorized} / {limited}"
    );
    // Valid credentials from the same address are served at once: the address
    // bucket never refuses them.
    let (status, _) = app.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        notify(&app, &app_id, &notifier).await.status(),
        StatusCode::ACCEPTED
    );
    let own = device.status(&registration.id).await.expect("device call");
    assert_eq!(own.id, registration.id);
    // Anonymous requests are still limited per address.
    assert!(anonymous_until_refused(&app, None).await < 30);
    // Probes are never limited.
    for _ in 0..20 {
        let response = app
            .client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn failed_authentications_never_lock_out_valid_credentials_sqlite() {
    no_lock_out(Backend::Sqlite).await;
}

#[tokio::test]
async fn failed_authentications_never_lock_out_valid_credentials_postgres() {
    no_lock_out(Backend::Postgres).await;
}

async fn behind_a_proxy(backend: Backend) {
    // Behind a trusted proxy (the test's own address plays it): two clients are
    // counted apart.
    let mut options = Options::new(backend);
    options.extra = "rate_limit_address_requests_per_second = 2
trusted_proxies = \"127.0.0.0/8\"\n"
        .into();
    let app = spawn(options).await;
    let first = anonymous_until_refused(&app, Some("198.51.100.1")).await;
    assert!((5..30).contains(&first), "{first}");
    let second = anonymous_until_refused(&app, Some("198.51.100.2")).await;
    assert!(
        (5..30).contains(&second),
        "another client has its own allowance: {second}"
    );
    // A client cannot pick its address: what it sends on the left of the list is
    // not the hop the proxy saw.
    let spoofed = anonymous_until_refused(&app, Some("203.0.113.77, 198.51.100.1")).await;
    assert_eq!(spoofed, 0, "still counted as 198.51.100.1");

    // Without trusted proxies the header is ignored: every request counts
    // against the peer, whatever it claims.
    let mut options = Options::new(backend);
    options.extra = "rate_limit_address_requests_per_second = 2\n".into();
    let app = spawn(options).await;
    let mut passed = 0;
    for i in 0..100 {
        let response = app
            .client
            .get(app.url("/openapi.json"))
            .header("x-forwarded-for", format!("198.51.100.{}", i % 250))
            .send()
            .await
            .expect("sent");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        passed += 1;
    }
    assert!(
        passed < 30,
        "X-Forwarded-For from an untrusted peer was believed: {passed}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_counted_apart_sqlite() {
    behind_a_proxy(Backend::Sqlite).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_counted_apart_postgres() {
    behind_a_proxy(Backend::Postgres).await;
}

crate::both_backends!(
    audit_log,
    super::audit_log_names_who_what_when_and_where_without_secrets
);

async fn audit_log_names_who_what_when_and_where_without_secrets(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let (account, private_key_pem) = service_account("acme-project");
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/credentials/fcm"),
            Some(json!({"service_account": account})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    assert_eq!(
        notify(&app, &app_id, &notifier).await.status(),
        StatusCode::ACCEPTED
    );

    let (status, page) = app
        .admin(Method::GET, &format!("/v1/audit?app={app_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().expect("entries");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let by_notifier = format!("notifier:{}", notifier.id);
    assert_eq!(
        actions,
        vec![
            ("operator", "app.create"),
            ("operator", "credential.put"),
            ("operator", "notifier.create"),
            (by_notifier.as_str(), "notification.create"),
        ]
    );
    for entry in entries {
        assert_eq!(entry["source"], json!("127.0.0.1"), "{entry}");
        assert!(
            entry["at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{entry}"
        );
    }
    let text = page.to_string();
    let key_body = crate::fixtures::pem_body(&private_key_pem);
    assert!(
        !text.contains(&key_body[..40]),
        "no key material in the audit log"
    );
    assert!(!text.contains("BEGIN PRIVATE KEY"));

    // Filters and paging.
    let (_, page) = app
        .admin(
            Method::GET,
            &format!("/v1/audit?app={app_id}&actor=operator&limit=2"),
            None,
        )
        .await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(2));
    let next = page["next"].as_i64().expect("next page");
    let (_, page) = app
        .admin(
            Method::GET,
            &format!("/v1/audit?app={app_id}&actor=operator&after={next}"),
            None,
        )
        .await;
    assert_eq!(page["entries"][0]["action"], json!("notifier.create"));
    // Operator only.
    let response = app
        .client
        .get(app.url("/v1/audit"))
        .bearer_auth(notifier.jwt("notify"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_deep_queue_refuses_new_notifications_with_503_until_it_drains() {
    // Node A only serves the API, so what it accepts stays queued.
    let mut api_only = Options::new(Backend::Postgres);
    api_only.workers = 0;
    api_only.extra = "max_queue_depth = 2\n".into();
    let a = spawn(api_only).await;
    let app_id = a.create_app("Acme").await;
    let notifier = TestNotifier::create(&a, &app_id, &["notify"]).await;
    let desktop = sdk_client::Client::builder(&a.base, sdk_client::DeviceKey::generate_p256())
        .build()
        .expect("client");
    let registration = desktop
        .register(&app_id, &sdk_client::NewRegistration::direct("linux"))
        .await
        .expect("register");
    let send = |key: String| {
        a.client
            .post(a.url(&format!("/v1/apps/{app_id}/notifications")))
            .bearer_auth(notifier.jwt("notify"))
            .header("Idempotency-Key", key)
            .json(&json!({"targets": {"registrations": [registration.id]},
                "notification": {"title": "queued"}}))
            .send()
    };

    // Three queued deliveries are more than 2: once the depth is measured (every
    // sweep interval, 1 s here), new notifications get 503 + Retry-After.
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..40 {
        let response = send(format!("k{i}")).await.expect("sent");
        match response.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a deep queue refuses within 4 s");
    assert!(accepted >= 3, "accepted {accepted} before the refusal");
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.expect("problem body");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("max_queue_depth = 2"), "{problem}");
    // A retry of an already accepted notification still gets its answer.
    let replay = send("k0".into()).await.expect("sent");
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    let metrics = a
        .client
        .get(a.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("push_notifications_shed_total ") && !l.ends_with(" 0")),
        "the refusal is counted"
    );

    // A node with workers drains the queue; A accepts again by itself.
    let mut worker = Options::new(Backend::Postgres);
    worker.join = Some((a.database_url.clone(), a.prefix.clone()));
    let _b = spawn(worker).await;
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for i in 0..100 {
        status = send(format!("after{i}")).await.expect("sent").status();
        if status == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, StatusCode::ACCEPTED, "accepting again once drained");
}
