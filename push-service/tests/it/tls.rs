//! The service's own TLS: HTTP/2 by ALPN, certificate rotation on disk, the
//! sdk-client's refusals and pins, and notifiers bound to client certificates.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use reqwest::{Method, StatusCode};
use sdk_client::{Client, DeviceKey, NewRegistration, Pin};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::actors::TestNotifier;
use crate::helpers::{read, spawn, Backend, Options, TestApp, TestTls};

/// A certificate and its key.
struct CertifiedKey<K> {
    cert: rcgen::Certificate,
    signing_key: K,
}

/// A CA that issues leaf certificates.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca");
        TestCa { cert, key }
    }

    /// A leaf for `hosts`, valid from `from_days` to `until_days` relative to now.
    fn leaf(&self, hosts: &[&str], from_days: i64, until_days: i64) -> CertifiedKey<KeyPair> {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(until_days);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        CertifiedKey {
            cert,
            signing_key: key,
        }
    }
}

/// Writes a leaf (with its CA after it) and its key where the server reads them.
fn install(dir: &Path, leaf: &CertifiedKey<KeyPair>, ca: &TestCa) {
    // Key first, then the chain: the reloader tolerates either order.
    std::fs::write(dir.join("key.pem"), leaf.signing_key.serialize_pem()).expect("key");
    std::fs::write(
        dir.join("cert.pem"),
        format!("{}{}", leaf.cert.pem(), ca.cert.pem()),
    )
    .expect("cert");
}

async fn tls_app(dir: &Path, ca: &TestCa, backend: Backend) -> TestApp {
    install(dir, &ca.leaf(&["127.0.0.1"], -1, 30), ca);
    let mut options = Options::new(backend);
    options.tls = Some(TestTls {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca_der: ca.cert.der().to_vec(),
    });
    spawn(options).await
}

/// A device client trusting `ca`, pinned to `pins` (none: no pinning).
fn device(app: &TestApp, ca: &TestCa, pins: &[Pin]) -> Client {
    let mut builder = Client::builder(&app.base, DeviceKey::generate_p256())
        .add_root_certificate(ca.cert.der().clone())
        .retry(sdk_client::RetryPolicy {
            attempts: 1,
            ..sdk_client::RetryPolicy::default()
        });
    for pin in pins {
        builder = builder.pin(*pin);
    }
    builder.build().expect("client")
}

/// Registers through a fresh device (fresh key: the per-device limit stays out of the way).
async fn try_register(
    app: &TestApp,
    ca: &TestCa,
    pins: &[Pin],
    app_id: &str,
) -> Result<(), sdk_client::Error> {
    device(app, ca, pins)
        .register(app_id, &NewRegistration::direct("linux"))
        .await
        .map(|_| ())
}

