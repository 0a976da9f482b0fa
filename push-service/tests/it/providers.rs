//! APNs and FCM through the simulators: exact requests, the outcome table, circuits,
//! token reuse and refresh.

use std::time::Duration;

use loadtest::apns::{ApnsConfig, ApnsFaults, ApnsKey, ApnsSimulator};
use loadtest::fcm::{FcmConfig, FcmSimulator};
use loadtest::tls::TestPki;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use reqwest::{Method, StatusCode};
use sdk_client::{DeviceKey, NewRegistration};
use serde_json::{json, Value};

use crate::actors::{device, with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{spawn, Backend, Options, TestApp};
use crate::notify::{send, wait_status};

pub const TEAM: &str = "TEAM123456";
pub const KEY_ID: &str = "KEY1234567";
pub const BUNDLE: &str = "com.acme.auth";

/// Simulators, and a node configured to use them.
pub struct Rig {
    pub app: TestApp,
    pub apns: ApnsSimulator,
    pub fcm: FcmSimulator,
    pub p8: String,
    pub service_account: Value,
    _ca: tempfile::NamedTempFile,
}

pub fn p8() -> (String, p256::ecdsa::VerifyingKey) {
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    (pem, p256::ecdsa::VerifyingKey::from(key.public_key()))
}

pub async fn rig(backend: Backend, token_lifetime_seconds: i64, extra: &str) -> Rig {
    rig_with(backend, token_lifetime_seconds, extra, false).await
}

/// [`rig`] for several nodes (`cluster`): each node keeps its own APNs provider
/// token, so the simulator applies Apple's 20-minute rule per connection.
pub async fn rig_with(
    backend: Backend,
    token_lifetime_seconds: i64,
    extra: &str,
    cluster: bool,
) -> Rig {
    rig_offering(
        backend,
        token_lifetime_seconds,
        extra,
        cluster,
        &[b"h2", b"http/1.1"],
        &[],
    )
    .await
}

/// [`rig_with`] whose FCM simulator offers only `fcm_alpn` by ALPN, and whose
/// APNs simulator trusts client certificates issued by `apns_client_roots`.
pub async fn rig_offering(
    backend: Backend,
    token_lifetime_seconds: i64,
    extra: &str,
    cluster: bool,
    fcm_alpn: &[&[u8]],
    apns_client_roots: &[Vec<u8>],
) -> Rig {
    let pki = TestPki::generate().expect("pki");
    let ca = tempfile::NamedTempFile::new().expect("ca file");
    std::fs::write(ca.path(), &pki.ca_pem).expect("write ca");
    let (p8, public) = p8();
    let apns = ApnsSimulator::start_with_client_roots(
        ApnsConfig {
            keys: vec![ApnsKey {
                key_id: KEY_ID.into(),
                team_id: TEAM.into(),
                public,
            }],
            topics: vec![BUNDLE.into()],
            max_concurrent_streams: 1000,
            tokens_per_key: !cluster,
        },
        &pki,
        0,
        apns_client_roots,
    )
    .await
    .expect("apns simulator");
    let (service_account_json, pem) = crate::fixtures::service_account("acme-push");
    let private = {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("rsa")
    };
    let fcm = FcmSimulator::start_offering(
        FcmConfig {
            project_id: "acme-push".into(),
            client_email: service_account_json["client_email"]
                .as_str()
                .expect("email")
                .into(),
            public_key: private.to_public_key(),
            token_lifetime_seconds,
            quota_per_minute: 600_000,
        },
        &pki,
        0,
        fcm_alpn,
    )
    .await
    .expect("fcm simulator");
    let mut service_account = service_account_json;
    service_account["token_uri"] = json!(fcm.token_uri);
    let mut options = Options::new(backend);
    options.extra = format!(
        "{}circuit_open_seconds = 2\ninvalidation_guard_min = 5\nretry_max_attempts = 3\n{extra}",
        provider_lines(&apns.url, &fcm.url, &ca.path().display().to_string()),
    );
    let app = spawn(options).await;
    Rig {
        app,
        apns,
        fcm,
        p8,
        service_account,
        _ca: ca,
    }
}

/// Configuration lines that point a node at the simulators (`ca`: their CA file).
fn provider_lines(apns_url: &str, fcm_url: &str, ca: &str) -> String {
    format!(
        "apns_production_url = {apns_url:?}\napns_sandbox_url = {apns_url:?}\nfcm_url = {fcm_url:?}\n\
         provider_ca_file = {ca:?}\nallow_private_fetch = true\n\
         fcm_token_uri_allow = \"https://127.0.0.1:\"\n"
    )
}

impl Rig {
    /// Configuration lines that point another node at this rig's simulators.
    pub fn provider_lines(&self) -> String {
        provider_lines(&self.apns.url, &self.fcm.url, &self.ca_path())
    }

    /// The simulators' CA file.
    pub fn ca_path(&self) -> String {
        self._ca.path().display().to_string()
    }

    /// An app with both credentials and a notifier.
    pub async fn tenant(&self, p8: &str) -> (String, TestNotifier) {
        self.tenant_on(&self.app, p8).await
    }

    /// [`Rig::tenant`] through another node's API.
    pub async fn tenant_on(&self, api: &crate::helpers::Api, p8: &str) -> (String, TestNotifier) {
        let app_id = api.create_app("Acme").await;
        let (status, body) = api
            .admin(
                Method::PUT,
                &format!("/v1/apps/{app_id}/credentials/apns"),
                Some(
                    json!({"auth": "token", "team_id": TEAM, "key_id": KEY_ID, "private_key": p8,
                    "topic": BUNDLE, "environment": "production"}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = api
            .admin(
                Method::PUT,
                &format!("/v1/apps/{app_id}/credentials/fcm"),
                Some(json!({"service_account": self.service_account})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let notifier = TestNotifier::create(api, &app_id, &["notify", "registrations:read"]).await;
        (app_id, notifier)
    }
}

/// An APNs token starting with `prefix` (the simulator's script), else random.
pub fn apns_token(prefix: &str) -> String {
    let random: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    let token = format!("{prefix}{}", &random[prefix.len()..]);
    if prefix.is_empty() && token.starts_with(['4', '5']) {
        format!("a{}", &token[1..])
    } else {
        token
    }
}

pub fn fcm_token(prefix: &str) -> String {
    format!(
        "{prefix}-{}:APA91b{}",
        sdk_client::random_id(),
        sdk_client::random_id().repeat(3)
    )
}

pub async fn register(rig: &Rig, app_id: &str, registration: NewRegistration) -> String {
    device(&rig.app, DeviceKey::generate_p256())
        .register(app_id, &registration)
        .await
        .expect("register")
        .id
}

async fn exact_requests(app_backend: Backend) {
    let rig = rig(app_backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let apns_device = apns_token("");
    let fcm_device = fcm_token("android");
    let apns_reg = register(&rig, &app_id, NewRegistration::apns(&apns_device, "ios")).await;
    let fcm_reg = register(&rig, &app_id, NewRegistration::fcm(&fcm_device, "android")).await;
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [apns_reg, fcm_reg]},
            "notification": {"title": "Sign-in request", "body": "Approve?"},
            "data": {"request_id": "r-1"}, "collapse_key": "login-1", "ttl_seconds": 120}),
    )
    .await;
    let id = answer["id"].as_str().expect("id");
    wait_status(&rig.app, &notifier, id, |s| s["counts"]["sent"] == 2).await;

    let receipts = rig.apns.receipts();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let apns = &receipts[0];
    assert_eq!(apns.token, apns_device);
    assert_eq!(apns.topic, BUNDLE);
    assert_eq!(apns.headers["apns-push-type"], "alert");
    assert_eq!(apns.headers["apns-priority"], "10");
    assert_eq!(apns.headers["apns-collapse-id"], "login-1");
    assert_eq!(apns.headers["apns-id"], apns.apns_id);
    let expiration: i64 = apns.headers["apns-expiration"].parse().expect("seconds");
    let now = sdk_client::unix_now();
    assert!(
        (now + 100..=now + 121).contains(&expiration),
        "{expiration} vs {now}"
    );
    assert_eq!(
        apns.payload,
        json!({"aps": {"alert": {"title": "Sign-in request", "body": "Approve?"}}, "request_id": "r-1"})
    );

    let receipts = rig.fcm.receipts();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let message = &receipts[0].message;
    assert_eq!(message["token"], fcm_device);
    assert_eq!(
        message["notification"],
        json!({"title": "Sign-in request", "body": "Approve?"})
    );
    assert_eq!(message["data"], json!({"request_id": "r-1"}));
    assert_eq!(message["android"]["priority"], "HIGH");
    assert_eq!(message["android"]["collapse_key"], "login-1");
    let ttl: f64 = message["android"]["ttl"]
        .as_str()
        .expect("ttl")
        .trim_end_matches('s')
        .parse()
        .expect("secs");
    assert!((100.0..=120.0).contains(&ttl), "{ttl}");
    assert_eq!(message["apns"]["headers"]["apns-priority"], "10");
    // FCM's front ends offer HTTP/2 by ALPN, and the sends take it.
    assert_eq!(receipts[0].http, "HTTP/2.0");
}
both_backends!(
    apns_and_fcm_receive_the_expected_requests,
    super::exact_requests_on
);
async fn exact_requests_on(app: TestApp) {
    // The rig builds its own node; use the backend the macro chose.
    let backend = app.backend;
    drop(app);
    exact_requests(backend).await;
}

/// An FCM address whose server offers only HTTP/1.1 by ALPN (a proxy, an
/// older front end): the sends go on over HTTP/1.1, the first one included.
async fn fcm_over_http1(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig_offering(backend, 3599, "", false, &[b"http/1.1"], &[]).await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    for round in 0..2 {
        let token = fcm_token("android");
        let reg = register(&rig, &app_id, NewRegistration::fcm(&token, "android")).await;
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [reg]}, "notification": {"title": "h1"}}),
        )
        .await;
        let id = answer["id"].as_str().expect("id");
        wait_status(&rig.app, &notifier, id, |s| s["counts"]["sent"] == 1).await;
        let receipts = rig.fcm.receipts();
        assert_eq!(receipts.len(), round + 1, "{receipts:?}");
        assert_eq!(receipts[round].message["token"], token);
        assert_eq!(receipts[round].http, "HTTP/1.1");
    }
}
both_backends!(
    fcm_servers_that_speak_only_http1_get_the_sends,
    super::fcm_over_http1
);

