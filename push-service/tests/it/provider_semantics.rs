//! What Apple and Google would judge: refused at the door, classified by the one
//! table (every row walked through the simulators), zero TTL, provider tokens.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use loadtest::fcm::FcmFaults;
use push_service::providers::outcome::{Class, APNS, FCM};
use reqwest::{Method, StatusCode};
use sdk_client::NewRegistration;
use serde_json::{json, Value};

use crate::actors::{with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};
use crate::notify::{send, wait_status};
use crate::providers::{apns_token, fcm_token, register, rig, Rig};

/// The status of one notification's only target.
fn only_target(status: &Value) -> &Value {
    &status["targets"][0]
}

async fn door(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let victim = fcm_token("android");
    let target = register(
        &rig,
        &app_id,
        NewRegistration::fcm(&fcm_token("android"), "android"),
    )
    .await;
    let path = format!("/v1/apps/{app_id}/notifications");
    let cases = [
        (json!({"fcm": {"token": victim}}), "fcm.token"),
        (json!({"fcm": {"topic": "news"}}), "fcm.topic"),
        (
            json!({"fcm": {"android": {"priority": "urgent"}}}),
            "fcm.android.priority",
        ),
        (
            json!({"apns": {"headers": {"apns-priority": "7"}}}),
            "apns.headers.apns-priority",
        ),
        (
            json!({"apns": {"headers": {"apns-expiration": "tomorrow"}}}),
            "apns-expiration",
        ),
        (json!({"data": {"aps": "{}"}}), "`data`"),
    ];
    for (extra, field) in cases {
        let mut body =
            json!({"targets": {"registrations": [target]}, "notification": {"title": "t"}});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, problem) = with_jwt(
            &rig.app,
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
            field,
        );
    }
    let (status, problem) = with_jwt(
        &rig.app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(
            json!({"targets": {"registrations": [target]}, "data": {"k": "v"},
            "apns": {"headers": {"apns-priority": "10"}}}),
        ),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "background",
    );
    // Nothing reached a provider, and the registration is untouched.
    assert!(rig.fcm.receipts().is_empty());
    assert!(
        rig.fcm.rejections().is_empty(),
        "{:?}",
        rig.fcm.rejections()
    );
    let (_, registration) = with_jwt(
        &rig.app,
        Method::GET,
        &format!("/v1/apps/{app_id}/registrations/{target}"),
        &notifier.jwt("registrations:read"),
        None,
    )
    .await;
    assert_eq!(registration["status"], "active", "{registration}");
    assert!(
        !registration.to_string().contains(&victim),
        "no token in the answer"
    );
}
both_backends!(what_a_provider_refuses_is_refused_at_the_door, super::door);

async fn refused_push_type(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let mut devices = Vec::new();
    for _ in 0..20 {
        devices.push(register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await);
    }
    // The app is entitled to its bundle id only: `.complication` is TopicDisallowed.
    let complication = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [devices[0]]}, "notification": {"title": "c"},
            "push_type": "complication"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut alerts = Vec::new();
    for device in &devices {
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [device]}, "notification": {"title": "a"}}),
        )
        .await;
        alerts.push(answer["id"].as_str().expect("id").to_owned());
    }
    for id in &alerts {
        wait_status(&rig.app, &notifier, id, |s| s["counts"]["sent"] == 1).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "20 alerts took {took:?}");
    let status = wait_status(
        &rig.app,
        &notifier,
        complication["id"].as_str().expect("id"),
        |s| s["counts"]["failed"] == 1,
    )
    .await;
    let reason = only_target(&status)["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("TopicDisallowed"), "{status}");
    assert_eq!(only_target(&status)["attempts"], 1, "{status}");
    let (_, credential) = rig
        .app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/credentials/apns"),
            None,
        )
        .await;
    assert_eq!(credential["status"]["status"], "ok", "{credential}");
    assert_eq!(rig.apns.receipts().len(), 20);
    assert_eq!(rig.apns.connection_stats().1, 1, "one provider token");
}
both_backends!(a_refused_push_type_fails_alone, super::refused_push_type);