/// Polls until `ok` holds for a registration attempt (the reloader runs every second).
async fn until_register(
    app: &TestApp,
    ca: &TestCa,
    pins: &[Pin],
    app_id: &str,
    ok: impl Fn(&Result<(), sdk_client::Error>) -> bool,
) -> Result<(), sdk_client::Error> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = try_register(app, ca, pins, app_id).await;
        if ok(&result) || Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn https_h2_rotation_pins_and_refused_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("push-service test CA");
    let app = tls_app(dir.path(), &ca, Backend::Sqlite).await;
    let app_id = app.create_app("Acme").await;

    // HTTP/2 by ALPN, and HTTP/1.1 for a client that only speaks that.
    let h2 = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(ca.cert.der()).expect("ca"))
        .http1_only()
        .build()
        .expect("client")
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("https/1.1");
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    // Plain HTTP on the TLS port is not served.
    let plain = app.base.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());

    // A device pinned to the current key and to the next one (given ahead of time).
    let first_pin = Pin::of_certificate(
        &std::fs::read(dir.path().join("cert.pem"))
            .ok()
            .and_then(|pem| {
                rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .next()
                    .and_then(Result::ok)
                    .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            })
            .expect("served leaf"),
    )
    .expect("pin");
    let next = ca.leaf(&["127.0.0.1"], -1, 30);
    let next_pin = Pin::of_certificate(next.cert.der()).expect("pin");
    let both = [first_pin, next_pin];
    try_register(&app, &ca, &both, &app_id)
        .await
        .expect("pinned to the current and the next key");
    try_register(&app, &ca, std::slice::from_ref(&first_pin), &app_id)
        .await
        .expect("pinned to the current key");
    let err = try_register(&app, &ca, std::slice::from_ref(&next_pin), &app_id)
        .await
        .expect_err("the next key is not served yet");
    assert!(matches!(err, sdk_client::Error::PinMismatch), "{err:?}");

    // Rotation on disk: new connections see the new certificate, no restart.
    install(dir.path(), &next, &ca);
    until_register(
        &app,
        &ca,
        std::slice::from_ref(&next_pin),
        &app_id,
        Result::is_ok,
    )
    .await
    .expect("the rotated certificate is served");
    try_register(&app, &ca, &both, &app_id)
        .await
        .expect("a client pinned to both keys never noticed");
    let err = try_register(&app, &ca, std::slice::from_ref(&first_pin), &app_id)
        .await
        .expect_err("the old key is gone");
    assert!(matches!(err, sdk_client::Error::PinMismatch), "{err:?}");

    // An expired certificate, then one for another host: the sdk-client refuses both.
    for (what, leaf) in [
        ("expired", ca.leaf(&["127.0.0.1"], -30, -1)),
        ("wrong host", ca.leaf(&["push.example.com"], -1, 30)),
    ] {
        install(dir.path(), &leaf, &ca);
        let result = until_register(&app, &ca, &[], &app_id, Result::is_err).await;
        let err = result.expect_err(what);
        assert!(
            matches!(err, sdk_client::Error::Transport(_)),
            "{what}: {err:?}"
        );
        // The server is up and serving that certificate: a client that skips
        // verification gets through, so the refusal is the certificate's.
        let lax = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let response = lax.get(app.url("/healthz")).send().await.expect(what);
        assert_eq!(response.status(), StatusCode::OK, "{what}");
    }

    // A pair that does not load (key of another certificate) keeps the current one.
    let good = ca.leaf(&["127.0.0.1"], -1, 30);
    install(dir.path(), &good, &ca);
    until_register(&app, &ca, &[], &app_id, Result::is_ok)
        .await
        .expect("valid again");
    let stray = KeyPair::generate().expect("key");
    std::fs::write(dir.path().join("key.pem"), stray.serialize_pem()).expect("key");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    try_register(&app, &ca, &[], &app_id)
        .await
        .expect("a broken pair on disk does not take the service down");
}

