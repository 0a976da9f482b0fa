//! Notify → dispatch → direct channel, on both backends.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sdk_client::{DeviceKey, Listener, NewRegistration, PushEvent};
use serde_json::{json, Value};

use crate::actors::{apns_token, device, with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{assert_problem, Api, TestApp};

/// The next event, or None after `wait`.
pub async fn next_within<S: sdk_client::Signer + Clone>(
    listener: &mut Listener<S>,
    wait: Duration,
) -> Option<PushEvent> {
    tokio::time::timeout(wait, listener.next())
        .await
        .ok()
        .map(|event| event.expect("listener works"))
}

/// Sends a notification; returns the 202 body.
pub async fn send(app: &Api, notifier: &TestNotifier, body: Value) -> Value {
    let path = format!("/v1/apps/{}/notifications", notifier_app(notifier));
    let (status, answer) = with_jwt(
        app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer
}

fn notifier_app(notifier: &TestNotifier) -> &str {
    &notifier.app_id
}

/// Polls the status API until `check` holds or 20 s pass.
pub async fn wait_status(
    app: &Api,
    notifier: &TestNotifier,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/v1/apps/{}/notifications/{id}", notifier.app_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = with_jwt(app, Method::GET, &path, &notifier.jwt("notify"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if check(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never matched: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn notify_reaches_a_direct_device(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("macos"))
        .await
        .expect("register");
    let mut listener = desktop.listen(&registration.id);
    let answer = send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [registration.id, "reg_unknown"]},
               "notification": {"title": "Sign-in request", "body": "Approve the login on your Mac?"},
               "data": {"request_id": "r-1"}, "priority": "high", "ttl_seconds": 120}),
    )
    .await;
    assert_eq!(answer["accepted"], 1);
    assert_eq!(
        answer["rejected"],
        json!([{"registration": "reg_unknown", "reason": "unknown"}])
    );
    let event = next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("delivered");
    assert_eq!(event.notification["id"], answer["id"]);
    assert_eq!(event.notification["title"], "Sign-in request");
    assert_eq!(event.notification["data"]["request_id"], "r-1");
    let id = answer["id"].as_str().expect("id");
    let status = wait_status(&app, &notifier, id, |s| s["counts"]["sent"] == 1).await;
    assert_eq!(status["targets"][0]["state"], "sent");
}
both_backends!(
    notify_reaches_a_direct_device,
    super::notify_reaches_a_direct_device
);

async fn idempotent_retry_answers_the_first_response(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let body =
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "once"}});
    let path = format!("/v1/apps/{app_id}/notifications");
    let post = |body: Value, key: &'static str| {
        let jwt = notifier.jwt("notify");
        let app = &app;
        let path = path.clone();
        async move {
            crate::helpers::read(
                app.client
                    .post(app.url(&path))
                    .bearer_auth(jwt)
                    .header("idempotency-key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("sent"),
            )
            .await
        }
    };
    let (first_status, first) = post(body.clone(), "key-1").await;
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first}");
    let (again_status, again) = post(body.clone(), "key-1").await;
    assert_eq!(again_status, StatusCode::ACCEPTED);
    assert_eq!(again, first, "a retry gets the first answer");
    // The same request written differently (members in another order, other
    // spacing) is the same request: a keyed body is compared as JSON, not as
    // bytes, while a body without a key is read straight into a request.
    let reordered = format!(
        "{{ \"notification\" : {{\"title\":\"once\"}},\n  \"targets\": {{\"registrations\": [\"{}\"]}} }}",
        registration.id
    );
    let (status, replayed) = crate::helpers::read(
        app.client
            .post(app.url(&path))
            .bearer_auth(notifier.jwt("notify"))
            .header("idempotency-key", "key-1")
            .header("content-type", "application/json")
            .body(reordered)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed, first, "the same JSON in another order is a retry");
    let (status, problem) = post(
        json!({"targets": {"registrations": [registration.id]}}),
        "key-1",
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "different",
    );
    let mut listener = desktop.listen(&registration.id);
    let event = next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("delivered");
    assert_eq!(event.notification["id"], first["id"]);
    assert!(
        next_within(&mut listener, Duration::from_millis(1500))
            .await
            .is_none(),
        "delivered once"
    );
}
both_backends!(
    idempotent_retry_answers_the_first_response,
    super::idempotent_retry_answers_the_first_response
);

