//! `spawn_app()`: a real server on 127.0.0.1:0 with a fresh database per test.

use std::time::Duration;

use push_service::api::AppState;
use push_service::Config;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Where PostgreSQL tests create their databases; CI and the default machine have it.
pub fn postgres_admin_url() -> String {
    std::env::var("PUSH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Redis used by the PostgreSQL column of the suite.
pub fn redis_url() -> String {
    std::env::var("PUSH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The two backend columns every store test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: SQLite, in-process queue.
    Sqlite,
    /// Scale-out: PostgreSQL and Redis.
    Postgres,
}

/// Runs an async test body once per backend, each in its own test.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                $body($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await;
            }
            #[tokio::test]
            async fn postgres() {
                $body($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await;
            }
        }
    };
}

/// What a test needs to call a node's API.
pub struct Api {
    pub base: String,
    pub admin_token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, admin_token: &str) -> Self {
        Api {
            base: base.to_owned(),
            admin_token: admin_token.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }
}

pub struct TestApp {
    pub api: Api,
    pub backend: Backend,
    /// Connection string of this test's own database.
    pub database_url: String,
    /// For SQLite: the database file.
    pub sqlite_path: Option<std::path::PathBuf>,
    /// Redis key prefix of this node's deployment.
    pub prefix: String,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Creates a fresh PostgreSQL database named after the time and a random suffix,
/// dropping leftovers of earlier runs older than two hours.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin_url = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin_url}: {e}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let stale: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'pushtest\\_%'")
            .fetch_all(&mut conn)
            .await
            .expect("list databases");
    for (name,) in stale {
        let created: u64 = name
            .split('_')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 7200 {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let name = format!("pushtest_{now}_{}", rand::random::<u32>());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin_url).expect("valid PostgreSQL URL");
    url.set_path(&name);
    url.to_string()
}

/// Starts the service on 127.0.0.1:0 with its own database and data directory.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn(Options::new(backend)).await
}

/// Like [`spawn_app`], with the public URL clients use (e.g. a TLS front) given.
pub async fn spawn_app_with(backend: Backend, public_url: Option<&str>) -> TestApp {
    let mut options = Options::new(backend);
    options.public_url = public_url.map(str::to_owned);
    spawn(options).await
}

/// How a test node is started.
pub struct Options {
    pub backend: Backend,
    pub public_url: Option<String>,
    pub workers: usize,
    /// Join another node's database and Redis prefix instead of fresh ones.
    pub join: Option<(String, String)>,
    /// Extra configuration lines (e.g. provider endpoints).
    pub extra: String,
    /// Serve HTTPS with this certificate chain and key (PEM files), trusting `ca_der`.
    pub tls: Option<TestTls>,
    /// Redis URL instead of the test Redis (PostgreSQL backend).
    pub redis_url: Option<String>,
}

/// The service's own TLS in a test: files it serves, and the root clients trust.
#[derive(Clone)]
pub struct TestTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca_der: Vec<u8>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Options {
            backend,
            public_url: None,
            workers: 4,
            join: None,
            extra: String::new(),
            tls: None,
            redis_url: None,
        }
    }
}