/// Client identity (certificate and key, PEM) for reqwest.
fn identity(leaf: &CertifiedKey<KeyPair>) -> reqwest::Identity {
    let pem = format!("{}{}", leaf.cert.pem(), leaf.signing_key.serialize_pem());
    reqwest::Identity::from_pem(pem.as_bytes()).expect("identity")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn spki_pin(der: &[u8]) -> String {
    b64(&push_service::tls::spki_sha256(der).expect("certificate parses"))
}

#[tokio::test]
async fn notifier_bound_to_a_client_certificate_needs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = TestCa::new("server CA");
    let app = tls_app(dir.path(), &server_ca, Backend::Sqlite).await;
    let app_id = app.create_app("Acme").await;

    let client_ca = TestCa::new("auth servers CA");
    let good = client_ca.leaf(&["auth.example.com"], -1, 30);
    let other = client_ca.leaf(&["auth.example.com"], -1, 30);
    let stranger = TestCa::new("someone else").leaf(&["auth.example.com"], -1, 30);

    // One notifier pinned to `good`'s key, one bound to the client CA, one free.
    let free = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let pinned = bound_notifier(
        &app,
        &app_id,
        TestNotifier::create(&app, &app_id, &["notify"]).await,
        json!({"spki_sha256": spki_pin(good.cert.der())}),
    )
    .await;
    let by_ca = bound_notifier(
        &app,
        &app_id,
        TestNotifier::create(&app, &app_id, &["notify"]).await,
        json!({"ca": client_ca.cert.pem()}),
    )
    .await;

    // A bad binding is a clear 422.
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/v1/apps/{app_id}/notifiers"),
            Some(
                json!({"name": "x", "jwks": {"keys": []}, "scopes": ["notify"],
                "client_certificate": {"spki_sha256": "c2hvcnQ="}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let client = |id: Option<&CertifiedKey<KeyPair>>| {
        let mut builder = reqwest::Client::builder().add_root_certificate(
            reqwest::Certificate::from_der(server_ca.cert.der()).expect("ca"),
        );
        if let Some(leaf) = id {
            builder = builder.identity(identity(leaf));
        }
        builder.build().expect("client")
    };
    let notify = |http: reqwest::Client, jwt: String| {
        let url = app.url(&format!("/v1/apps/{app_id}/notifications"));
        async move {
            read(
                http.post(url)
                    .bearer_auth(jwt)
                    .json(&json!({"targets": {"registrations": ["reg_nobody"]},
                        "notification": {"title": "t"}}))
                    .send()
                    .await
                    .expect("sent"),
            )
            .await
        }
    };

    let cases: Vec<(
        &str,
        &TestNotifier,
        Option<&CertifiedKey<KeyPair>>,
        StatusCode,
    )> = vec![
        (
            "pinned, no certificate",
            &pinned,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "pinned, another key of the same CA",
            &pinned,
            Some(&other),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "pinned, a stranger",
            &pinned,
            Some(&stranger),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "pinned, its certificate",
            &pinned,
            Some(&good),
            StatusCode::ACCEPTED,
        ),
        (
            "CA-bound, no certificate",
            &by_ca,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "CA-bound, a stranger",
            &by_ca,
            Some(&stranger),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "CA-bound, issued by the CA",
            &by_ca,
            Some(&other),
            StatusCode::ACCEPTED,
        ),
        ("unbound, no certificate", &free, None, StatusCode::ACCEPTED),
        (
            "unbound, any certificate",
            &free,
            Some(&stranger),
            StatusCode::ACCEPTED,
        ),
    ];
    for (what, notifier, cert, expected) in cases {
        let (status, body) = notify(client(cert), notifier.jwt("notify")).await;
        assert_eq!(status, expected, "{what}: {body}");
        if expected == StatusCode::UNAUTHORIZED {
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("certificate"),
                "{what}: {body}"
            );
        }
    }

    // RFC 8705 style: an unbound notifier's JWT carrying cnf.x5t#S256 binds that token.
    let x5t = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(good.cert.der()))
    };
    let bound_jwt = || {
        let (header, mut claims) = free.parts("notify");
        claims["cnf"] = json!({"x5t#S256": x5t});
        free.key.sign_jws(&header, &claims)
    };
    for (what, cert, expected) in [
        ("x5t, no certificate", None, StatusCode::UNAUTHORIZED),
        (
            "x5t, another certificate",
            Some(&other),
            StatusCode::UNAUTHORIZED,
        ),
        ("x5t, the certificate", Some(&good), StatusCode::ACCEPTED),
    ] {
        let (status, body) = notify(client(cert), bound_jwt()).await;
        assert_eq!(status, expected, "{what}: {body}");
    }

    // The binding is visible to the operator (a pin, not a secret).
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/notifiers/{}", pinned.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["client_certificate"]["spki_sha256"],
        json!(spki_pin(good.cert.der()))
    );
}

