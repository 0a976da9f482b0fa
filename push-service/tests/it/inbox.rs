//! Sealed content and the device inbox: what Apple, Google and the database
//! see (nothing of the content), what the device opens (everything), who may
//! fetch it, acks, TTLs, and several requests for several identities.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use sdk_client::{open_content, push_payload_item, DeviceKey, EncryptionKey, NewRegistration};
use serde_json::json;

use crate::actors::{device, with_jwt, TestNotifier};
use crate::both_backends;
use crate::helpers::{Backend, TestApp};
use crate::notify::{next_within, send, wait_status};
use crate::providers::{apns_token, fcm_token, rig};

/// A PDF-looking file of `size` bytes with `marker` inside.
fn pdf(size: usize, marker: &str) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend_from_slice(marker.as_bytes());
    while bytes.len() < size {
        bytes.push(rand::random::<u8>());
    }
    bytes
}

fn problem_status(err: &sdk_client::Error) -> Option<u16> {
    match err {
        sdk_client::Error::Problem(p) => Some(p.status),
        _ => None,
    }
}

async fn sealed_content_end_to_end(backend: Backend) {
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    // Three devices, three kinds of encryption key.
    let keys = [
        EncryptionKey::generate_p256(),
        EncryptionKey::generate_rsa(2048).expect("rsa"),
        EncryptionKey::generate_x25519(),
    ];
    let clients = [
        device(&rig.app, DeviceKey::generate_p256()),
        device(&rig.app, DeviceKey::generate_rsa(2048).expect("rsa")),
        device(&rig.app, DeviceKey::generate_p256()),
    ];
    let forms = [
        NewRegistration::apns(&apns_token(""), "ios"),
        NewRegistration::fcm(&fcm_token("android"), "android"),
        NewRegistration::direct("linux"),
    ];
    let mut ids = Vec::new();
    for ((client, form), key) in clients.iter().zip(forms).zip(&keys) {
        let info = client
            .register(&app_id, &form.with_encryption_key(&key.public()))
            .await
            .expect("register");
        assert_eq!(
            info.encryption_key_thumbprint.as_deref(),
            Some(key.public().thumbprint().as_str())
        );
        ids.push(info.id);
    }
    let plain = device(&rig.app, DeviceKey::generate_p256())
        .register(&app_id, &NewRegistration::direct("windows"))
        .await
        .expect("register without a key")
        .id;
    let mut listener = clients[2].listen(&ids[2]);
    assert!(next_within(&mut listener, Duration::from_millis(300))
        .await
        .is_none());

    let marker = format!("MARKER-{}", sdk_client::random_id());
    let document = pdf(500 * 1024, &marker);
    let metadata = json!({"request": "sign", "reference": marker, "amount": "12.00 EUR"});
    let mut targets = ids.clone();
    targets.push(plain.clone());
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": targets},
            "notification": {"title": "Signature request"},
            "content": {"media_type": "application/json", "data": metadata,
                "attachments": [{"name": "contract.pdf", "media_type": "application/pdf",
                    "data": STANDARD.encode(&document)}]}}),
    )
    .await;
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(
        answer["rejected"],
        json!([{"registration": plain, "reason": "no_encryption_key"}])
    );
    let item = answer["id"].as_str().expect("id").to_owned();
    wait_status(&rig.app, &notifier, &item, |s| s["counts"]["sent"] == 3).await;

    // The direct channel's event names the item.
    let event = next_within(&mut listener, Duration::from_secs(5))
        .await
        .expect("direct event");
    assert_eq!(event.notification["inbox"]["id"], json!(item));

    // Apple and Google got the item's id, within 4 KiB, and nothing of the content.
    let apns = rig.apns.receipts();
    let fcm = rig.fcm.receipts();
    assert_eq!((apns.len(), fcm.len()), (1, 1));
    let apns_payload = apns[0].payload.to_string();
    let fcm_message = fcm[0].message.to_string();
    for payload in [&apns_payload, &fcm_message] {
        assert!(payload.len() <= 4096, "{} bytes", payload.len());
        assert!(!payload.contains(&marker), "{payload}");
    }
    assert_eq!(apns[0].payload["push-inbox"]["id"], json!(item));
    assert_eq!(apns[0].payload["aps"]["mutable-content"], json!(1));
    assert_eq!(fcm[0].message["data"]["push_inbox_id"], json!(item));

    // Nor does the database hold it, in clear or in base64.
    let dump = rig.app.dump_database().await;
    assert!(!dump.contains(&marker));
    let encoded = STANDARD.encode(&document);
    assert!(!dump.contains(&encoded[1000..1100]));

    // Each device opens its item: the PDF byte for byte.
    for ((client, key), id) in clients.iter().zip(&keys).zip(&ids) {
        let listed = client.inbox(id).await.expect("inbox");
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].id.as_str(), listed[0].state.as_str()),
            (item.as_str(), "pending")
        );
        let content = client.fetch(id, &item, key).await.expect("fetch");
        assert_eq!(content.data, Some(metadata.clone()));
        assert_eq!(content.attachments.len(), 1);
        assert_eq!(content.attachments[0].name, "contract.pdf");
        assert!(content.attachments[0].bytes == document, "the PDF differs");
        // Another device key: as if there were no such registration.
        let stranger = device(&rig.app, DeviceKey::generate_p256());
        let err = stranger.fetch(id, &item, key).await.expect_err("stranger");
        assert_eq!(problem_status(&err), Some(404), "{err}");
        let err = stranger.inbox(id).await.expect_err("stranger");
        assert_eq!(problem_status(&err), Some(404), "{err}");
        // Another encryption key cannot open what was fetched.
        assert!(client
            .fetch(id, &item, &EncryptionKey::generate_p256())
            .await
            .is_err());
    }
    let status = wait_status(&rig.app, &notifier, &item, |s| {
        s["inbox"]
            .as_array()
            .is_some_and(|items| items.len() == 3 && items.iter().all(|i| i["state"] == "fetched"))
    })
    .await;
    for entry in status["inbox"].as_array().expect("inbox") {
        assert!(entry["fetched_at"].is_string(), "{entry}");
        assert_eq!(entry["delivered"], json!(true), "{entry}");
        assert!(entry["acked_at"].is_null());
    }

    // Acknowledged: gone for the device, acked for the notifier.
    for (client, id) in clients.iter().zip(&ids) {
        client.ack(id, &item).await.expect("ack");
        assert!(client.inbox(id).await.expect("inbox").is_empty());
        let err = client.ack(id, &item).await.expect_err("twice");
        assert_eq!(problem_status(&err), Some(404));
    }
    let err = clients[0]
        .fetch(&ids[0], &item, &keys[0])
        .await
        .expect_err("gone");
    assert_eq!(problem_status(&err), Some(404));
    let status = wait_status(&rig.app, &notifier, &item, |_| true).await;
    for entry in status["inbox"].as_array().expect("inbox") {
        assert_eq!(entry["state"], "acked", "{entry}");
        assert!(entry["acked_at"].is_string(), "{entry}");
    }

    // Small content rides in the APNs and FCM payloads, sealed, and opens there.
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": [ids[0], ids[1]]},
            "content": {"media_type": "text/plain", "data": format!("approve login? {marker}")}}),
    )
    .await;
    let small = answer["id"].as_str().expect("id").to_owned();
    wait_status(&rig.app, &notifier, &small, |s| s["counts"]["sent"] == 2).await;
    let apns = rig.apns.receipts();
    let fcm = rig.fcm.receipts();
    let payloads = [(&apns[1].payload, &keys[0]), (&fcm[1].message, &keys[1])];
    for (payload, key) in payloads {
        assert!(payload.to_string().len() <= 4096);
        assert!(!payload.to_string().contains(&marker));
        let (id, jwe) = push_payload_item(payload);
        assert_eq!(id.as_deref(), Some(small.as_str()));
        let opened = open_content(&jwe.expect("inline JWE"), key).expect("open");
        assert_eq!(opened.data, Some(json!(format!("approve login? {marker}"))));
    }
}

