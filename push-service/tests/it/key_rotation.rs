//! Rotating the master key (docs/OPERATIONS.md): credentials sealed under key
//! A are used after the rotation to key B; a node that still has only A keeps
//! sending during the switch; once finished, A alone opens nothing. And the
//! admin token's switch: two tokens valid at once.

use base64::Engine;
use push_service::crypto::Sealer;
use push_service::delivery::ProviderKind;
use reqwest::{Method, StatusCode};
use sdk_client::NewRegistration;
use serde_json::json;

use crate::actors::TestNotifier;
use crate::helpers::{spawn, Api, Backend, Options, TestApp};
use crate::notify::{send, wait_status};
use crate::providers::{apns_token, register, rig_with, Rig};

fn new_key() -> ([u8; 32], String) {
    let key: [u8; 32] = rand::random();
    (key, base64::engine::general_purpose::STANDARD.encode(key))
}

/// Another node on the rig's database, simulators and Redis, with `extra` lines.
async fn node(rig: &Rig, extra: &str) -> TestApp {
    let mut options = Options::new(rig.app.backend);
    options.join = Some((rig.app.database_url.clone(), rig.app.prefix.clone()));
    options.extra = format!("{}{extra}", rig.provider_lines());
    spawn(options).await
}

/// One notification through `api` to `device`, sent by the provider.
pub async fn delivers(api: &Api, notifier: &TestNotifier, device: &str, what: &str) {
    let answer = send(
        api,
        notifier,
        json!({"targets": {"registrations": [device]}, "notification": {"title": what}}),
    )
    .await;
    let id = answer["id"].as_str().expect("id");
    let status = wait_status(api, notifier, id, |s| {
        s["counts"]["sent"] == 1 || s["counts"]["failed"] == 1
    })
    .await;
    assert_eq!(status["counts"]["sent"], 1, "{what}: {status}");
}

