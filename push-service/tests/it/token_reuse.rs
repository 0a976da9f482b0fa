//! Notifiers that reuse a token until its `exp` (APNs's way), against the
//! single-use default.

use reqwest::{Method, StatusCode};
use sdk_client::{unix_now, DeviceKey, NewRegistration};
use serde_json::json;

use crate::actors::{device, with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};

async fn a_reusable_token_works_until_its_notifier_is_gone(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let other_app = app.create_app("Other").await;
    let reusing =
        TestNotifier::create_with(&app, &app_id, &["notify"], json!({"token_reuse": true})).await;
    let single = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let (status, view) = app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/notifiers/{}", reusing.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["token_reuse"], true, "{view}");
    let desktop = device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let path = format!("/v1/apps/{app_id}/notifications");
    let body =
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "t"}});
    let sign = |n: &TestNotifier, exp_in: i64, jti: bool| {
        let (header, mut claims) = n.parts("notify");
        claims["exp"] = json!(unix_now() + exp_in);
        if !jti {
            claims.as_object_mut().map(|c| c.remove("jti"));
        }
        n.key.sign_jws(&header, &claims)
    };

    // Apple's shape: no `jti`, valid for most of an hour, used again and again.
    let token = sign(&reusing, 3000, false);
    for _ in 0..3 {
        let (status, answer) =
            with_jwt(&app, Method::POST, &path, &token, Some(body.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    // More than an hour ahead is refused even here.
    let (status, problem) = with_jwt(
        &app,
        Method::POST,
        &path,
        &sign(&reusing, 7200, false),
        Some(body.clone()),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "3600s",
    );
    // The verified token stays bound to its app.
    let (status, problem) = with_jwt(
        &app,
        Method::POST,
        &format!("/v1/apps/{other_app}/notifications"),
        &token,
        Some(body.clone()),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not a notifier",
    );

    // The default stays single use, with a short lifetime and a `jti`.
    let once = sign(&single, 50, true);
    let (status, _) = with_jwt(&app, Method::POST, &path, &once, Some(body.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, problem) = with_jwt(&app, Method::POST, &path, &once, Some(body.clone())).await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "already used",
    );
    for (token, says) in [
        (sign(&single, 50, false), "jti"),
        (sign(&single, 3000, true), "ahead"),
    ] {
        let (status, problem) =
            with_jwt(&app, Method::POST, &path, &token, Some(body.clone())).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            says,
        );
    }

    // Deleting the notifier ends its tokens at once on this node.
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/v1/apps/{app_id}/notifiers/{}", reusing.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = with_jwt(&app, Method::POST, &path, &token, Some(body)).await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not a notifier",
    );
}
both_backends!(
    a_reusable_token_works_until_its_notifier_is_gone,
    super::a_reusable_token_works_until_its_notifier_is_gone
);
