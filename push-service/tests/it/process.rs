//! The binary itself, as README runs it: no configuration, fresh directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{fresh_postgres_database, redis_url};

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `url` until it answers 200 or the deadline passes.
pub async fn wait_ready(url: &str, deadline: Duration) -> Duration {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return start.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} did not become ready within {deadline:?}");
}

pub fn start(dir: &std::path::Path, port: u16, envs: &[(&str, String)]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_push-service"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PUSH_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    Server(command.spawn().expect("binary starts"))
}

#[tokio::test]
async fn binary_starts_with_no_configuration_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = start(dir.path(), port, &[]);
    wait_ready(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(20),
    )
    .await;
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .expect("get");
        assert!(response.status().is_success(), "{path}");
    }
    let data = dir.path().join("data");
    assert!(data.join("push.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["admin.token", "master.key"] {
            let mode = std::fs::metadata(data.join(name))
                .expect("secret file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    // The admin token written to disk works, and never appears in the logs.
    let token = std::fs::read_to_string(data.join("admin.token")).expect("token");
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/apps"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), reqwest::StatusCode::OK);

    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let mut logs = String::new();
    use std::io::Read;
    server
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    assert!(
        logs.contains("admin.token"),
        "logs say where the token is: {logs}"
    );
    assert!(!logs.contains(token.trim()), "logs leak the admin token");
    let master = std::fs::read_to_string(data.join("master.key")).expect("key");
    assert!(!logs.contains(master.trim()), "logs leak the master key");
}

#[tokio::test]
async fn binary_runs_on_postgres_and_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let database = fresh_postgres_database().await;
    let _server = start(
        dir.path(),
        port,
        &[
            ("PUSH_DATABASE_URL", database),
            ("PUSH_REDIS_URL", redis_url()),
            ("PUSH_ADMIN_TOKEN", "an-admin-token-for-this-test".into()),
        ],
    );
    wait_ready(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(20),
    )
    .await;
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["redis"], "ok");
    assert!(
        !dir.path().join("data").join("push.db").exists(),
        "no SQLite file on PostgreSQL"
    );
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_push-service"))
        .current_dir(dir.path())
        .env_clear()
        .env("PUSH_DATABASE_URL", "mysql://nope")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`database_url`"), "{stderr}");
}

#[tokio::test]
async fn health_follows_the_configured_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin) = (free_port(), free_port());
    let envs = [("PUSH_ADMIN_LISTEN", format!("0.0.0.0:{admin}"))];
    let _server = start(dir.path(), port, &envs);
    wait_ready(
        &format!("http://127.0.0.1:{admin}/readyz"),
        Duration::from_secs(20),
    )
    .await;
    let health = |envs: &[(&str, String)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_push-service"));
        command.current_dir(dir.path()).env_clear().arg("health");
        for (key, value) in envs {
            command.env(key, value);
        }
        command.status().expect("runs").success()
    };
    // The same environment the service has: admin_listen (a wildcard, asked on loopback).
    let mut same = envs.to_vec();
    same.push(("PUSH_LISTEN", format!("127.0.0.1:{port}")));
    assert!(health(&same), "healthy through admin_listen");
    // Without admin_listen, the listen address.
    assert!(health(&[("PUSH_LISTEN", format!("127.0.0.1:{port}"))]));
    // Nothing there: unhealthy.
    assert!(!health(&[(
        "PUSH_LISTEN",
        format!("127.0.0.1:{}", free_port())
    )]));
}

#[test]
fn a_wildcard_address_without_a_public_url_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_push-service"))
        .current_dir(dir.path())
        .env_clear()
        .env("PUSH_LISTEN", "0.0.0.0:0")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`public_url`") && stderr.contains("PUSH_PUBLIC_URL"),
        "{stderr}"
    );
}