/// `push-service rotate-master-key …` on the rig's database with `keys` configured.
async fn rotate(app: &TestApp, keys: &[(&str, &str)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_push-service"));
    command
        .env_clear()
        .env("PUSH_DATABASE_URL", &app.database_url)
        .env("PUSH_DATA_DIR", dir.path().join("data"))
        .env("PUSH_ADMIN_TOKEN", "rotation-admin-token-0123")
        .env("PUSH_LOG_LEVEL", "warn")
        .arg("rotate-master-key")
        .args(args);
    for (key, value) in keys {
        command.env(key, value);
    }
    let output = crate::helpers::output_of(command)
        .await
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "rotate-master-key {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn rotation(backend: Backend) {
    let (key_a, a) = new_key();
    let (key_b, b) = new_key();
    let rig = rig_with(backend, 3599, &format!("master_key = {a:?}\n"), true).await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let device = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    delivers(&rig.app, &notifier, &device, "under A").await;
    // Sealed content in an inbox, sealed at rest under A (an envelope: larger
    // than one copy of a credential holds).
    let encryption = sdk_client::EncryptionKey::generate_p256();
    let desktop = crate::actors::device(&rig.app, sdk_client::DeviceKey::generate_p256());
    let inbox_of = desktop
        .register(
            &app_id,
            &NewRegistration::direct("linux").with_encryption_key(&encryption.public()),
        )
        .await
        .expect("register")
        .id;
    let request = "a request to sign ".repeat(5000);
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [inbox_of]},
            "content": {"media_type": "text/plain", "data": request}}),
    )
    .await;
    let item = answer["id"].as_str().expect("id").to_owned();

    let dir = tempfile::tempdir().expect("tempdir");
    let new_key_file = dir.path().join("new.key");
    std::fs::write(&new_key_file, format!("{b}\n")).expect("key file");
    let said = rotate(
        &rig.app,
        &[("PUSH_MASTER_KEY", &a)],
        &["--new-key-file", new_key_file.to_str().expect("utf-8")],
    )
    .await;
    assert!(
        said.starts_with("2 credential(s) and 1 inbox item(s) now sealed under the new key"),
        "{said}"
    );

    // During the switch: a node not yet given B, started after the rotation
    // (nothing cached), sends; so do a node with B and A, and one with B alone.
    let only_a = node(&rig, &format!("master_key = {a:?}\n")).await;
    delivers(&only_a, &notifier, &device, "A alone, during the switch").await;
    let b_and_a = node(
        &rig,
        &format!(
            "master_key = {b:?}\nmaster_key_previous = {a:?}\n\
             admin_token_previous = \"previous-admin-token-0123\"\n"
        ),
    )
    .await;
    delivers(&b_and_a, &notifier, &device, "B with A").await;
    let only_b = node(&rig, &format!("master_key = {b:?}\n")).await;
    delivers(&only_b, &notifier, &device, "B alone").await;

    // The old node stores a credential meanwhile (sealed under A only), and
    // the node with both keys one (sealed under both): all nodes still open it.
    let (status, body) = only_a
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/credentials/apns"),
            Some(json!({"auth": "token", "team_id": crate::providers::TEAM,
                "key_id": crate::providers::KEY_ID, "private_key": rig.p8,
                "topic": crate::providers::BUNDLE, "environment": "production"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    delivers(&b_and_a, &notifier, &device, "stored by the old node").await;

    // Two admin tokens during a token switch; a third is refused.
    for (token, expected) in [
        ("test-admin-token-0123456789", StatusCode::OK),
        ("previous-admin-token-0123", StatusCode::OK),
        ("some-other-token-0123456789", StatusCode::UNAUTHORIZED),
    ] {
        let status = b_and_a
            .client
            .get(b_and_a.url("/v1/apps"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status, expected, "{token}");
    }

    let said = rotate(
        &rig.app,
        &[("PUSH_MASTER_KEY", &b), ("PUSH_MASTER_KEY_PREVIOUS", &a)],
        &["--finish"],
    )
    .await;
    assert!(
        said.starts_with("2 credential(s) and 1 inbox item(s) re-sealed"),
        "{said}"
    );
    let said = rotate(&rig.app, &[("PUSH_MASTER_KEY", &b)], &["--finish"]).await;
    assert!(
        said.starts_with("0 credential(s) and 0 inbox item(s) re-sealed"),
        "again: {said}"
    );

    // After the switch: A alone opens nothing, B alone opens everything.
    let store = push_service::store::connect(&rig.app.database_url, 2, true, None)
        .await
        .expect("store");
    for provider in [ProviderKind::Apns, ProviderKind::Fcm] {
        let record = store
            .get_credential(&app_id, provider)
            .await
            .expect("read")
            .expect("credential");
        let aad = push_service::credentials::credential_aad(&app_id, provider);
        assert!(
            Sealer::new(&key_a).open(&record.sealed, &aad).is_err(),
            "{provider}"
        );
        assert!(
            Sealer::new(&key_b).open(&record.sealed, &aad).is_ok(),
            "{provider}"
        );
    }
    let sealed = store
        .fetch_inbox_item(&inbox_of, &item, sdk_client::unix_now() * 1000)
        .await
        .expect("read")
        .expect("item")
        .content;
    let aad = push_service::inbox::at_rest_aad(&inbox_of, &item);
    assert!(Sealer::new(&key_a).open(&sealed, &aad).is_err());
    assert!(Sealer::new(&key_b).open(&sealed, &aad).is_ok());
    let after = node(&rig, &format!("master_key = {b:?}\n")).await;
    delivers(&after, &notifier, &device, "B alone, after the switch").await;
    let content = crate::actors::device(&after, desktop.key().clone())
        .fetch(&inbox_of, &item, &encryption)
        .await
        .expect("the item opens on a node with B alone");
    assert_eq!(content.data, Some(json!(request)));
}

#[tokio::test]
async fn rotation_sqlite() {
    rotation(Backend::Sqlite).await;
}

#[tokio::test]
async fn rotation_postgres() {
    rotation(Backend::Postgres).await;
}