/// A `CONNECT` proxy on loopback that records the request line of each
/// tunnel it opens.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or("").to_owned();
                let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                record.lock().expect("record").push(line);
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

/// With `provider_proxy`, APNs and FCM connections tunnel through it
/// (`CONNECT` to the provider's host and port), TLS end to end.
async fn sends_through_an_egress_proxy(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let (proxy, tunnels) = connect_proxy().await;
    let rig = rig(backend, 3599, &format!("provider_proxy = {proxy:?}\n")).await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let apns_reg = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let fcm_reg = register(
        &rig,
        &app_id,
        NewRegistration::fcm(&fcm_token("a"), "android"),
    )
    .await;
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [apns_reg, fcm_reg]}, "notification": {"title": "p"}}),
    )
    .await;
    let id = answer["id"].as_str().expect("id");
    wait_status(&rig.app, &notifier, id, |s| s["counts"]["sent"] == 2).await;
    assert_eq!(rig.apns.receipts().len(), 1);
    assert_eq!(rig.fcm.receipts().len(), 1);
    let tunnels = tunnels.lock().expect("tunnels").clone();
    for sim in [&rig.apns.url, &rig.fcm.url] {
        let authority = sim.trim_start_matches("https://");
        assert!(
            tunnels.contains(&format!("CONNECT {authority} HTTP/1.1")),
            "no tunnel to {authority} in {tunnels:?} (is NO_PROXY set in this environment?)"
        );
    }
}
both_backends!(
    provider_connections_go_through_the_egress_proxy,
    super::sends_through_an_egress_proxy
);