async fn ttl_expiry_drops_undelivered(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let short = send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "short"}, "ttl_seconds": 1}),
    )
    .await;
    let id = short["id"].as_str().expect("id");
    let status = wait_status(&app, &notifier, id, |s| s["counts"]["expired"] == 1).await;
    assert_eq!(status["targets"][0]["state"], "expired");
    let long = send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "long"}}),
    )
    .await;
    let mut listener = desktop.listen(&registration.id);
    let event = next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("the live one");
    assert_eq!(
        event.notification["id"], long["id"],
        "the expired one never arrives"
    );
}
both_backends!(
    ttl_expiry_drops_undelivered,
    super::ttl_expiry_drops_undelivered
);

async fn reconnect_with_last_event_id(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("windows"))
        .await
        .expect("register");
    let targets = json!({"registrations": [registration.id]});
    let mut listener = desktop.listen(&registration.id);
    let first = send(
        &app,
        &notifier,
        json!({"targets": targets, "notification": {"title": "1"}}),
    )
    .await;
    let event = next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("first");
    assert_eq!(event.notification["id"], first["id"]);
    let last_id = listener.last_event_id().expect("id").to_owned();
    drop(listener);

    let mut missed = Vec::new();
    for title in ["2", "3"] {
        let answer = send(
            &app,
            &notifier,
            json!({"targets": targets, "notification": {"title": title}}),
        )
        .await;
        missed.push(answer["id"].clone());
    }
    let mut resumed = desktop.listen_after(&registration.id, Some(last_id));
    // Two workers may hand them over in either order; each arrives exactly once.
    let mut got = Vec::new();
    for _ in &missed {
        let event = next_within(&mut resumed, Duration::from_secs(20))
            .await
            .expect("missed event");
        got.push(event.notification["id"].clone());
    }
    got.sort_by_key(|v| v.to_string());
    missed.sort_by_key(|v| v.to_string());
    assert_eq!(got, missed);
    assert!(
        next_within(&mut resumed, Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing twice"
    );

    // The listener itself reconnects with its last id after a broken connection.
    resumed.disconnect();
    let fourth = send(
        &app,
        &notifier,
        json!({"targets": targets, "notification": {"title": "4"}}),
    )
    .await;
    let event = next_within(&mut resumed, Duration::from_secs(20))
        .await
        .expect("after reconnect");
    assert_eq!(event.notification["id"], fourth["id"]);
}
both_backends!(
    reconnect_with_last_event_id,
    super::reconnect_with_last_event_id
);