async fn zero_ttl(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let ios = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let android = register(
        &rig,
        &app_id,
        NewRegistration::fcm(&fcm_token("android"), "android"),
    )
    .await;
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [ios, android]}, "notification": {"title": "now"},
            "ttl_seconds": 0}),
    )
    .await;
    assert_eq!(answer["accepted"], 2, "{answer}");
    let status = wait_status(
        &rig.app,
        &notifier,
        answer["id"].as_str().expect("id"),
        |s| s["counts"]["sent"] == 2,
    )
    .await;
    assert!(status["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .all(|t| t["attempts"] == 1));
    let apns = rig.apns.receipts();
    assert_eq!(apns.len(), 1);
    assert_eq!(apns[0].headers["apns-expiration"], "0");
    let fcm = rig.fcm.receipts();
    assert_eq!(fcm.len(), 1);
    assert_eq!(fcm[0].message["android"]["ttl"], "0s");

    // A provider failure is not retried: one attempt, then expired.
    let busy = register(
        &rig,
        &app_id,
        NewRegistration::apns(&apns_token("5030"), "ios"),
    )
    .await;
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [busy]}, "notification": {"title": "now"},
            "ttl_seconds": 0}),
    )
    .await;
    let status = wait_status(
        &rig.app,
        &notifier,
        answer["id"].as_str().expect("id"),
        |s| s["counts"]["expired"] == 1,
    )
    .await;
    assert_eq!(only_target(&status)["attempts"], 1, "{status}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.apns.rejections().get("ServiceUnavailable").copied(),
        Some(1),
        "attempted exactly once"
    );
}
both_backends!(a_zero_ttl_is_attempted_once_now, super::zero_ttl);

async fn one_grant(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let mut devices = Vec::new();
    for _ in 0..6 {
        devices.push(
            register(
                &rig,
                &app_id,
                NewRegistration::fcm(&fcm_token("android"), "android"),
            )
            .await,
        );
    }
    let warm = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [devices[0]]}, "notification": {"title": "w"}}),
    )
    .await;
    wait_status(&rig.app, &notifier, warm["id"].as_str().expect("id"), |s| {
        s["counts"]["sent"] == 1
    })
    .await;
    assert_eq!(rig.fcm.tokens_issued(), 1);
    // Google revokes the token; five sends in flight at once all get 401.
    rig.fcm.revoke_access_tokens();
    rig.fcm.set_faults(FcmFaults {
        latency_ms: 300,
        ..Default::default()
    });
    let sends = devices[1..].iter().map(|device| {
        send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [device]}, "notification": {"title": "c"}}),
        )
    });
    let answers = join_all(sends).await;
    for answer in &answers {
        wait_status(
            &rig.app,
            &notifier,
            answer["id"].as_str().expect("id"),
            |s| s["counts"]["sent"] == 1,
        )
        .await;
    }
    let refused = rig
        .fcm
        .rejections()
        .get("UNAUTHENTICATED")
        .copied()
        .unwrap_or(0);
    assert!(refused >= 2, "the sends were concurrent: {refused} refused");
    assert_eq!(
        rig.fcm.tokens_issued(),
        2,
        "{refused} refusals, one new grant"
    );
}
both_backends!(concurrent_401s_cause_one_oauth_grant, super::one_grant);

async fn token_floor(app: TestApp) {
    let backend = app.backend;
    drop(app);
    // The simulator holds Apple's 20-minute rule per key, across connections.
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let healthy = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let deleter = TestNotifier::create(&rig.app, &app_id, &["registrations:delete"]).await;
    let mut sent = 0;
    for reason in [
        "Forbidden",
        "InvalidProviderToken",
        "BadCertificateEnvironment",
    ] {
        let token = apns_token("");
        rig.apns.script(&token, 403, reason);
        let refused = register(&rig, &app_id, NewRegistration::apns(&token, "ios")).await;
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [refused]}, "notification": {"title": "x"}}),
        )
        .await;
        wait_status(
            &rig.app,
            &notifier,
            answer["id"].as_str().expect("id"),
            |s| {
                only_target(s)["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(reason)
            },
        )
        .await;
        // The simulator refuses this token every time, and the refused delivery
        // waits for the circuit: left alone it would be tried again at each
        // closing, reopen the circuit and race the healthy delivery for it.
        // Deleted, it ends at its next turn without a request.
        let (status, body) = with_jwt(
            &rig.app,
            Method::DELETE,
            &format!("/v1/apps/{app_id}/registrations/{refused}"),
            &deleter.jwt("registrations:delete"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        // Once the circuit closes (2 s), the app sends again with the same token.
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [healthy]}, "notification": {"title": "y"}}),
        )
        .await;
        wait_status(
            &rig.app,
            &notifier,
            answer["id"].as_str().expect("id"),
            |s| s["counts"]["sent"] == 1,
        )
        .await;
        sent += 1;
    }
    assert_eq!(rig.apns.receipts().len(), sent);
    let rejections = rig.apns.rejections();
    assert!(
        !rejections.contains_key("TooManyProviderTokenUpdates"),
        "{rejections:?}"
    );
    assert_eq!(
        rig.apns.connection_stats().1,
        1,
        "one provider token in all"
    );
}
both_backends!(
    credential_errors_never_mint_a_second_apns_token,
    super::token_floor
);

