//! docs/OPERATIONS.md's backup and restore commands, run as written: a node
//! with an app, credentials, a notifier and a device is backed up, its data
//! wiped, restored, and the same device gets a notification through the same
//! credentials.

use std::time::Duration;

use sdk_client::{DeviceKey, NewRegistration};

use crate::actors::device;
use crate::helpers::{fresh_postgres_database, postgres_admin_url, redis_url, Api, Backend};
use crate::key_rotation::delivers;
use crate::process::{free_port, start, wait_ready, Server};
use crate::providers::{apns_token, rig_with};

const ADMIN: &str = "operations-admin-token-0123";

/// The fenced block of docs/OPERATIONS.md marked `sh <name>`.
fn block(name: &str) -> String {
    let doc = include_str!("../../../docs/OPERATIONS.md");
    let start = format!("```sh {name}\n");
    let at = doc
        .find(&start)
        .unwrap_or_else(|| panic!("docs/OPERATIONS.md has no block `{name}`"))
        + start.len();
    let end = doc[at..].find("```").expect("the block ends");
    doc[at..at + end].to_owned()
}

/// Runs a documented block with bash, the binary on PATH, `envs` set.
async fn run_block(name: &str, envs: &[(&str, String)]) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_push-service"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = std::process::Command::new("bash");
    command
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(block(name))
        .env("PATH", path);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = crate::helpers::output_of(command).await.expect("bash runs");
    assert!(
        output.status.success(),
        "block {name} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn backup_and_restore(backend: Backend) {
    let rig = rig_with(backend, 3599, "", true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).expect("backup dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut envs: Vec<(&str, String)> = vec![
        ("PUSH_DATA_DIR", data.display().to_string()),
        ("PUSH_ADMIN_TOKEN", ADMIN.to_owned()),
        ("PUSH_PUBLIC_URL", base.clone()),
        ("PUSH_NOTIFIER_AUDIENCE", "push-test".to_owned()),
        ("PUSH_APNS_PRODUCTION_URL", rig.apns.url.clone()),
        ("PUSH_APNS_SANDBOX_URL", rig.apns.url.clone()),
        ("PUSH_FCM_URL", rig.fcm.url.clone()),
        ("PUSH_PROVIDER_CA_FILE", rig.ca_path()),
        ("PUSH_ALLOW_PRIVATE_FETCH", "true".to_owned()),
        ("PUSH_FCM_TOKEN_URI_ALLOW", "https://127.0.0.1:".to_owned()),
        ("PUSH_LOG_LEVEL", "warn".to_owned()),
    ];
    let database = match backend {
        Backend::Sqlite => format!("sqlite://{}", data.join("push.db").display()),
        Backend::Postgres => {
            let url = fresh_postgres_database().await;
            envs.push(("PUSH_REDIS_URL", redis_url()));
            envs.push((
                "PUSH_REDIS_KEY_PREFIX",
                format!("pushtest:{}:", rand::random::<u64>()),
            ));
            envs.push(("PUSH_MASTER_KEY", {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
            }));
            url
        }
    };
    envs.push(("PUSH_DATABASE_URL", database.clone()));
    let node = |envs: &[(&str, String)]| -> Server { start(dir.path(), port, envs) };

    let server = node(&envs);
    wait_ready(&format!("{base}/readyz"), Duration::from_secs(20)).await;
    let api = Api::new(&base, ADMIN);
    let (app_id, notifier) = rig.tenant_on(&api, &rig.p8).await;
    let registration = device(&api, DeviceKey::generate_p256())
        .register(&app_id, &NewRegistration::apns(&apns_token(""), "ios"))
        .await
        .expect("register")
        .id;
    delivers(&api, &notifier, &registration, "before the backup").await;

    let mut block_envs = envs.clone();
    block_envs.push(("BACKUP_DIR", backups.display().to_string()));
    match backend {
        Backend::Sqlite => run_block("sqlite-backup", &block_envs).await,
        Backend::Postgres => run_block("postgres-backup", &block_envs).await,
    }
    drop(server);

    // Everything gone: the data directory, or the database.
    match backend {
        Backend::Sqlite => std::fs::remove_dir_all(&data).expect("wipe"),
        Backend::Postgres => {
            use sqlx::Connection;
            let name = url::Url::parse(&database).expect("url").path()[1..].to_owned();
            let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("postgres");
            for sql in [
                format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
                format!("CREATE DATABASE \"{name}\""),
            ] {
                sqlx::query(&sql).execute(&mut admin).await.expect("wipe");
            }
        }
    }
    match backend {
        Backend::Sqlite => run_block("sqlite-restore", &block_envs).await,
        Backend::Postgres => run_block("postgres-restore", &block_envs).await,
    }

    let _server = node(&envs);
    wait_ready(&format!("{base}/readyz"), Duration::from_secs(20)).await;
    delivers(&api, &notifier, &registration, "after the restore").await;
    assert_eq!(rig.apns.receipt_count(), 2);
}

#[tokio::test]
async fn backup_and_restore_as_documented_sqlite() {
    backup_and_restore(Backend::Sqlite).await;
}

#[tokio::test]
async fn backup_and_restore_as_documented_postgres() {
    backup_and_restore(Backend::Postgres).await;
}

/// `push-service backup` never overwrites a file, and sends PostgreSQL
/// operators to `pg_dump` instead of half-doing it.
#[test]
fn backup_refuses_what_it_cannot_do_well() {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("taken.db");
    std::fs::write(&existing, b"keep me").expect("file");
    // (database URL, out, what the refusal says)
    let cases = [
        (
            format!("sqlite://{}", dir.path().join("push.db").display()),
            existing.clone(),
            "exists already",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            dir.path().join("new.db"),
            "pg_dump",
        ),
    ];
    for (database, out, says) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_push-service"))
            .env_clear()
            .env("PUSH_DATABASE_URL", &database)
            .env("PUSH_DATA_DIR", dir.path().join("data"))
            .arg("backup")
            .arg("--out")
            .arg(&out)
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{database}: {stderr}");
        assert!(stderr.contains(says), "{database}: {stderr}");
    }
    assert_eq!(std::fs::read(&existing).expect("still there"), b"keep me");
}
