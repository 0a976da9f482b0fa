//! What a node holds for a client: slow and idle connections are closed, a full
//! node answers at once, `/readyz` reuses its connection, streams per key are
//! bounded. Every socket here is on 127.0.0.1.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sdk_client::{DeviceKey, NewRegistration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn, Backend, Options, TestApp};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// The fastest of five `/healthz` round trips on fresh connections (a node held
/// up by idle sockets is slow on every one; a busy test machine only on some).
async fn healthz_fastest(app: &TestApp) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let client = reqwest::Client::new();
        let started = Instant::now();
        let response = client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(response.status(), StatusCode::OK);
        times.push(started.elapsed());
    }
    times.sort();
    times[0]
}

/// Waits until the server closes `socket` (a read returns 0 or fails), at most `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            socket.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn slow_and_idle(backend: Backend) {
    let mut options = Options::new(backend);
    options.extra = "header_read_timeout_seconds = 3\n".into();
    let app = spawn(options).await;
    // 2,000 idle sockets, and one client that trickles half a request.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr(&app)).await.expect("connect"));
    }
    let mut slowloris = TcpStream::connect(addr(&app)).await.expect("connect");
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        .await
        .expect("write");
    let fastest = healthz_fastest(&app).await;
    assert!(
        fastest < Duration::from_millis(100),
        "/healthz took {fastest:?} with 2,000 idle sockets open"
    );
    let closed = closed_within(&mut slowloris, Duration::from_secs(6)).await;
    assert!(
        closed.is_some_and(|t| t <= Duration::from_millis(4500)),
        "a slowloris connection is closed within the header timeout: {closed:?}"
    );
    // The idle ones too.
    let closed = closed_within(&mut idle[0], Duration::from_secs(3)).await;
    assert!(closed.is_some(), "idle sockets are closed");
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_sqlite() {
    slow_and_idle(Backend::Sqlite).await;
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_postgres() {
    slow_and_idle(Backend::Postgres).await;
}

#[tokio::test]
async fn a_full_node_answers_new_connections_at_once() {
    let mut options = Options::new(Backend::Sqlite);
    options.extra = "max_connections = 20\n".into();
    let app = spawn(options).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr(&app)).await.expect("connect"));
    }
    // Let the node accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Room again once connections go.
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_reuses_one_redis_connection() {
    let app = spawn(Options::new(Backend::Postgres)).await;
    let client = reqwest::Client::new();
    for _ in 0..3000 {
        let response = client.get(app.url("/readyz")).send().await.expect("readyz");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let metrics = client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let opened: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("push_readiness_redis_connections_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the counter is exported");
    assert!(
        opened <= 1.0,
        "3,000 probes opened {opened} Redis connections"
    );
}

async fn streams_per_key(backend: Backend) {
    let mut options = Options::new(backend);
    options.extra = "max_streams_per_key = 2\n".into();
    let app = spawn(options).await;
    let app_id = app.create_app("Acme").await;
    let key = DeviceKey::generate_p256();
    let desktop = crate::actors::device(&app, key.clone());
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let open = || {
        let url = app.url(&format!("/v1/registrations/{}/events", registration.id));
        let proof = key.dpop_proof("GET", &url);
        app.client.get(url).header("dpop", proof).send()
    };
    let first = open().await.expect("first");
    assert_eq!(first.status(), StatusCode::OK);
    let second = open().await.expect("second");
    assert_eq!(second.status(), StatusCode::OK);
    let third = open().await.expect("third");
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: serde_json::Value = third.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("max_streams_per_key"),
        "{problem}"
    );
    // Closing one frees its slot.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = open().await.expect("again");
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn open_streams_per_device_key_are_bounded_sqlite() {
    streams_per_key(Backend::Sqlite).await;
}

#[tokio::test]
async fn open_streams_per_device_key_are_bounded_postgres() {
    streams_per_key(Backend::Postgres).await;
}

#[tokio::test]
async fn admin_listen_keeps_metrics_and_readiness_off_the_public_listener() {
    let port = crate::process::free_port();
    let mut options = Options::new(Backend::Sqlite);
    options.extra = format!("admin_listen = \"127.0.0.1:{port}\"\n");
    let app = spawn(options).await;
    let client = reqwest::Client::new();
    let get = |url: String| client.get(url).send();
    for path in ["/metrics", "/readyz"] {
        let public = get(app.url(path)).await.expect("public");
        assert_eq!(
            public.status(),
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
        let admin = get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .expect("admin");
        assert_eq!(admin.status(), StatusCode::OK, "{path} on admin_listen");
    }
    // Liveness stays on both; the API is not on the admin listener.
    assert_eq!(
        get(app.url("/healthz")).await.expect("healthz").status(),
        StatusCode::OK
    );
    let api = get(format!("http://127.0.0.1:{port}/v1/apps"))
        .await
        .expect("admin");
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_operator_api_can_live_on_admin_listen_only() {
    let port = crate::process::free_port();
    let mut options = Options::new(Backend::Sqlite);
    options.extra =
        format!("admin_listen = \"127.0.0.1:{port}\"\noperator_api_on_admin_listen = true\n");
    let app = spawn(options).await;
    let (status, body) = app.admin(reqwest::Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let admin = crate::helpers::Api::new(&format!("http://127.0.0.1:{port}"), &app.admin_token);
    let (status, body) = admin
        .admin(
            reqwest::Method::POST,
            "/v1/apps",
            Some(serde_json::json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = admin.admin(reqwest::Method::GET, "/v1/apps", None).await;
    assert_eq!(status, StatusCode::OK);
    // The probes are there too.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .expect("admin");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

/// Writes `request` on a fresh connection and reads until the node closes it.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr(app)).await.expect("connect");
    socket.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("the node answers and closes")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Direct-channel streams are served off hyper on plain connections: the same
/// answers, the same limits (slow heads closed, framed bodies and oversized
/// heads refused with a problem), never a hang.
#[tokio::test]
async fn stream_requests_get_the_answers_and_limits_of_any_request() {
    let mut options = Options::new(Backend::Sqlite);
    options.extra = "header_read_timeout_seconds = 3\n".into();
    let app = spawn(options).await;
    let path = "/v1/registrations/reg_nothere/events";

    let unauthenticated = raw_exchange(
        &app,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        unauthenticated.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{unauthenticated}"
    );
    assert!(unauthenticated.contains("content-type: application/problem+json\r\n"));
    assert!(unauthenticated.contains("connection: close\r\n"));
    let (head, body) = unauthenticated.split_once("\r\n\r\n").expect("a head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a length")
        .parse()
        .expect("a number");
    assert_eq!(length, body.len(), "the body is whole: {body}");
    assert!(
        head.contains("x-request-id: "),
        "the router's layers ran: {head}"
    );

    let framed = raw_exchange(
        &app,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(
        framed.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{framed}"
    );
    assert!(framed.contains("a stream request has no body"), "{framed}");
    assert!(
        framed.contains("urn:push-service:problem:malformed-request"),
        "{framed}"
    );

    let huge = format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let refused = raw_exchange(&app, huge.as_bytes()).await;
    assert!(
        refused.starts_with("HTTP/1.1 431 "),
        "{}",
        &refused[..80.min(refused.len())]
    );

    let mut slow = TcpStream::connect(addr(&app)).await.expect("connect");
    slow.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nx-slow: 1").as_bytes())
        .await
        .expect("write");
    let closed = closed_within(&mut slow, Duration::from_secs(6)).await;
    assert!(
        closed.is_some_and(|t| t <= Duration::from_millis(4500)),
        "a slow stream head is closed within the header timeout: {closed:?}"
    );
}
