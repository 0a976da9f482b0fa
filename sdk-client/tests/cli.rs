//! `push-client` against a real server, as README's "Registering a device" shows it.

use std::process::Command;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Runs push-client with `args`; returns its JSON output, or panics with its stderr.
async fn push_client(dir: &std::path::Path, args: &[&str]) -> Result<Value, String> {
    let output = tokio::task::spawn_blocking({
        let dir = dir.to_owned();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        move || {
            Command::new(env!("CARGO_BIN_EXE_push-client"))
                .current_dir(dir)
                .args(args)
                .output()
                .expect("push-client runs")
        }
    })
    .await
    .expect("joined");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON output"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Starts the service in-process on the embedded default, on 127.0.0.1:0;
/// returns its base URL and the token that stops it.
async fn start_server(dir: &std::path::Path) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let config = push_service::Config::from_toml(&format!(
        "data_dir = {:?}\nadmin_token = \"{ADMIN}\"\npublic_url = \"{base}\"\nlog_level = \"warn\"\n",
        dir.join("data").display().to_string()
    ))
    .expect("config");
    let state = push_service::api::AppState::new(config)
        .await
        .expect("state");
    let shutdown = CancellationToken::new();
    tokio::spawn(push_service::serve(state, listener, shutdown.clone()));
    (base, shutdown)
}

const ADMIN: &str = "cli-test-admin-token";

/// An operator call (POST with a JSON body); returns the JSON answer.
async fn admin_post(base: &str, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("operator call")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_register_status_rotate_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, shutdown) = start_server(dir.path()).await;
    let app = admin_post(&base, "/v1/apps", serde_json::json!({"name": "CLI"})).await;
    let app_id = app["id"].as_str().expect("id");

    let key = push_client(dir.path(), &["keygen", "--out", "device.pem"])
        .await
        .expect("keygen");
    assert_eq!(key["alg"], "RS256");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("device.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = "a".repeat(64);
    let registered = push_client(
        dir.path(),
        &[
            "register",
            "--server",
            &base,
            "--key",
            "device.pem",
            "--app",
            app_id,
            "--provider",
            "apns",
            "--token",
            &token,
            "--platform",
            "ios",
        ],
    )
    .await
    .expect("register");
    let id = registered["id"].as_str().expect("id").to_owned();
    let status = push_client(
        dir.path(),
        &[
            "status",
            "--server",
            &base,
            "--key",
            "device.pem",
            "--id",
            &id,
        ],
    )
    .await
    .expect("status");
    assert_eq!(status["status"], "active");
    let rotated = push_client(
        dir.path(),
        &[
            "rotate",
            "--server",
            &base,
            "--key",
            "device.pem",
            "--id",
            &id,
            "--token",
            &"b".repeat(64),
        ],
    )
    .await
    .expect("rotate");
    assert_eq!(rotated["status"], "active");

    // Another key cannot touch it; the error names the cause.
    push_client(
        dir.path(),
        &["keygen", "--out", "other.pem", "--kind", "p256"],
    )
    .await
    .expect("keygen");
    let err = push_client(
        dir.path(),
        &[
            "delete",
            "--server",
            &base,
            "--key",
            "other.pem",
            "--id",
            &id,
        ],
    )
    .await
    .expect_err("other key refused");
    assert!(err.contains("another device key"), "{err}");

    push_client(
        dir.path(),
        &[
            "delete",
            "--server",
            &base,
            "--key",
            "device.pem",
            "--id",
            &id,
        ],
    )
    .await
    .expect("delete");
    let err = push_client(
        dir.path(),
        &[
            "status",
            "--server",
            &base,
            "--key",
            "device.pem",
            "--id",
            &id,
        ],
    )
    .await
    .expect_err("gone");
    assert!(err.contains("404"), "{err}");
    shutdown.cancel();
}

/// README's loop on the embedded default: app → notifier → `push-client register` (direct)
/// → notify with a `push-service token` JWT → `push-client listen` prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_loop_register_notify_listen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, shutdown) = start_server(dir.path()).await;
    let http = reqwest::Client::new();
    let app = admin_post(&base, "/v1/apps", serde_json::json!({"name": "Acme"})).await;
    let app_id = app["id"].as_str().expect("id").to_owned();
    let jwks: Value = serde_json::from_str(
        &push_service::tokens::notifier_key(&dir.path().join("notifier.pem"), "k1")
            .expect("notifier key"),
    )
    .expect("jwks");
    let notifier = admin_post(
        &base,
        &format!("/v1/apps/{app_id}/notifiers"),
        serde_json::json!({"name": "auth-1", "jwks": jwks, "scopes": ["notify"]}),
    )
    .await;
    let notifier_id = notifier["id"].as_str().expect("id");

    push_client(
        dir.path(),
        &["keygen", "--out", "desktop.pem", "--kind", "p256"],
    )
    .await
    .expect("keygen");
    let registered = push_client(
        dir.path(),
        &[
            "register",
            "--server",
            &base,
            "--key",
            "desktop.pem",
            "--app",
            &app_id,
            "--provider",
            "direct",
            "--platform",
            "linux",
        ],
    )
    .await
    .expect("register");
    let id = registered["id"].as_str().expect("id").to_owned();
    let listen = tokio::process::Command::new(env!("CARGO_BIN_EXE_push-client"))
        .current_dir(dir.path())
        .args([
            "listen",
            "--server",
            &base,
            "--key",
            "desktop.pem",
            "--id",
            &id,
            "--count",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("listen starts");

    let jwt = push_service::tokens::mint(
        &dir.path().join("notifier.pem"),
        notifier_id,
        "notify",
        &base,
        "k1",
        60,
    )
    .expect("token");
    let sent = http
        .post(format!("{base}/v1/apps/{app_id}/notifications"))
        .bearer_auth(jwt)
        .json(&serde_json::json!({"targets": {"registrations": [id]},
            "notification": {"title": "Sign-in request", "body": "Approve the login on your Mac?"}}))
        .send()
        .await
        .expect("notify");
    assert_eq!(sent.status(), 202);
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        listen.wait_with_output(),
    )
    .await
    .expect("listen printed within 30 s")
    .expect("listen output");
    assert!(output.status.success());
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(line["notification"]["title"], "Sign-in request");
    shutdown.cancel();
}

/// README's commands run twice in the same folder: the second keeps the first's
/// keys (never "file exists", never an overwritten key).
#[tokio::test]
async fn key_commands_are_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = push_client(
        dir.path(),
        &["keygen", "--out", "desktop.pem", "--kind", "p256"],
    )
    .await
    .expect("keygen");
    let second = push_client(
        dir.path(),
        &["keygen", "--out", "desktop.pem", "--kind", "p256"],
    )
    .await
    .expect("keygen again");
    assert_eq!(first["thumbprint"], second["thumbprint"]);
    assert_eq!(second["existing"], true);
    let out = dir.path().join("notifier.pem");
    let jwks = push_service::tokens::notifier_key(&out, "k1").expect("notifier key");
    let again = push_service::tokens::notifier_key(&out, "k1").expect("notifier key again");
    assert_eq!(jwks, again);
}