/// Certificate-based trust: the `.p12`'s certificate, issued by a CA APNs
/// trusts, is the TLS client certificate of the connections, and the requests
/// carry no provider token.
async fn certificate_auth(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Test Worldwide Developer Relations",
    );
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Apple Push Services: {BUNDLE}"),
    );
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    let p12 = crate::fixtures::p12_of(&key, cert.der(), "pw");

    let rig = rig_offering(backend, 3599, "", false, &[b"h2"], &[ca.der().to_vec()]).await;
    let app_id = rig.app.create_app("Acme").await;
    let (status, body) = rig
        .app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/credentials/apns"),
            Some(json!({"auth": "certificate", "p12": p12, "password": "pw",
                "topic": BUNDLE, "environment": "production"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let notifier = TestNotifier::create(&rig.app, &app_id, &["notify"]).await;
    let token = apns_token("");
    let reg = register(&rig, &app_id, NewRegistration::apns(&token, "ios")).await;
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [reg]}, "notification": {"title": "cert"}}),
    )
    .await;
    let id = answer["id"].as_str().expect("id");
    wait_status(&rig.app, &notifier, id, |s| s["counts"]["sent"] == 1).await;
    let receipts = rig.apns.receipts();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].token, token);
    assert_eq!(receipts[0].topic, BUNDLE);
}
both_backends!(
    apns_certificate_trust_delivers_without_a_provider_token,
    super::certificate_auth
);