async fn fan_out_to_aliases_and_whole_app(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let mut devices = Vec::new();
    for platform in ["linux", "macos", "windows"] {
        let client = device(&app, DeviceKey::generate_p256());
        let registration = client
            .register(&app_id, &NewRegistration::direct(platform))
            .await
            .expect("register");
        devices.push((client, registration.id));
    }
    for (i, (_, id)) in devices.iter().enumerate().take(2) {
        let (status, body) = with_jwt(
            &app,
            Method::PUT,
            &format!("/v1/apps/{app_id}/registrations/{id}/aliases"),
            &notifier.jwt("notify"),
            Some(json!({"aliases": ["user:42", format!("device:{i}")]})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let to_alias = send(
        &app,
        &notifier,
        json!({"targets": {"aliases": ["user:42"]}, "notification": {"title": "alias"}}),
    )
    .await;
    assert_eq!(to_alias["accepted"], 2);
    let to_all = send(
        &app,
        &notifier,
        json!({"targets": {"all": true}, "notification": {"title": "all"}}),
    )
    .await;
    assert_eq!(to_all["accepted"], 3);
    for (i, (client, id)) in devices.iter().enumerate() {
        let mut listener = client.listen(id);
        let mut got = Vec::new();
        while let Some(event) = next_within(
            &mut listener,
            Duration::from_secs(if i < 2 && got.len() < 2 || got.is_empty() {
                20
            } else {
                1
            }),
        )
        .await
        {
            got.push(event.notification["id"].clone());
        }
        if i < 2 {
            assert_eq!(got.len(), 2, "device {i}: {got:?}");
            assert!(got.contains(&to_alias["id"]) && got.contains(&to_all["id"]));
        } else {
            assert_eq!(got, vec![to_all["id"].clone()], "device {i}");
        }
    }
    let status = wait_status(&app, &notifier, to_all["id"].as_str().expect("id"), |s| {
        s["counts"]["sent"] == 3
    })
    .await;
    assert_eq!(status["expanded"], true);
    assert_eq!(
        status["targets"],
        json!([]),
        "whole-app sends list only targets not sent"
    );
}
both_backends!(
    fan_out_to_aliases_and_whole_app,
    super::fan_out_to_aliases_and_whole_app
);

async fn bad_notifications_are_refused(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let other_app = app.create_app("Other").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify", "registrations:read"]).await;
    let reader = TestNotifier::create(&app, &app_id, &["registrations:read"]).await;
    let other = TestNotifier::create(&app, &other_app, &["notify"]).await;
    let foreign = device(&app, DeviceKey::generate_p256())
        .register(&other_app, &NewRegistration::apns(&apns_token(), "ios"))
        .await
        .expect("register");
    let path = format!("/v1/apps/{app_id}/notifications");
    let cases = [
        (json!({"targets": {}}), "exactly one"),
        (json!({"targets": {"registrations": []}}), "1 to 1000"),
        (json!({"targets": {"all": false}}), "true"),
        (
            json!({"targets": {"all": true}, "ttl_seconds": 3_000_000}),
            "ttl_seconds",
        ),
        (
            json!({"targets": {"all": true}, "data": {"n": 1}}),
            "string",
        ),
        (
            json!({"targets": {"all": true}, "data": {"google.x": "y"}}),
            "reserved",
        ),
        (
            json!({"targets": {"all": true}, "collapse_key": "x".repeat(65)}),
            "collapse_key",
        ),
        (
            json!({"targets": {"all": true}, "push_type": "shout"}),
            "push_type",
        ),
        (
            json!({"targets": {"all": true}, "apns": {"headers": {"apns-topic": "evil"}}}),
            "apns-topic",
        ),
        (
            json!({"targets": {"all": true}, "apns": {"headers": {"apns-priority": "10\r\nx-injected: 1"}}}),
            "printable",
        ),
        (
            json!({"targets": {"all": true}, "notification": {"body": "x".repeat(2000)}, "data": {"blob": "y".repeat(3000)}}),
            "4096",
        ),
        (json!({"targets": {"all": true}, "unknown": 1}), "unknown"),
    ];
    for (body, needle) in cases {
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
            needle,
        );
    }
    // Another app's registration is "unknown" here, never delivered.
    let answer = send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [foreign.id]}}),
    )
    .await;
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["rejected"][0]["reason"], "unknown");
    // Scope and app isolation.
    let (status, problem) = with_jwt(
        &app,
        Method::POST,
        &path,
        &reader.jwt("registrations:read"),
        Some(json!({"targets": {"all": true}})),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::FORBIDDEN,
        "insufficient-scope",
        "notify",
    );
    let (status, problem) = with_jwt(
        &app,
        Method::POST,
        &path,
        &other.jwt("notify"),
        Some(json!({"targets": {"all": true}})),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not a notifier of this app",
    );
    let (status, problem) = with_jwt(
        &app,
        Method::GET,
        &format!(
            "/v1/apps/{other_app}/notifications/{}",
            answer["id"].as_str().expect("id")
        ),
        &other.jwt("notify"),
        None,
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::NOT_FOUND,
        "not-found",
        "notification",
    );
}
both_backends!(
    bad_notifications_are_refused,
    super::bad_notifications_are_refused
);