/// What the dispatcher must end with for an answer of `class` (TTL 3 s for provider
/// answers, 60 s for the others; 3 attempts at most for unknown answers): (delivery
/// states, registration status, reason part).
/// A credential error keeps the delivery waiting (no attempt spent) until the TTL.
fn expected(class: Class) -> (&'static [&'static str], &'static str, &'static str) {
    match class {
        Class::Device => (&["invalid"], "invalid", ""),
        Class::Notification => (&["failed"], "active", ""),
        Class::Credential => (&["queued", "expired"], "active", "circuit open"),
        Class::Provider => (&["expired"], "active", "ttl"),
        Class::Unknown => (&["failed"], "active", "gave up after 3 attempts"),
    }
}

/// How often a simulator answered `reason`.
fn rig_rejected(rig: &Rig, reason: &str) -> u64 {
    rig.apns.rejections().get(reason).copied().unwrap_or(0)
        + rig.fcm.rejections().get(reason).copied().unwrap_or(0)
}

/// One app per row, so circuits and guards of one row never touch another.
async fn walk(rig: &Rig, rows: Vec<(String, NewRegistration, Class, String)>) {
    let mut sent = Vec::new();
    for (token, registration, class, name) in rows {
        let (app_id, notifier) = rig.tenant(&rig.p8).await;
        let id = register(rig, &app_id, registration).await;
        // Provider-class rows retry until the TTL ends them: a short one. The
        // others end at their first answer; a longer TTL keeps a loaded machine
        // (first attempt seconds late) from expiring them before they are tried.
        let ttl = if class == Class::Provider { 3 } else { 60 };
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [id]}, "notification": {"title": "row"},
                "ttl_seconds": ttl}),
        )
        .await;
        sent.push((
            token,
            id,
            class,
            name,
            notifier,
            answer["id"].as_str().expect("id").to_owned(),
        ));
    }
    for (_token, id, class, name, notifier, notification) in &sent {
        let (states, registration_status, reason_part) = expected(*class);
        let status = wait_status(&rig.app, notifier, notification, |s| {
            let t = only_target(s);
            states.iter().any(|state| t["state"] == *state)
                && t["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(reason_part)
        })
        .await;
        if *class == Class::Provider {
            // The provider said so at least once before the TTL ended the retries.
            assert!(rig_rejected(rig, name) > 0, "{name}: {status}");
        } else {
            let reason = only_target(&status)["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(name.as_str()), "{name}: {status}");
        }
        let (_, registration) = with_jwt(
            &rig.app,
            Method::GET,
            &format!("/v1/apps/{}/registrations/{id}", notifier.app_id),
            &notifier.jwt("registrations:read"),
            None,
        )
        .await;
        assert_eq!(
            registration["status"], registration_status,
            "{name}: {registration}"
        );
    }
    // No reason or registration answer carries a device token.
    for (token, _, _, name, notifier, notification) in &sent {
        let (_, status) = with_jwt(
            &rig.app,
            Method::GET,
            &format!("/v1/apps/{}/notifications/{notification}", notifier.app_id),
            &notifier.jwt("notify"),
            None,
        )
        .await;
        assert!(
            !status.to_string().contains(token.as_str()),
            "{name}: {status}"
        );
    }
}

async fn every_apns_row(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let mut rows = Vec::new();
    for (status, reason, class) in APNS {
        // The client answers ExpiredProviderToken itself (a new token, one more
        // try): its row is the one that follows it, by the token's age.
        if *reason == "ExpiredProviderToken" {
            continue;
        }
        let token = apns_token("");
        rig.apns.script(&token, *status, reason);
        rows.push((
            token.clone(),
            NewRegistration::apns(&token, "ios"),
            *class,
            reason.to_string(),
        ));
    }
    // An answer Apple does not document.
    let token = apns_token("");
    rig.apns.script(&token, 400, "SomethingNew");
    rows.push((
        token.clone(),
        NewRegistration::apns(&token, "ios"),
        Class::Unknown,
        "SomethingNew".into(),
    ));
    walk(&rig, rows).await;
}
both_backends!(every_apns_answer_has_its_action, super::every_apns_row);

async fn every_fcm_row(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let canonical = |status: u16| match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    };
    let mut rows = Vec::new();
    for (status, code, class) in FCM {
        let token = fcm_token("android");
        let code = (!code.is_empty()).then_some(*code);
        rig.fcm.script(&token, *status, canonical(*status), code);
        let name = code.unwrap_or(canonical(*status)).to_owned();
        rows.push((
            token.clone(),
            NewRegistration::fcm(&token, "android"),
            *class,
            name,
        ));
    }
    let token = fcm_token("android");
    rig.fcm
        .script(&token, 409, "ABORTED", Some("UNSPECIFIED_ERROR"));
    rows.push((
        token.clone(),
        NewRegistration::fcm(&token, "android"),
        Class::Unknown,
        "UNSPECIFIED_ERROR".into(),
    ));
    walk(&rig, rows).await;
}
both_backends!(every_fcm_answer_has_its_action, super::every_fcm_row);

