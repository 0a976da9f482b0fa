//! The auth server's side of registrations, and its JWT attack matrix.

use reqwest::{Method, StatusCode};
use sdk_client::{random_id, unix_now, DeviceKey, NewRegistration};
use serde_json::json;

use crate::actors::{apns_token, device, with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};

async fn status_aliases_and_server_delete(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(
        &app,
        &app_id,
        &["notify", "registrations:read", "registrations:delete"],
    )
    .await;
    let client = device(&app, DeviceKey::generate_p256());
    let registration = client
        .register(&app_id, &NewRegistration::apns(&apns_token(), "ios"))
        .await
        .expect("register");
    let path = format!("/v1/apps/{app_id}/registrations/{}", registration.id);

    let (status, body) = with_jwt(
        &app,
        Method::GET,
        &path,
        &notifier.jwt("registrations:read"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["aliases"], json!([]));
    assert!(
        body.get("token").is_none(),
        "the provider token is never shown"
    );

    let (status, body) = with_jwt(
        &app,
        Method::PUT,
        &format!("{path}/aliases"),
        &notifier.jwt("notify"),
        Some(json!({"aliases": ["user:42", "tenant:acme", "user:42"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aliases"], json!(["tenant:acme", "user:42"]));
    let (_, body) = with_jwt(
        &app,
        Method::GET,
        &path,
        &notifier.jwt("registrations:read"),
        None,
    )
    .await;
    assert_eq!(body["aliases"], json!(["tenant:acme", "user:42"]));

    let (status, body) = with_jwt(
        &app,
        Method::PUT,
        &format!("{path}/aliases"),
        &notifier.jwt("notify"),
        Some(json!({"aliases": ["bad\nalias"]})),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "aliases",
    );

    let (status, _) = with_jwt(
        &app,
        Method::DELETE,
        &path,
        &notifier.jwt("registrations:delete"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let gone = client
        .status(&registration.id)
        .await
        .expect_err("deleted by the server");
    assert_eq!(gone.problem_kind(), Some("not-found"));
}
both_backends!(
    status_aliases_and_server_delete,
    super::status_aliases_and_server_delete
);

async fn notifier_attack_matrix(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let other_app = app.create_app("Other").await;
    let notifier = TestNotifier::create(&app, &app_id, &["registrations:read"]).await;
    let other_notifier = TestNotifier::create(
        &app,
        &other_app,
        &["registrations:read", "registrations:delete"],
    )
    .await;
    let client = device(&app, DeviceKey::generate_p256());
    let registration = client
        .register(&app_id, &NewRegistration::apns(&apns_token(), "ios"))
        .await
        .expect("register");
    let path = format!("/v1/apps/{app_id}/registrations/{}", registration.id);

    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let signed = |patch_header: serde_json::Value, patch_claims: serde_json::Value| {
        let (mut header, mut claims) = notifier.parts("registrations:read");
        for (k, v) in patch_header.as_object().expect("object") {
            header[k] = v.clone();
        }
        for (k, v) in patch_claims.as_object().expect("object") {
            claims[k] = v.clone();
        }
        notifier.key.sign_jws(&header, &claims)
    };
    let (_, claims) = notifier.parts("registrations:read");
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    let hs256 = {
        use base64::Engine;
        use hmac::Mac;
        let input = format!(
            "{}.{}",
            b64(&json!({"alg": "HS256", "kid": notifier.kid})),
            b64(&claims)
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(
            notifier.key.public_jwk().to_string().as_bytes(),
        )
        .expect("key");
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let now = unix_now();
    let forged =
        DeviceKey::generate_p256().sign_jws(&notifier.parts("registrations:read").0, &claims);
    let cases: Vec<(String, &str)> = vec![
        (none, "`none`"),
        (hs256, "HS256"),
        (forged, "signature"),
        (
            signed(json!({}), json!({"aud": "https://other.example"})),
            "aud",
        ),
        (
            signed(json!({}), json!({"exp": now - 300, "iat": now - 400})),
            "expired",
        ),
        (signed(json!({}), json!({"exp": now + 3600})), "ahead"),
        (
            signed(json!({}), json!({"iat": now + 120, "exp": now + 180})),
            "future",
        ),
        (signed(json!({"kid": "unknown"}), json!({})), "kid"),
        (
            signed(json!({}), json!({"iss": other_notifier.id})),
            "not a notifier of this app",
        ),
        (signed(json!({}), json!({"jti": ""})), "jti"),
    ];
    for (jwt, needle) in cases {
        let (status, body) = with_jwt(&app, Method::GET, &path, &jwt, None).await;
        assert_problem(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            needle,
        );
    }

    let jwt = notifier.jwt("registrations:read");
    let (status, _) = with_jwt(&app, Method::GET, &path, &jwt, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = with_jwt(&app, Method::GET, &path, &jwt, None).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "already used",
    );

    // Scope: the token lacks it, or the notifier was never granted it.
    let (status, body) = with_jwt(&app, Method::GET, &path, &notifier.jwt("notify"), None).await;
    assert_problem(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "insufficient-scope",
        "registrations:read",
    );
    let (status, body) = with_jwt(
        &app,
        Method::DELETE,
        &path,
        &notifier.jwt("registrations:delete"),
        None,
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "insufficient-scope",
        "registrations:delete",
    );

    // Another app's notifier sees nothing of this app: not through its own app path…
    let foreign = format!("/v1/apps/{other_app}/registrations/{}", registration.id);
    let (status, body) = with_jwt(
        &app,
        Method::GET,
        &foreign,
        &other_notifier.jwt("registrations:read"),
        None,
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not-found",
        &registration.id,
    );
    let (status, _) = with_jwt(
        &app,
        Method::DELETE,
        &foreign,
        &other_notifier.jwt("registrations:delete"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // …nor by naming this app in the path.
    let (status, body) = with_jwt(
        &app,
        Method::GET,
        &path,
        &other_notifier.jwt("registrations:read"),
        None,
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not a notifier of this app",
    );
    assert_eq!(
        client
            .status(&registration.id)
            .await
            .expect("untouched")
            .status,
        "active"
    );

    let (status, body) =
        with_jwt(&app, Method::GET, &path, &format!("x{}", random_id()), None).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "JWS",
    );
}
both_backends!(notifier_attack_matrix, super::notifier_attack_matrix);

async fn notifier_keys_from_a_jwks_url(app: TestApp) {
    // The JWKS server is on loopback: a node that allows private fetches.
    let backend = app.backend;
    drop(app);
    let mut options = crate::helpers::Options::new(backend);
    options.extra = "allow_private_fetch = true\n".into();
    let app = crate::helpers::spawn(options).await;
    // The auth server publishes its keys; the service fetches, caches, and refetches on an unknown kid.
    let first = DeviceKey::generate_p256();
    let second = DeviceKey::generate_p256();
    let published = std::sync::Arc::new(std::sync::Mutex::new(vec![("k1", first.clone())]));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let jwks_router = {
        let published = published.clone();
        let fetches = fetches.clone();
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let published = published.clone();
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let keys: Vec<serde_json::Value> = published
                        .lock()
                        .expect("lock")
                        .iter()
                        .map(|(kid, key)| {
                            let mut jwk = key.public_jwk();
                            jwk["kid"] = json!(kid);
                            jwk
                        })
                        .collect();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let jwks_url = format!(
        "http://127.0.0.1:{}/jwks.json",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(async move { axum::serve(listener, jwks_router).await });

    let app_id = app.create_app("Acme").await;
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/v1/apps/{app_id}/notifiers"),
            Some(
                json!({"name": "auth-url", "jwks_url": jwks_url, "scopes": ["registrations:read"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let notifier_id = body["id"].as_str().expect("id").to_owned();
    let token = |key: &DeviceKey, kid: &str| {
        let now = unix_now();
        key.sign_jws(
            &json!({"alg": "ES256", "kid": kid}),
            &json!({"iss": notifier_id, "aud": "push-test", "iat": now, "exp": now + 60,
                "jti": random_id(), "scope": "registrations:read"}),
        )
    };
    let path = format!("/v1/apps/{app_id}/registrations/reg_missing");
    for _ in 0..3 {
        let (status, body) = with_jwt(&app, Method::GET, &path, &token(&first, "k1"), None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "authenticated, then no such registration: {body}"
        );
    }
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );
    // Key rotation: a new kid is fetched when first seen, once 10 s have passed
    // since the last fetch (at most one fetch per 10 s, whatever asks for it).
    published.lock().expect("lock").push(("k2", second.clone()));
    let (status, _) = with_jwt(&app, Method::GET, &path, &token(&second, "k2"), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "within 10 s: not fetched again"
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::sleep(std::time::Duration::from_millis(10_200)).await;
    let (status, _) = with_jwt(&app, Method::GET, &path, &token(&second, "k2"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // An unknown kid right after does not hammer the auth server.
    let (status, body) = with_jwt(&app, Method::GET, &path, &token(&second, "k3"), None).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "kid",
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
}
both_backends!(
    notifier_keys_from_a_jwks_url,
    super::notifier_keys_from_a_jwks_url
);
