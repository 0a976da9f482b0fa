//! Fetches the service makes to URLs others name: JWKS URLs and a service
//! account's `token_uri`. Nothing inside the network is reached (refused at
//! registration and again at fetch, before any connection), a huge JWKS is cut
//! off at 64 KiB, and a URL is fetched at most once per 10 s, failures included.
//! Every server here is on 127.0.0.1; no test sends traffic anywhere else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use sdk_client::{random_id, unix_now, DeviceKey, NewRegistration};
use serde_json::{json, Value};

use crate::actors::with_jwt;
use crate::helpers::{spawn, Backend, Options, TestApp};

/// A JWT naming notifier `id`, signed by a key the service never saw.
fn stranger_jwt(id: &str) -> String {
    let key = DeviceKey::generate_p256();
    let now = unix_now();
    key.sign_jws(
        &json!({"alg": "ES256", "kid": "k1"}),
        &json!({"iss": id, "aud": "push-test", "iat": now, "exp": now + 60,
            "jti": random_id(), "scope": "notify"}),
    )
}

/// A notification sent with a JWT naming notifier `id` that the service never saw
/// sign: the service must look the notifier's keys up (its `jwks_url`).
async fn notify_as_stranger(app: &TestApp, app_id: &str, id: &str) -> (StatusCode, Value) {
    with_jwt(
        app,
        Method::POST,
        &format!("/v1/apps/{app_id}/notifications"),
        &stranger_jwt(id),
        Some(json!({"targets": {"all": true}, "data": {"k": "v"}})),
    )
    .await
}

/// A loopback HTTP server that counts connections and answers `/jwks.json`
/// with `body_mib` MiB of JSON-ish bytes, streamed; returns its URL, the
/// connection count and how many chunks it produced.
async fn jwks_server(body_mib: usize) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let chunks = Arc::new(AtomicUsize::new(0));
    let router = {
        let requests = requests.clone();
        let chunks = chunks.clone();
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                requests.fetch_add(1, Ordering::SeqCst);
                let chunks = chunks.clone();
                async move {
                    let stream = futures_util::stream::iter(0..body_mib).map(move |_| {
                        chunks.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1 << 20]))
                    });
                    axum::body::Body::from_stream(stream)
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/jwks.json",
        listener.local_addr().expect("addr").port()
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, requests, chunks)
}

use futures_util::StreamExt;

async fn create_notifier(app: &TestApp, app_id: &str, jwks_url: &str) -> (StatusCode, Value) {
    app.admin(
        Method::POST,
        &format!("/v1/apps/{app_id}/notifiers"),
        Some(json!({"name": "remote", "jwks_url": jwks_url, "scopes": ["notify"]})),
    )
    .await
}