async fn outage_then_prompt_return(app: TestApp) {
    let backend = app.backend;
    drop(app);
    // Backoff up to 30 s: without the wake, the last retries would come long after
    // APNs is back.
    let rig = rig(
        backend,
        3599,
        "retry_max_ms = 30000\nretry_base_ms = 1000\n",
    )
    .await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let mut devices = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..10 {
        let token = apns_token("");
        devices.push(register(&rig, &app_id, NewRegistration::apns(&token, "ios")).await);
        tokens.push(token);
    }
    rig.apns.set_down(true);
    let mut ids = Vec::new();
    for device in &devices {
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [device]}, "notification": {"title": "o"}}),
        )
        .await;
        ids.push(answer["id"].as_str().expect("id").to_owned());
    }
    // Long enough that every delivery's backoff grows past 10 s (1+2+4+8 s).
    tokio::time::sleep(Duration::from_secs(16)).await;
    // The reason names the cause. Read until a failed attempt is on record: on
    // a loaded machine the first status read can fall between a claim and its
    // outcome, when the target shows no reason yet.
    let status = wait_status(&rig.app, &notifier, &ids[0], |s| {
        only_target(s)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("network: connection refused"))
    })
    .await;
    assert!(
        tokens
            .iter()
            .all(|t| !status.to_string().contains(t.as_str())),
        "no device token in a reason: {status}"
    );
    rig.apns.set_down(false);
    let back = Instant::now();
    for id in &ids {
        wait_status(&rig.app, &notifier, id, |s| s["counts"]["sent"] == 1).await;
    }
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the last one came {took:?} after APNs was back"
    );
    // Nobody gave up: every delivery is sent, none failed after a fixed count.
    assert_eq!(rig.apns.receipts().len(), 10);
}
both_backends!(
    after_an_outage_waiting_deliveries_go_at_once,
    super::outage_then_prompt_return
);

async fn per_app_backpressure(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(
        backend,
        3599,
        "max_queue_depth = 5\ncircuit_open_seconds = 60\n",
    )
    .await;
    // App X's APNs credential is broken: its deliveries wait behind the open circuit.
    let (unknown_key, _) = crate::providers::p8();
    let (x, x_notifier) = rig.tenant(&unknown_key).await;
    let (y, y_notifier) = rig.tenant(&rig.p8).await;
    let mut x_devices = Vec::new();
    for _ in 0..20 {
        x_devices.push(register(&rig, &x, NewRegistration::apns(&apns_token(""), "ios")).await);
    }
    let y_device = register(&rig, &y, NewRegistration::apns(&apns_token(""), "ios")).await;
    let backlog = send(
        &rig.app,
        &x_notifier,
        json!({"targets": {"registrations": x_devices}, "notification": {"title": "x"}}),
    )
    .await;
    wait_status(
        &rig.app,
        &x_notifier,
        backlog["id"].as_str().expect("id"),
        |s| {
            s["counts"]["queued"] == 20
                && s["targets"].as_array().is_some_and(|t| {
                    t.iter().all(|t| {
                        t["reason"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("circuit open")
                    })
                })
        },
    )
    .await;
    // The depth is counted every sweep interval (1 s here).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // App Y is not held back by X's backlog.
    let answer = send(
        &rig.app,
        &y_notifier,
        json!({"targets": {"registrations": [y_device]}, "notification": {"title": "y"}}),
    )
    .await;
    wait_status(
        &rig.app,
        &y_notifier,
        answer["id"].as_str().expect("id"),
        |s| s["counts"]["sent"] == 1,
    )
    .await;
    // App X, over its share, is refused alone, with Retry-After.
    let response = rig
        .app
        .client
        .post(rig.app.url(&format!("/v1/apps/{x}/notifications")))
        .bearer_auth(x_notifier.jwt("notify"))
        .json(
            &json!({"targets": {"registrations": [x_devices[0]]}, "notification": {"title": "x"}}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("this app has 20 deliveries queued"),
        "{problem}"
    );
}
both_backends!(
    one_app_backlog_never_refuses_another_app,
    super::per_app_backpressure
);