/// Concurrent requests share group-commit batches: each still gets its own
/// answer, idempotent duplicates inside one batch get the winner's answer, and
/// every accepted notification is delivered once.
async fn concurrent_sends_keep_their_answers(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let mut listener = desktop.listen(&registration.id);
    let path = format!("/v1/apps/{app_id}/notifications");
    let post = |key: Option<&'static str>, title: String| {
        let request = app
            .client
            .post(app.url(&path))
            .bearer_auth(notifier.jwt("notify"))
            .json(&json!({"targets": {"registrations": [registration.id]},
                "notification": {"title": title}}));
        let request = match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        };
        async move { crate::helpers::read(request.send().await.expect("sent")).await }
    };
    let same =
        futures_util::future::join_all((0..12).map(|_| post(Some("same-key"), "same".to_owned())))
            .await;
    let distinct =
        futures_util::future::join_all((0..30).map(|i| post(None, format!("n{i}")))).await;
    let mut expected = std::collections::HashSet::new();
    let first = &same[0].1["id"];
    for (status, body) in &same {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(&body["id"], first, "one notification for one key");
    }
    expected.insert(first.as_str().expect("id").to_owned());
    for (status, body) in &distinct {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        assert!(
            expected.insert(body["id"].as_str().expect("id").to_owned()),
            "ids are distinct"
        );
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < expected.len() {
        let event = next_within(&mut listener, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {} of {} delivered", seen.len(), expected.len()));
        let id = event.notification["id"].as_str().expect("id").to_owned();
        assert!(expected.contains(&id), "unexpected {id}");
        assert!(seen.insert(id), "delivered twice");
    }
    assert!(
        next_within(&mut listener, Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing more"
    );
}
both_backends!(
    concurrent_sends_keep_their_answers,
    super::concurrent_sends_keep_their_answers
);

/// A whole-app send of several expansion chunks (500 registrations each) while
/// workers write outcomes: every chunk expands at once. (On SQLite a deferred
/// transaction that read before another writer committed used to fail with
/// SQLITE_BUSY, and each chunk waited for the task to be retried.)
async fn multi_chunk_fan_out_expands_without_retries(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let total = 1_100;
    // 64 device keys: one key holds at most max_registrations_per_key (20).
    let clients: Vec<_> = (0..64)
        .map(|_| device(&app, DeviceKey::generate_p256()))
        .collect();
    let per_client = total / clients.len() + 1;
    futures_util::future::try_join_all(clients.iter().enumerate().map(|(c, client)| {
        let app_id = app_id.clone();
        async move {
            for i in 0..per_client {
                if c * per_client + i >= total {
                    break;
                }
                client
                    .register(&app_id, &NewRegistration::direct("linux"))
                    .await?;
            }
            Ok::<_, sdk_client::Error>(())
        }
    }))
    .await
    .expect("registered");
    let released = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("push_dispatch_tasks_released_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let before = released(&metrics().await);
    let answer = send(
        &app,
        &notifier,
        json!({"targets": {"all": true}, "notification": {"title": "everyone"}}),
    )
    .await;
    assert_eq!(answer["accepted"], total);
    let started = std::time::Instant::now();
    // Direct devices that are not listening hold the notification: all queued → held.
    let status = wait_status(&app, &notifier, answer["id"].as_str().expect("id"), |s| {
        s["expanded"] == true && s["counts"]["queued"] == total
    })
    .await;
    assert_eq!(status["counts"]["failed"], 0);
    assert_eq!(
        released(&metrics().await),
        before,
        "no task failed and waited for a retry ({:?} to expand and hand over)",
        started.elapsed()
    );
}

/// A node without the device and address limits (16 device keys register 1,100 times).
async fn unlimited(backend: crate::helpers::Backend) -> TestApp {
    let mut options = crate::helpers::Options::new(backend);
    options.extra = "rate_limit_device_requests_per_minute = 0\n\
                     rate_limit_address_requests_per_second = 0\n"
        .into();
    crate::helpers::spawn(options).await
}

#[tokio::test]
async fn multi_chunk_fan_out_sqlite() {
    multi_chunk_fan_out_expands_without_retries(unlimited(crate::helpers::Backend::Sqlite).await)
        .await;
}

#[tokio::test]
async fn multi_chunk_fan_out_postgres() {
    multi_chunk_fan_out_expands_without_retries(unlimited(crate::helpers::Backend::Postgres).await)
        .await;
}

/// Two tasks holding the same delivery (the original, and a copy the sweep made
/// while it waited): a worker takes a delivery only against the attempt count and
/// re-drive time it was made for, so exactly one of them sends.
async fn a_delivery_is_taken_by_one_task(backend: crate::helpers::Backend) {
    let mut api_only = crate::helpers::Options::new(backend);
    api_only.workers = 0;
    let a = crate::helpers::spawn(api_only).await;
    let app_id = a.create_app("Acme").await;
    let notifier = TestNotifier::create(&a, &app_id, &["notify"]).await;
    let desktop = device(&a, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let answer = send(
        &a,
        &notifier,
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "once"}}),
    )
    .await;
    let id = answer["id"].as_str().expect("id");
    let store = push_service::store::connect(&a.database_url, 2, true, None)
        .await
        .expect("store");
    let lease = push_service::ids::now_millis() + 60_000;
    let claim = |due: Option<i64>| push_service::store::batch::DeliveryClaim {
        notification_id: id.to_owned(),
        registration_id: registration.id.clone(),
        attempts: 0,
        due,
        lease,
        unchanged: None,
    };
    // A copy made for another re-drive time does not take it.
    let stale = store.claim_delivery(claim(Some(1))).await.expect("claim");
    assert!(
        !stale,
        "a task made for another re-drive time must not take it"
    );
    // The first task takes it; the second, holding the same view, does not.
    let first = store.claim_delivery(claim(None)).await.expect("claim");
    let second = store.claim_delivery(claim(None)).await.expect("claim");
    assert!(first, "the first claim takes the delivery");
    assert!(!second, "the same delivery is taken once");
    // Taken means one attempt counted, still queued until its outcome.
    let (_, pending) = store
        .task_deliveries(id, std::slice::from_ref(&registration.id))
        .await
        .expect("read")
        .expect("still queued");
    assert_eq!(pending[0].attempts, 1);
}

mod a_delivery_is_taken_by_one_task {
    #[tokio::test]
    async fn sqlite() {
        super::a_delivery_is_taken_by_one_task(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test]
    async fn postgres() {
        super::a_delivery_is_taken_by_one_task(crate::helpers::Backend::Postgres).await;
    }
}

/// The value of a counter of one app in a Prometheus text page (the tests of
/// this process share one registry).
/// The sum of counter `name` over its series carrying every one of `labels`
/// (`key="value"`).
fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels.iter().all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// A desktop with a direct registration in `app_id`, its stream open and quiet.
async fn listening_desktop(app: &Api, app_id: &str) -> (sdk_client::RegistrationInfo, Listener) {
    let desktop = device(app, DeviceKey::generate_p256());
    let registration = desktop
        .register(app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let mut listener = desktop.listen(&registration.id);
    assert!(next_within(&mut listener, Duration::from_millis(300))
        .await
        .is_none());
    (registration, listener)
}

async fn callers_that_go_away_after_the_commit_still_get_delivered_and_counted(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let (registration, mut listener) = listening_desktop(&app, &app_id).await;
    let path = app.url(&format!("/v1/apps/{app_id}/notifications"));
    let body =
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "t"}});
    // Callers that hang up after 1, 2, … 60 ms: some before anything is
    // stored, some while their write commits, some after the answer.
    for i in 0..60u64 {
        let request = reqwest::Client::new()
            .post(&path)
            .bearer_auth(notifier.jwt("notify"))
            .timeout(Duration::from_millis(1 + i))
            .json(&body)
            .send();
        let _ = request.await;
    }
    let hung_up = std::time::Instant::now();
    // What was committed: the audit entry shares the notification's transaction.
    let (status, audit) = app
        .admin(
            Method::GET,
            &format!("/v1/audit?app={app_id}&action=notification.create&limit=500"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let committed = audit["entries"].as_array().map_or(0, Vec::len);
    assert!(committed > 0, "some requests were committed: {audit}");
    let mut received = 0;
    // Re-drive is 90 s away (set below): only the commit's own task can be this quick.
    while received < committed {
        if next_within(&mut listener, Duration::from_secs(3))
            .await
            .is_none()
        {
            break;
        }
        received += 1;
    }
    assert_eq!(
        received, committed,
        "every committed notification was delivered"
    );
    assert!(
        hung_up.elapsed() < Duration::from_secs(3),
        "delivered within {:?} of the last caller hanging up",
        hung_up.elapsed()
    );
    let metrics = app.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "push_notifications_accepted_total",
            &[&format!("app=\"{app_id}\"")]
        ) as usize,
        committed,
        "every committed notification was counted"
    );
}