async fn inside_addresses(backend: Backend) {
    let app = spawn(Options::new(backend)).await;
    let app_id = app.create_app("Acme").await;
    for url in [
        "https://127.0.0.1:6379/jwks.json",
        "http://127.0.0.1:8080/jwks.json",
        "https://10.0.0.1/jwks.json",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/jwks.json",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://localhost/jwks.json",
    ] {
        let (status, body) = create_notifier(&app, &app_id, url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("jwks_url"),
            "{body}"
        );
    }
    // A service account whose token_uri is not Google's, or inside.
    let (mut account, _) = crate::fixtures::service_account("acme-push");
    for uri in [
        "https://127.0.0.1:4443/token",
        "https://10.0.0.1/token",
        "https://169.254.169.254/token",
        "https://evil.example.com/token",
        "http://oauth2.googleapis.com/token",
    ] {
        account["token_uri"] = json!(uri);
        let (status, body) = app
            .admin(
                Method::PUT,
                &format!("/v1/apps/{app_id}/credentials/fcm"),
                Some(json!({"service_account": account})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("token_uri"),
            "{body}"
        );
    }

    // At fetch: a notifier stored while a node allowed it (or before this rule)
    // is not fetched by a node that does not: no connection is even attempted.
    let (url, requests, _) = jwks_server(1).await;
    let mut open = Options::new(backend);
    open.extra = "allow_private_fetch = true\n".into();
    open.join = Some((app.database_url.clone(), app.prefix.clone()));
    let permissive = spawn(open).await;
    let (status, body) = create_notifier(&permissive, &app_id, &url).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (status, body) = notify_as_stranger(&app, &app_id, &id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.contains("127.0.0.1") && !detail.contains("answered"),
        "{detail}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "nothing reached the inside server"
    );
}

#[tokio::test]
async fn inside_addresses_are_refused_at_registration_and_at_fetch_sqlite() {
    inside_addresses(Backend::Sqlite).await;
}

#[tokio::test]
async fn inside_addresses_are_refused_at_registration_and_at_fetch_postgres() {
    inside_addresses(Backend::Postgres).await;
}

async fn huge_jwks(backend: Backend) {
    // The operator allows loopback here, to serve the huge JWKS from the test.
    let mut options = Options::new(backend);
    options.extra =
        "allow_private_fetch = true\nrate_limit_address_requests_per_second = 0\n".into();
    let app = spawn(options).await;
    let app_id = app.create_app("Acme").await;
    let (url, requests, chunks) = jwks_server(30).await;
    let (status, body) = create_notifier(&app, &app_id, &url).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    // 20 anonymous callers name that notifier at once.
    let calls = (0..20).map(|_| notify_as_stranger(&app, &app_id, &id));
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("cannot be fetched"), "{detail}");
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "one fetch for 20 callers"
    );
    // Cut off early: the server never got to produce its 30 MiB.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let produced = chunks.load(Ordering::SeqCst);
    assert!(produced < 30, "{produced} MiB produced");
    // Within 10 s, a failure is remembered: no new fetch.
    let (status, _) = notify_as_stranger(&app, &app_id, &id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_huge_jwks_is_cut_off_and_fetched_once_per_10_s_sqlite() {
    huge_jwks(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_huge_jwks_is_cut_off_and_fetched_once_per_10_s_postgres() {
    huge_jwks(Backend::Postgres).await;
}

async fn token_uri_at_send(backend: Backend) {
    // A service account stored while a node allowed the simulator's token
    // endpoint; a node that does not allow it never calls it.
    // Both nodes share one master key: the strict node opens the credential.
    let master = "master_key = \"a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=\"\n";
    let rig = crate::providers::rig(backend, 3599, master).await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let mut strict = Options::new(backend);
    strict.extra = format!(
        "fcm_url = {:?}\nprovider_ca_file = {:?}\n{master}",
        rig.fcm.url,
        rig.ca_path()
    );
    strict.join = Some((rig.app.database_url.clone(), rig.app.prefix.clone()));
    strict.workers = 4;
    let strict = spawn(strict).await;
    let registration = crate::providers::register(
        &rig,
        &app_id,
        NewRegistration::fcm(&crate::providers::fcm_token("android"), "android"),
    )
    .await;
    // The permissive node stops: only the strict one sends.
    rig.app.shutdown.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, answer) = with_jwt(
        &strict,
        Method::POST,
        &format!("/v1/apps/{app_id}/notifications"),
        &notifier.jwt("notify"),
        Some(json!({"targets": {"registrations": [registration]}, "notification": {"title": "t"}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("id");
    let status = crate::notify::wait_status(&strict, &notifier, id, |s| {
        s["targets"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("token_uri")
    })
    .await;
    assert_eq!(status["targets"][0]["state"], "queued", "{status}");
    assert_eq!(
        rig.fcm.tokens_issued(),
        0,
        "the token endpoint was never called"
    );
}

#[tokio::test]
async fn a_token_uri_not_allowed_is_never_called_sqlite() {
    token_uri_at_send(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_token_uri_not_allowed_is_never_called_postgres() {
    token_uri_at_send(Backend::Postgres).await;
}