async fn sealed_content_end_to_end_on(app: TestApp) {
    let backend = app.backend;
    drop(app);
    sealed_content_end_to_end(backend).await;
}
both_backends!(
    sealed_content_reaches_apns_fcm_and_direct_devices_and_nobody_else,
    super::sealed_content_end_to_end_on
);

/// A notifier's own JWE, sealed to the key it read from the registration:
/// stored and forwarded as it is; one sealed to another key is refused.
async fn end_to_end_jwe(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify", "registrations:read"]).await;
    let key = EncryptionKey::generate_rsa(2048).expect("rsa");
    let client = device(&app, DeviceKey::generate_p256());
    let id = client
        .register(
            &app_id,
            &NewRegistration::direct("macos").with_encryption_key(&key.public()),
        )
        .await
        .expect("register")
        .id;
    let (status, registration) = with_jwt(
        &app,
        Method::GET,
        &format!("/v1/apps/{app_id}/registrations/{id}"),
        &notifier.jwt("registrations:read"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{registration}");
    let public = push_jose::PublicKey::from_jwk(&registration["encryption_key"]).expect("jwk");
    assert_eq!(
        registration["encryption_key_thumbprint"],
        json!(public.thumbprint())
    );
    let secret = br#"{"challenge":"only the device reads this"}"#;
    let jwe = push_jose::seal(&public, secret, Some("application/json")).expect("seal");
    let answer = send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [id]}, "content": {"sealed": {id.clone(): jwe}}}),
    )
    .await;
    let item = answer["id"].as_str().expect("id");
    let content = client.fetch(&id, item, &key).await.expect("fetch");
    assert_eq!(
        (content.media_type.as_str(), content.raw.as_slice()),
        ("application/json", &secret[..])
    );

    let other = EncryptionKey::generate_rsa(2048).expect("rsa");
    let wrong = push_jose::seal(&other.public(), secret, None).expect("seal");
    let path = format!("/v1/apps/{app_id}/notifications");
    for (body, expected) in [
        (
            json!({"targets": {"registrations": [id]}, "content": {"sealed": {id.clone(): wrong}}}),
            "`kid` names another key",
        ),
        (
            json!({"targets": {"registrations": [id]}, "content": {"sealed": {"reg_other": jwe}}}),
            "not among `targets.registrations`",
        ),
        (
            json!({"targets": {"registrations": [id]}, "ttl_seconds": 0,
                "content": {"media_type": "text/plain", "data": "x"}}),
            "`ttl_seconds` 0 leaves no time",
        ),
        (
            json!({"targets": {"all": true}, "content": {"media_type": "text/plain", "data": "x"}}),
            "goes with `targets.registrations`",
        ),
        (
            json!({"targets": {"registrations": [id]}, "content": {"media_type": "text/plain",
            "data": "x".repeat(1_048_577)}}),
            "more than the 1048576 allowed",
        ),
        (
            json!({"targets": {"registrations": (0..20).map(|i| format!("reg_{i}")).collect::<Vec<_>>()},
                "content": {"media_type": "text/plain", "data": "x".repeat(1_000_000)}}),
            "20 targets' sealed copies would take",
        ),
    ] {
        let (status, problem) = with_jwt(
            &app,
            Method::POST,
            &path,
            &notifier.jwt("notify"),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(expected),
            "{problem}"
        );
    }
    // Larger than any content can be: refused before it is read whole.
    let huge = json!({"targets": {"registrations": [id]},
        "content": {"media_type": "text/plain", "data": "x".repeat(2_000_000)}});
    let (status, problem) = with_jwt(
        &app,
        Method::POST,
        &path,
        &notifier.jwt("notify"),
        Some(huge),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
}
both_backends!(
    a_notifiers_own_jwe_is_forwarded_as_it_is,
    super::end_to_end_jwe
);