mod callers_that_go_away_after_the_commit_still_get_delivered_and_counted {
    use crate::helpers::{spawn, Backend, Options};

    async fn run(backend: Backend) {
        let mut options = Options::new(backend);
        options.extra = "redrive_after_seconds = 90\n".into();
        super::callers_that_go_away_after_the_commit_still_get_delivered_and_counted(
            spawn(options).await,
        )
        .await;
    }

    #[tokio::test]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}

/// A burst larger than a stream's signal buffer (the stream falls behind and
/// reads the store) arrives whole, each event once, and every delivery ends `sent`.
async fn a_burst_reaches_an_open_stream_once_each(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let targets = json!({"registrations": [registration.id]});
    let mut listener = desktop.listen(&registration.id);
    let opening = send(
        &app,
        &notifier,
        json!({"targets": targets, "notification": {"title": "open"}}),
    )
    .await;
    let event = next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("the stream is open");
    assert_eq!(event.notification["id"], opening["id"]);

    let items: Vec<Value> = (0..40)
        .map(|i| json!({"targets": targets, "notification": {"title": format!("burst {i}")}}))
        .collect();
    let path = format!("/v1/apps/{app_id}/notifications/batch");
    let (status, answer) = with_jwt(
        &app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(json!({"notifications": items})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut expected: Vec<String> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["notification"]["id"]
                .as_str()
                .expect("accepted")
                .to_owned()
        })
        .collect();
    let mut received = Vec::new();
    while let Some(event) = next_within(&mut listener, Duration::from_secs(3)).await {
        received.push(event.notification["id"].as_str().expect("id").to_owned());
    }
    let mut sorted = received.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), received.len(), "an event came twice");
    expected.sort();
    assert_eq!(sorted, expected, "every event of the burst, once");
    for id in &expected {
        wait_status(&app, &notifier, id, |s| s["counts"]["sent"] == 1).await;
    }
}
both_backends!(
    a_burst_reaches_an_open_stream_once_each,
    super::a_burst_reaches_an_open_stream_once_each
);

/// The first attempt of a delivery this node has just accepted goes without a
/// claim write: the row acceptance wrote is its lease (docs/architecture.md,
/// "Deliveries born claimed").
async fn first_attempts_of_accepted_deliveries_write_no_claim(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let (registration, mut listener) = listening_desktop(&app, &app_id).await;
    let body = json!({"targets": {"registrations": [registration.id]},
        "notification": {"title": "Sign in?"}});
    for _ in 0..5 {
        let answer = send(&app, &notifier, body.clone()).await;
        let event = next_within(&mut listener, Duration::from_secs(5))
            .await
            .expect("delivered");
        assert_eq!(event.notification["id"], answer["id"]);
    }
    let metrics = app.metrics().await;
    let app_label = format!("app=\"{app_id}\"");
    let claims = |kind: &str| {
        counter(
            &metrics,
            "push_delivery_claims_total",
            &[&app_label, &format!("kind=\"{kind}\"")],
        )
    };
    assert_eq!(
        (claims("born"), claims("written")),
        (5.0, 0.0),
        "five first attempts, none claimed by a write"
    );
}
both_backends!(
    first_attempts_of_accepted_deliveries_write_no_claim,
    super::first_attempts_of_accepted_deliveries_write_no_claim
);