/// Starts a node per `options`.
pub async fn spawn(options: Options) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let (database_url, sqlite_path, redis) = match (options.backend, &options.join) {
        (Backend::Sqlite, None) => {
            let path = dir.path().join("push.db");
            (
                format!("sqlite://{}", path.display()),
                Some(path),
                String::new(),
            )
        }
        (Backend::Sqlite, Some((url, _))) => (url.clone(), None, String::new()),
        (Backend::Postgres, None) => (
            fresh_postgres_database().await,
            None,
            options.redis_url.clone().unwrap_or_else(redis_url),
        ),
        (Backend::Postgres, Some((url, _))) => (url.clone(), None, redis_url()),
    };
    let admin_token = "test-admin-token-0123456789".to_owned();
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let public_url = options
        .public_url
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let tls_lines = match &options.tls {
        Some(tls) => format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_reload_seconds = 1\n",
            tls.cert.display().to_string(),
            tls.key.display().to_string()
        ),
        None => String::new(),
    };
    let prefix = match &options.join {
        Some((_, prefix)) => prefix.clone(),
        None => format!("pushtest:{}:", rand::random::<u64>()),
    };
    let toml = format!(
        "data_dir = {dir:?}\ndatabase_url = {database_url:?}\nredis_url = {redis:?}\n\
         admin_token = {admin_token:?}\npublic_url = {public_url:?}\nlisten = \"{addr}\"\n\
         redis_key_prefix = {prefix:?}\nnotifier_audience = \"push-test\"\n\
         dispatch_workers = {workers}\nsweep_interval_seconds = 1\nqueue_visibility_seconds = 2\n\
         redrive_after_seconds = 3\nretry_base_ms = 100\nretry_max_ms = 1000\n\
         provider_timeout_seconds = 1\ndatabase_max_connections = 4\nlog_level = \"warn\"\n{tls_lines}{extra}\n",
        dir = dir.path().display().to_string(),
        workers = options.workers,
        extra = options.extra,
    );
    // A key set again later (by `extra`) replaces the default line: the last one stands.
    let key = |line: &str| line.split_once('=').map(|(k, _)| k.trim().to_owned());
    let lines: Vec<&str> = toml.lines().collect();
    let toml: String = lines
        .iter()
        .enumerate()
        .filter(|(i, line)| {
            key(line).is_none_or(|k| !lines[i + 1..].iter().any(|l| key(l).as_ref() == Some(&k)))
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let config = Config::from_toml(&toml).expect("test configuration is valid");
    let state = AppState::new(config).await.expect("state builds");
    let shutdown = CancellationToken::new();
    tokio::spawn(push_service::serve(
        state.clone(),
        listener,
        shutdown.clone(),
    ));
    let mut api = Api::new(&format!("{scheme}://{addr}"), &admin_token);
    if let Some(tls) = &options.tls {
        api.client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(reqwest::Certificate::from_der(&tls.ca_der).expect("test CA"))
            .build()
            .expect("client");
    }
    // The public listener answers once `serve` has loaded TLS and bound admin_listen.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp {
        api,
        backend: options.backend,
        database_url,
        sqlite_path,
        prefix,
        shutdown,
        _dir: dir,
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends an admin request with a JSON body (or none) and returns status and JSON.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// Creates an app and returns its id.
    pub async fn create_app(&self, name: &str) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/v1/apps",
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }
}

/// Runs `command` to its end off this test's runtime thread: a test's nodes
/// run on that thread, and one of them may hold a lock the command waits for
/// (a `pg_dump` behind a node making partitions) until it can go on.
pub async fn output_of(
    mut command: std::process::Command,
) -> std::io::Result<std::process::Output> {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command's thread")
}

impl TestApp {
    /// Full text dump of the database, made by the backend's own tool.
    pub async fn dump_database(&self) -> String {
        let mut command = match &self.sqlite_path {
            Some(path) => {
                let mut c = std::process::Command::new("sqlite3");
                c.arg(path).arg(".dump");
                c
            }
            None => {
                let mut c = std::process::Command::new("pg_dump");
                c.arg("--data-only").arg(&self.database_url);
                c
            }
        };
        command.stdin(std::process::Stdio::null());
        let output = output_of(command)
            .await
            .expect("the database dump tool (sqlite3 / pg_dump) is installed");
        assert!(
            output.status.success(),
            "dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Status and JSON body of a response (Null when the body is empty).
pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// Asserts a problem+json answer with the given status and stable kind, whose
/// detail mentions `needle`.
pub fn assert_problem(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    kind: &str,
    needle: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert_eq!(
        body["type"],
        format!("urn:push-service:problem:{kind}"),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(needle),
        "detail {detail:?} should mention {needle:?}"
    );
}