async fn unacked_items_go_with_their_ttl(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let key = EncryptionKey::generate_p256();
    let client = device(&app, DeviceKey::generate_p256());
    let id = client
        .register(
            &app_id,
            &NewRegistration::direct("linux").with_encryption_key(&key.public()),
        )
        .await
        .expect("register")
        .id;
    let answer = send(
        &app,
        &notifier,
        json!({"targets": {"registrations": [id]}, "ttl_seconds": 2,
            "content": {"media_type": "text/plain", "data": "expires"}}),
    )
    .await;
    let item = answer["id"].as_str().expect("id");
    assert_eq!(client.inbox(&id).await.expect("inbox").len(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(client.inbox(&id).await.expect("inbox").is_empty());
    let err = client.fetch(&id, item, &key).await.expect_err("expired");
    assert_eq!(problem_status(&err), Some(404));
    let err = client.ack(&id, item).await.expect_err("expired");
    assert_eq!(problem_status(&err), Some(404));
    let status = wait_status(&app, &notifier, item, |_| true).await;
    assert_eq!(status["inbox"][0]["state"], "expired", "{status}");
}
both_backends!(
    unacked_items_are_gone_after_their_ttl,
    super::unacked_items_go_with_their_ttl
);

/// One device, two identities (a registration each, one device key): three
/// pending requests listed, fetched and acknowledged independently, at once.
async fn three_requests_two_identities(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let key = EncryptionKey::generate_x25519();
    // The app's own client: it waits out the device rate limit's Retry-After
    // (this test makes more calls in a second than its burst of 10).
    let client = sdk_client::Client::builder(&app.base, DeviceKey::generate_p256())
        .build()
        .expect("client");
    let mut identities = Vec::new();
    for platform in ["linux", "linux"] {
        identities.push(
            client
                .register(
                    &app_id,
                    &NewRegistration::direct(platform).with_encryption_key(&key.public()),
                )
                .await
                .expect("register")
                .id,
        );
    }
    let requests = [
        (0, "alice: log in?"),
        (0, "alice: sign?"),
        (1, "bob: log in?"),
    ];
    let sends = requests.iter().map(|(who, text)| {
        send(
            &app,
            &notifier,
            json!({"targets": {"registrations": [identities[*who]]},
                "content": {"media_type": "text/plain", "data": text}}),
        )
    });
    let items: Vec<String> = futures_util::future::join_all(sends)
        .await
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect();
    let (alice, bob) = tokio::join!(client.inbox(&identities[0]), client.inbox(&identities[1]));
    let (alice, bob) = (alice.expect("alice"), bob.expect("bob"));
    assert_eq!(alice.len(), 2);
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].id, items[2]);
    // Each item is its identity's: not reachable through the other's inbox.
    let err = client
        .fetch(&identities[1], &items[0], &key)
        .await
        .expect_err("other identity");
    assert_eq!(problem_status(&err), Some(404));
    let fetches = requests.iter().zip(&items).map(|((who, _), item)| {
        let client = client.clone();
        let (registration, item, key) = (identities[*who].clone(), item.clone(), key.clone());
        async move {
            let content = client.fetch(&registration, &item, &key).await?;
            client.ack(&registration, &item).await?;
            Ok::<_, sdk_client::Error>(content)
        }
    });
    let opened = futures_util::future::join_all(fetches).await;
    for (content, (_, text)) in opened.into_iter().zip(requests) {
        assert_eq!(content.expect("fetched").data, Some(json!(text)));
    }
    for identity in &identities {
        assert!(client.inbox(identity).await.expect("inbox").is_empty());
    }
}
both_backends!(
    three_requests_for_two_identities_are_handled_independently,
    super::three_requests_two_identities
);