/// Registers `notifier`'s key again as a new notifier with a certificate binding.
async fn bound_notifier(
    app: &TestApp,
    app_id: &str,
    mut notifier: TestNotifier,
    binding: serde_json::Value,
) -> TestNotifier {
    let mut jwk = notifier.key.public_jwk();
    jwk["kid"] = json!(notifier.kid);
    jwk["alg"] = json!("ES256");
    let (status, body) = app
        .admin(
            Method::POST,
            &format!("/v1/apps/{app_id}/notifiers"),
            Some(
                json!({"name": "bound", "jwks": {"keys": [jwk]}, "scopes": ["notify"],
                "client_certificate": binding}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    notifier.id = body["id"].as_str().expect("id").to_owned();
    notifier
}

/// A throwaway redis-server listening only with TLS, with a certificate from `ca`.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis(dir: &Path, ca: &TestCa) -> TlsRedis {
    let leaf = ca.leaf(&["127.0.0.1"], -1, 30);
    std::fs::write(dir.join("redis.crt"), leaf.cert.pem()).expect("cert");
    std::fs::write(dir.join("redis.key"), leaf.signing_key.serialize_pem()).expect("key");
    std::fs::write(dir.join("ca.crt"), ca.cert.pem()).expect("ca");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(dir.join("redis.crt"))
        .arg("--tls-key-file")
        .arg(dir.join("redis.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.crt"))
        .args(["--tls-auth-clients", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (as in CI)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsRedis { child, port }
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("redis CA");
    let redis = tls_redis(dir.path(), &ca);
    let mut options = Options::new(Backend::Postgres);
    options.redis_url = Some(format!("rediss://127.0.0.1:{}", redis.port));
    options.extra = format!(
        "redis_ca_file = {:?}\n",
        dir.path().join("ca.crt").display().to_string()
    );
    let app = spawn(options).await;
    let (status, body) = app.admin(Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "Redis over TLS is ready: {body}");
    // A notification goes through the Redis queue (over TLS) to a direct device.
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let desktop = crate::actors::device(&app, DeviceKey::generate_p256());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let mut listener = desktop.listen(&registration.id);
    crate::notify::send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [registration.id]}, "notification": {"title": "tls"}}),
    )
    .await;
    let event = crate::notify::next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("delivered through Redis over TLS");
    assert_eq!(event.notification["title"], "tls");

    // Without the private CA the service does not start against that Redis.
    let config = push_service::Config::from_toml(&format!(
        "data_dir = {:?}\ndatabase_url = {:?}\nredis_url = \"rediss://127.0.0.1:{}\"\n\
         admin_token = \"test-admin-token-0123456789\"\n",
        dir.path().join("other").display().to_string(),
        app.database_url,
        redis.port
    ))
    .expect("config");
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        push_service::api::AppState::new(config),
    )
    .await
    .expect("gives up");
    let err = refused
        .err()
        .expect("an untrusted Redis certificate is refused");
    assert!(err.to_string().contains("redis_url"), "{err}");
}

/// With `admin_tls`, /metrics and /readyz on the admin port are served over TLS with
/// the service's certificate (what a ServiceMonitor with `scheme: https` scrapes),
/// and plain HTTP there gets no answer.
#[tokio::test]
async fn admin_listen_speaks_tls_when_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new("admin-ca");
    install(dir.path(), &ca.leaf(&["127.0.0.1"], -1, 30), &ca);
    let port = crate::process::free_port();
    let mut options = Options::new(Backend::Sqlite);
    options.tls = Some(TestTls {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        ca_der: ca.cert.der().to_vec(),
    });
    options.extra = format!("admin_listen = \"127.0.0.1:{port}\"\nadmin_tls = true\n");
    let _app = spawn(options).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_der(ca.cert.der()).expect("ca certificate"),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for path in ["/metrics", "/readyz"] {
        let response = client
            .get(format!("https://127.0.0.1:{port}{path}"))
            .send()
            .await
            .expect("https on the admin port");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true),
        "plain HTTP must not be served on a TLS admin port"
    );
}