async fn outcome_table(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    // Enough healthy devices that four rejected tokens do not trip the guard.
    let mut healthy = Vec::new();
    for _ in 0..4 {
        healthy.push(register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await);
        healthy.push(
            register(
                &rig,
                &app_id,
                NewRegistration::fcm(&fcm_token("android"), "android"),
            )
            .await,
        );
    }
    let warmup = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": healthy}, "notification": {"title": "hi"}}),
    )
    .await;
    wait_status(
        &rig.app,
        &notifier,
        warmup["id"].as_str().expect("id"),
        |s| s["counts"]["sent"] == 8,
    )
    .await;

    let cases: Vec<(NewRegistration, &str, &str)> = vec![
        (
            NewRegistration::apns(&apns_token("4100"), "ios"),
            "invalid",
            "apns:Unregistered",
        ),
        (
            NewRegistration::apns(&apns_token("400b"), "ios"),
            "invalid",
            "apns:BadDeviceToken",
        ),
        (
            NewRegistration::fcm(&fcm_token("unregistered"), "android"),
            "invalid",
            "fcm:UNREGISTERED",
        ),
        (
            NewRegistration::fcm(&fcm_token("badtoken"), "android"),
            "invalid",
            "fcm:INVALID_ARGUMENT token",
        ),
    ];
    // A provider that is overloaded or down is retried until the TTL (3 s here).
    let transient: Vec<(NewRegistration, &str, &str)> = vec![
        (
            NewRegistration::apns(&apns_token("5030"), "ios"),
            "expired",
            "ttl",
        ),
        (
            NewRegistration::apns(&apns_token("4290"), "ios"),
            "expired",
            "ttl",
        ),
        (
            NewRegistration::fcm(&fcm_token("internal"), "android"),
            "expired",
            "ttl",
        ),
    ];
    let mut expected = Vec::new();
    let mut statuses = Vec::new();
    for (cases, ttl) in [(cases, 86_400), (transient, 3)] {
        let mut ids = Vec::new();
        for (registration, state, reason) in cases {
            let id = register(&rig, &app_id, registration).await;
            ids.push(id.clone());
            expected.push((id, state, reason));
        }
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": ids}, "notification": {"title": "t"},
                "ttl_seconds": ttl}),
        )
        .await;
        let id = answer["id"].as_str().expect("id");
        statuses.push(wait_status(&rig.app, &notifier, id, |s| s["counts"]["queued"] == 0).await);
    }
    let targets: Vec<&Value> = statuses
        .iter()
        .flat_map(|s| s["targets"].as_array().expect("targets"))
        .collect();
    for (registration, state, reason) in &expected {
        let target = targets
            .iter()
            .find(|t| t["registration"] == registration.as_str())
            .expect("target listed");
        assert_eq!(target["state"], *state, "{target}");
        assert!(
            target["reason"].as_str().unwrap_or("").starts_with(reason),
            "{target} / {reason}"
        );
        let (code, reg) = with_jwt(
            &rig.app,
            Method::GET,
            &format!("/v1/apps/{app_id}/registrations/{registration}"),
            &notifier.jwt("registrations:read"),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        if *state == "invalid" {
            assert_eq!(reg["status"], "invalid", "{reg}");
            assert!(
                reg["invalid_reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(reason),
                "{reg}"
            );
            assert!(reg["invalidated_at"].is_string());
        } else {
            assert_eq!(reg["status"], "active", "{reg}");
        }
    }

    // A transient 429 is retried and then delivered; a payload refused by FCM fails.
    rig.apns.set_faults(ApnsFaults {
        too_many_requests: 1,
        ..ApnsFaults::default()
    });
    let once = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [healthy[0]]}, "notification": {"title": "again"}}),
    )
    .await;
    let status = wait_status(&rig.app, &notifier, once["id"].as_str().expect("id"), |s| {
        s["counts"]["sent"] == 1
    })
    .await;
    assert_eq!(status["targets"][0]["attempts"], 2, "{status}");
    // FCM refuses this notification (not the token): it fails alone.
    let refused_token = fcm_token("android");
    rig.fcm.script(
        &refused_token,
        400,
        "INVALID_ARGUMENT",
        Some("INVALID_ARGUMENT"),
    );
    let refused = register(
        &rig,
        &app_id,
        NewRegistration::fcm(&refused_token, "android"),
    )
    .await;
    let bad = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [refused]}, "notification": {"title": "x"}}),
    )
    .await;
    let status = wait_status(&rig.app, &notifier, bad["id"].as_str().expect("id"), |s| {
        s["counts"]["failed"] == 1
    })
    .await;
    assert!(
        status["targets"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("INVALID_ARGUMENT"),
        "{status}"
    );
}
both_backends!(every_outcome_row_has_its_result, super::outcome_table);

