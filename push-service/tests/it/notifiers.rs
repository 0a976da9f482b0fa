use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::fixtures::rsa_public_jwk;
use crate::helpers::{assert_problem, TestApp};

async fn notifiers_and_attestation(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let other_app = app.create_app("Other").await;
    let path = format!("/v1/apps/{app_id}/notifiers");
    let (status, created) = app
        .admin(
            Method::POST,
            &path,
            Some(
                json!({"name": "auth-1", "jwks": {"keys": [rsa_public_jwk(2048, "k1")]},
                "scopes": ["notify", "registrations:read", "registrations:delete"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["key_ids"], json!(["k1"]));
    assert_eq!(created["scopes"].as_array().expect("scopes").len(), 3);

    let (status, by_url) = app
        .admin(
            Method::POST,
            &path,
            Some(json!({"name": "auth-2", "jwks_url": "https://auth.example/jwks.json", "scopes": ["notify"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{by_url}");
    assert_eq!(by_url["jwks_url"], "https://auth.example/jwks.json");

    let (status, list) = app.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().expect("list").len(), 2);
    let (status, one) = app.admin(Method::GET, &format!("{path}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["name"], "auth-1");
    // A notifier is not visible through another app.
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/v1/apps/{other_app}/notifiers/{id}"),
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found", &id);
    let (status, _) = app
        .admin(Method::DELETE, &format!("{path}/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.admin(Method::GET, &format!("{path}/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let attestation = format!("/v1/apps/{app_id}/attestation");
    let (status, body) = app.admin(Method::GET, &attestation, None).await;
    assert_problem(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not-found",
        "attestation",
    );
    let (status, body) = app
        .admin(
            Method::PUT,
            &attestation,
            Some(json!({"jwks": {"keys": [rsa_public_jwk(2048, "att-1")]}, "required": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.admin(Method::GET, &attestation, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["required"], true);
    assert_eq!(body["key_ids"], json!(["att-1"]));
}
both_backends!(notifiers_and_attestation, super::notifiers_and_attestation);

async fn bad_notifier_keys_are_refused(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let path = format!("/v1/apps/{app_id}/notifiers");
    let create = |jwks: serde_json::Value, scopes: serde_json::Value| {
        Some(json!({"name": "n", "jwks": jwks, "scopes": scopes}))
    };
    let mut private = rsa_public_jwk(2048, "k");
    private["d"] = json!("AQAB");
    let cases = [
        (
            create(
                json!({"keys": [rsa_public_jwk(1024, "k")]}),
                json!(["notify"]),
            ),
            "1024 bits",
        ),
        (
            create(json!({"keys": [private]}), json!(["notify"])),
            "private",
        ),
        (
            create(
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}),
                json!(["notify"]),
            ),
            "private",
        ),
        (
            create(
                json!({"keys": [rsa_public_jwk(2048, "k")]}),
                json!(["admin"]),
            ),
            "admin",
        ),
        (create(json!({"keys": []}), json!(["notify"])), "1 to"),
        (
            Some(json!({"name": "n", "scopes": ["notify"]})),
            "exactly one",
        ),
        (
            Some(json!({"name": "n", "jwks_url": "ftp://x/jwks", "scopes": ["notify"]})),
            "https",
        ),
    ];
    for (body, needle) in cases {
        let (status, problem) = app.admin(Method::POST, &path, body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            needle,
        );
    }
    let mut hs = rsa_public_jwk(2048, "k");
    hs["alg"] = json!("HS256");
    let (status, problem) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/attestation"),
            Some(json!({"jwks": {"keys": [hs]}, "required": false})),
        )
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "HS256",
    );
}
both_backends!(
    bad_notifier_keys_are_refused,
    super::bad_notifier_keys_are_refused
);