/// The encryption key is rotated like the token: what is sealed after the
/// rotation opens with the new key only; what was sealed before, with the old.
async fn encryption_key_rotation(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    let (old, new) = (
        EncryptionKey::generate_p256(),
        EncryptionKey::generate_rsa(2048).expect("rsa"),
    );
    let client = device(&app, DeviceKey::generate_p256());
    let id = client
        .register(
            &app_id,
            &NewRegistration::direct("linux").with_encryption_key(&old.public()),
        )
        .await
        .expect("register")
        .id;
    let request = |text: &str| json!({"targets": {"registrations": [id]}, "content": {"media_type": "text/plain", "data": text}});
    let before = send(&app, &notifier, request("before")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let info = client
        .rotate_encryption_key(&id, &new.public())
        .await
        .expect("rotate");
    assert_eq!(
        info.encryption_key_thumbprint,
        Some(new.public().thumbprint())
    );
    let after = send(&app, &notifier, request("after")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        client
            .fetch(&id, &before, &old)
            .await
            .expect("old key")
            .data,
        Some(json!("before"))
    );
    assert_eq!(
        client.fetch(&id, &after, &new).await.expect("new key").data,
        Some(json!("after"))
    );
    assert!(client.fetch(&id, &after, &old).await.is_err());
    // A signing key, or one with private members, is not an encryption key.
    let mut signing = NewRegistration::direct("linux");
    signing.encryption_key = Some(json!({"kty": "EC", "crv": "P-256", "use": "sig",
        "x": old.public().to_jwk()["x"], "y": old.public().to_jwk()["y"]}));
    let mut private = NewRegistration::direct("linux");
    private.encryption_key = Some(old.to_jwk());
    for (registration, expected) in [
        (signing, "`use` of an encryption key is `enc`"),
        (private, "holds private key material"),
    ] {
        let err = client
            .register(&app_id, &registration)
            .await
            .expect_err("refused");
        match err {
            sdk_client::Error::Problem(p) => {
                assert_eq!(p.status, 422);
                let detail = p.detail.unwrap_or_default();
                assert!(
                    detail.contains("`encryption_key`") && detail.contains(expected),
                    "{detail}"
                );
            }
            other => panic!("{other}"),
        }
    }
}
both_backends!(
    an_encryption_key_is_rotated_like_a_token,
    super::encryption_key_rotation
);