async fn broken_credential(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (healthy_app, healthy) = rig.tenant(&rig.p8).await;
    let (unknown_key, _) = p8();
    let (broken_app, broken) = rig.tenant(&unknown_key).await;
    let mut healthy_regs = Vec::new();
    let mut broken_regs = Vec::new();
    for _ in 0..20 {
        healthy_regs.push(
            register(
                &rig,
                &healthy_app,
                NewRegistration::apns(&apns_token(""), "ios"),
            )
            .await,
        );
        broken_regs.push(
            register(
                &rig,
                &broken_app,
                NewRegistration::apns(&apns_token(""), "ios"),
            )
            .await,
        );
    }
    let b = send(
        &rig.app,
        &broken,
        json!({"targets": {"registrations": broken_regs}, "notification": {"title": "b"}}),
    )
    .await;
    let a = send(
        &rig.app,
        &healthy,
        json!({"targets": {"registrations": healthy_regs}, "notification": {"title": "a"}}),
    )
    .await;
    wait_status(&rig.app, &healthy, a["id"].as_str().expect("id"), |s| {
        s["counts"]["sent"] == 20
    })
    .await;
    let status = wait_status(&rig.app, &broken, b["id"].as_str().expect("id"), |s| {
        s["counts"]["queued"] == 20
    })
    .await;
    assert!(
        status["targets"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("circuit open"),
        "{status}"
    );
    let rejected = rig
        .apns
        .rejections()
        .get("InvalidProviderToken")
        .copied()
        .unwrap_or(0);
    assert!(
        rejected <= 4,
        "the open circuit stops attempts: {rejected} rejections for 20 deliveries"
    );
    let (_, credential) = rig
        .app
        .admin(
            Method::GET,
            &format!("/v1/apps/{broken_app}/credentials/apns"),
            None,
        )
        .await;
    assert_eq!(credential["status"]["status"], "failing", "{credential}");
    assert!(credential["status"]["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("InvalidProviderToken"));
    let (_, credential) = rig
        .app
        .admin(
            Method::GET,
            &format!("/v1/apps/{healthy_app}/credentials/apns"),
            None,
        )
        .await;
    assert_eq!(credential["status"]["status"], "ok");

    // The operator fixes the credential: the waiting deliveries go out, nothing lost.
    let (status, _) = rig
        .app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{broken_app}/credentials/apns"),
            Some(
                json!({"auth": "token", "team_id": TEAM, "key_id": KEY_ID, "private_key": rig.p8,
                "topic": BUNDLE, "environment": "production"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_status(&rig.app, &broken, b["id"].as_str().expect("id"), |s| {
        s["counts"]["sent"] == 20
    })
    .await;
}

both_backends!(
    a_broken_credential_opens_only_its_app_circuit,
    super::broken_credential
);

async fn invalidation_guard(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let mut regs = Vec::new();
    for _ in 0..10 {
        regs.push(
            register(
                &rig,
                &app_id,
                NewRegistration::apns(&apns_token("4100"), "ios"),
            )
            .await,
        );
    }
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": regs}, "notification": {"title": "x"}}),
    )
    .await;
    let status = wait_status(
        &rig.app,
        &notifier,
        answer["id"].as_str().expect("id"),
        |s| {
            s["targets"].as_array().is_some_and(|targets| {
                targets.iter().all(|t| {
                    t["state"] == "invalid"
                        || t["reason"]
                            .as_str()
                            .unwrap_or("")
                            .contains("invalidation guard")
                })
            })
        },
    )
    .await;
    assert_eq!(
        status["counts"]["invalid"], 4,
        "the guard trips at the 5th rejection: {status}"
    );
    let (_, credential) = rig
        .app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/credentials/apns"),
            None,
        )
        .await;
    assert!(
        credential["status"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("invalidation guard"),
        "{credential}"
    );
}

both_backends!(
    most_tokens_failing_at_once_trip_the_guard,
    super::invalidation_guard
);

async fn token_reuse(app: TestApp) {
    let backend = app.backend;
    drop(app);
    // FCM access tokens that live 302 s: refreshed once fewer than 300 s remain.
    let rig = rig(backend, 302, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let apns_reg = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let fcm_reg = register(
        &rig,
        &app_id,
        NewRegistration::fcm(&fcm_token("android"), "android"),
    )
    .await;
    for i in 0..10 {
        let answer = send(
            &rig.app,
            &notifier,
            json!({"targets": {"registrations": [apns_reg, fcm_reg]},
            "notification": {"title": format!("n{i}")}}),
        )
        .await;
        wait_status(
            &rig.app,
            &notifier,
            answer["id"].as_str().expect("id"),
            |s| s["counts"]["sent"] == 2,
        )
        .await;
    }
    let (connections, token_updates) = rig.apns.connection_stats();
    assert!(
        token_updates <= connections && connections <= 2,
        "one provider token per connection: {connections} connections, {token_updates} tokens"
    );
    let rejections = rig.apns.rejections();
    assert!(
        !rejections.contains_key("TooManyProviderTokenUpdates")
            && !rejections.contains_key("ExpiredProviderToken"),
        "{rejections:?}"
    );
    assert_eq!(rig.fcm.tokens_issued(), 1, "ten sends, one OAuth token");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [fcm_reg]}, "notification": {"title": "later"}}),
    )
    .await;
    wait_status(
        &rig.app,
        &notifier,
        answer["id"].as_str().expect("id"),
        |s| s["counts"]["sent"] == 1,
    )
    .await;
    assert_eq!(rig.fcm.tokens_issued(), 2, "refreshed before expiry");
    assert!(
        !rig.fcm.rejections().contains_key("UNAUTHENTICATED"),
        "no expired token was used"
    );
}
both_backends!(
    provider_tokens_are_reused_and_refreshed_by_the_rules,
    super::token_reuse
);
