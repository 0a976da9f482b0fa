use reqwest::StatusCode;
use sdk_client::{DeviceKey, NewRegistration};
use serde_json::json;

use crate::actors::{apns_token, device, fcm_token};
use crate::both_backends;
use crate::helpers::{assert_problem, read, TestApp};

async fn register_status_rotate_delete(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let key = DeviceKey::generate_rsa(2048).expect("rsa");
    let client = device(&app, key.clone());
    let token = apns_token();
    let registration = client
        .register(
            &app_id,
            &NewRegistration::apns(&token, "ios").environment("sandbox"),
        )
        .await
        .expect("register");
    assert!(registration.id.starts_with("reg_") && registration.id.len() > 20);
    assert_eq!(registration.status, "active");
    assert_eq!(registration.environment.as_deref(), Some("sandbox"));

    // Several identities on one device: the same key holds a second registration.
    let second = client
        .register(&app_id, &NewRegistration::fcm(&fcm_token(), "ios"))
        .await
        .expect("second registration");
    assert_ne!(second.id, registration.id);

    let status = client.status(&registration.id).await.expect("status");
    assert_eq!(status, registration);

    let rotated = client
        .rotate(&registration.id, &apns_token())
        .await
        .expect("rotate");
    assert_eq!(rotated.status, "active");
    assert!(rotated.updated_at >= registration.updated_at);

    client.delete(&registration.id).await.expect("delete");
    let gone = client.status(&registration.id).await.expect_err("deleted");
    assert_eq!(gone.problem_kind(), Some("not-found"));
    assert!(
        client.status(&second.id).await.is_ok(),
        "the other registration stays"
    );

    // RS512 and ES256 keys work too, and desktops register the direct channel.
    let rs512 = device(
        &app,
        DeviceKey::generate_rsa(2048).expect("rsa").with_rs512(),
    );
    rs512
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("RS512 register");
    let es256 = device(&app, DeviceKey::generate_p256());
    es256
        .register(&app_id, &NewRegistration::direct("windows"))
        .await
        .expect("ES256 register");
}
both_backends!(
    register_status_rotate_delete,
    super::register_status_rotate_delete
);

/// Sends a registration with a hand-made DPoP proof; returns status and body.
async fn register_with_proof(
    app: &TestApp,
    app_id: &str,
    proof: &str,
) -> (StatusCode, serde_json::Value) {
    read(
        app.client
            .post(app.url(&format!("/v1/apps/{app_id}/registrations")))
            .header("dpop", proof)
            .json(&json!({"provider": "direct", "platform": "linux"}))
            .send()
            .await
            .expect("sent"),
    )
    .await
}

async fn dpop_refusals(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let url = app.url(&format!("/v1/apps/{app_id}/registrations"));
    let key = DeviceKey::generate_p256();
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()});
    let claims = |htm: &str, htu: &str, iat: i64| json!({"htm": htm, "htu": htu, "iat": iat, "jti": sdk_client::random_id()});
    let now = sdk_client::unix_now();
    let good = || key.sign_jws(&header, &claims("POST", &url, now));

    let weak = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).expect("rsa 1024");
    let weak = DeviceKey::from_rsa(weak, sdk_client::RsaAlg::Rs256);
    let weak_proof = weak.sign_jws(
        &json!({"typ": "dpop+jwt", "alg": "RS256", "jwk": weak.public_jwk()}),
        &claims("POST", &url, now),
    );
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none_proof = format!(
        "{}.{}.",
        b64(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()})),
        b64(&claims("POST", &url, now))
    );
    // HS256 "signed" with the public key as the secret: the classic confusion attack.
    let hs_input = format!(
        "{}.{}",
        b64(&json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk()})),
        b64(&claims("POST", &url, now))
    );
    let hs_proof = {
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key.public_jwk().to_string().as_bytes())
                .expect("hmac key");
        mac.update(hs_input.as_bytes());
        use base64::Engine;
        format!(
            "{hs_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let leaking = DeviceKey::generate_p256();
    let mut leaked = leaking.public_jwk();
    leaked["d"] = json!("c2VjcmV0LXNjYWxhcg");
    let leaked_proof = leaking.sign_jws(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": leaked}),
        &claims("POST", &url, now),
    );
    // Flip one character in the middle of the signature (the last one may only carry padding bits).
    let tampered = {
        let proof = good();
        let at = proof.rfind('.').expect("signature") + 10;
        let flipped = if &proof[at..=at] == "A" { "B" } else { "A" };
        format!("{}{flipped}{}", &proof[..at], &proof[at + 1..])
    };
    // Signed by another key than the one in the header.
    let other_key_signature = leaking.sign_jws(&header, &claims("POST", &url, now));

    let cases: Vec<(String, &str)> = vec![
        (tampered, "signature"),
        (other_key_signature, "signature"),
        (weak_proof, "1024 bits"),
        (none_proof, "`none`"),
        (hs_proof, "HS256"),
        (leaked_proof, "private"),
        (
            key.sign_jws(&header, &claims("POST", &url, now - 600)),
            "iat",
        ),
        (
            key.sign_jws(&header, &claims("POST", &url, now + 600)),
            "iat",
        ),
        (key.sign_jws(&header, &claims("PUT", &url, now)), "htm"),
        (
            key.sign_jws(
                &header,
                &claims("POST", &app.url("/v1/apps/other/registrations"), now),
            ),
            "htu",
        ),
        (
            key.sign_jws(&header, &claims("POST", "https://evil.example/v1", now)),
            "htu",
        ),
        (
            key.sign_jws(
                &json!({"typ": "JWT", "alg": "ES256", "jwk": key.public_jwk()}),
                &claims("POST", &url, now),
            ),
            "typ",
        ),
        (
            key.sign_jws(
                &json!({"typ": "dpop+jwt", "alg": "ES256"}),
                &claims("POST", &url, now),
            ),
            "jwk",
        ),
        ("not.a-jwt".into(), "JWS"),
    ];
    for (proof, needle) in cases {
        let (status, body) = register_with_proof(&app, &app_id, &proof).await;
        assert_problem(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid-dpop-proof",
            needle,
        );
    }

    let (status, body) = read(
        app.client
            .post(&url)
            .json(&json!({"provider": "direct", "platform": "linux"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid-dpop-proof",
        "missing",
    );

    // A proof is good once: the replay is refused.
    let proof = good();
    let (status, body) = register_with_proof(&app, &app_id, &proof).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = register_with_proof(&app, &app_id, &proof).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid-dpop-proof",
        "already used",
    );

    // A query string does not change the htu a proof is bound to.
    let (status, body) = read(
        app.client
            .post(format!("{url}?x=1"))
            .header("dpop", good())
            .json(&json!({"provider": "direct", "platform": "linux"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
both_backends!(dpop_refusals, super::dpop_refusals);

async fn only_the_bound_key_may_act(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let owner = device(&app, DeviceKey::generate_p256());
    let intruder = device(&app, DeviceKey::generate_p256());
    let registration = owner
        .register(&app_id, &NewRegistration::apns(&apns_token(), "ios"))
        .await
        .expect("register");
    for result in [
        intruder.status(&registration.id).await.map(|_| ()),
        intruder
            .rotate(&registration.id, &apns_token())
            .await
            .map(|_| ()),
        intruder.delete(&registration.id).await,
    ] {
        let err = result.expect_err("another key is refused");
        assert_eq!(err.problem_kind(), Some("forbidden"), "{err}");
        assert!(err.to_string().contains("another device key"), "{err}");
    }
    assert_eq!(
        owner
            .status(&registration.id)
            .await
            .expect("still there")
            .status,
        "active"
    );

    let missing = owner
        .register("app_does_not_exist", &NewRegistration::direct("linux"))
        .await
        .expect_err("unknown app");
    assert_eq!(missing.problem_kind(), Some("not-found"));
}
both_backends!(
    only_the_bound_key_may_act,
    super::only_the_bound_key_may_act
);

async fn bad_registration_bodies(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let client = device(&app, DeviceKey::generate_p256());
    let cases = [
        (
            NewRegistration::apns("not-hex-at-all-not-hex-at-all-not-hex-at-all-xx", "ios"),
            "APNs",
        ),
        (NewRegistration::apns(&apns_token(), "android"), "platform"),
        (NewRegistration::fcm("short", "android"), "FCM"),
        (
            NewRegistration::fcm(&format!("{} {}", fcm_token(), "x"), "android"),
            "FCM",
        ),
        (
            NewRegistration::apns(&apns_token(), "ios").environment("staging"),
            "environment",
        ),
        (
            NewRegistration::fcm(&fcm_token(), "android").environment("sandbox"),
            "environment",
        ),
        (
            NewRegistration {
                token: Some(apns_token()),
                ..NewRegistration::direct("linux")
            },
            "direct",
        ),
        (
            NewRegistration {
                token: None,
                ..NewRegistration::apns("", "ios")
            },
            "required",
        ),
    ];
    for (registration, needle) in cases {
        let err = client
            .register(&app_id, &registration)
            .await
            .expect_err("refused");
        match &err {
            sdk_client::Error::Problem(p) => {
                assert_eq!(p.status, 422, "{err}");
                assert!(
                    p.detail.as_deref().unwrap_or("").contains(needle),
                    "{err} / {needle}"
                );
            }
            other => panic!("expected a problem, got {other}"),
        }
    }
    let registration = client
        .register(&app_id, &NewRegistration::direct("macos"))
        .await
        .expect("register");
    let err = client
        .rotate(&registration.id, "abcd")
        .await
        .expect_err("direct has no token");
    assert_eq!(err.problem_kind(), Some("invalid-request"));
}
both_backends!(bad_registration_bodies, super::bad_registration_bodies);

async fn a_token_moves_to_its_newest_registration(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let old_device = device(&app, DeviceKey::generate_p256());
    let new_device = device(&app, DeviceKey::generate_p256());
    let token = apns_token();
    let first = old_device
        .register(&app_id, &NewRegistration::apns(&token, "ios"))
        .await
        .expect("first");
    let second = new_device
        .register(
            &app_id,
            &NewRegistration::apns(&token.to_uppercase(), "ios"),
        )
        .await
        .expect("second");
    let first_now = old_device.status(&first.id).await.expect("status");
    assert_eq!(first_now.status, "invalid");
    assert_eq!(first_now.invalid_reason.as_deref(), Some("replaced"));
    assert!(first_now.invalidated_at.is_some());
    assert_eq!(
        new_device.status(&second.id).await.expect("status").status,
        "active"
    );

    // Another app may hold the same token independently.
    let other_app = app.create_app("Other").await;
    let elsewhere = old_device
        .register(&other_app, &NewRegistration::apns(&token, "ios"))
        .await
        .expect("other app");
    assert_eq!(
        new_device.status(&second.id).await.expect("status").status,
        "active"
    );

    // Rotating into a token held by another registration moves it too, and revives the rotated one.
    let revived = old_device.rotate(&first.id, &token).await.expect("rotate");
    assert_eq!(revived.status, "active");
    let taken = new_device.status(&second.id).await.expect("status");
    assert_eq!(taken.invalid_reason.as_deref(), Some("replaced"));
    assert_eq!(
        old_device
            .status(&elsewhere.id)
            .await
            .expect("status")
            .status,
        "active"
    );
}
both_backends!(
    a_token_moves_to_its_newest_registration,
    super::a_token_moves_to_its_newest_registration
);

async fn registrations_per_key(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let mut options = crate::helpers::Options::new(backend);
    options.extra = "max_registrations_per_key = 3\n".into();
    let app = crate::helpers::spawn(options).await;
    let first_app = app.create_app("One").await;
    let second_app = app.create_app("Two").await;
    let phone = device(&app, DeviceKey::generate_p256());
    let mut ids = Vec::new();
    for app_id in [&first_app, &second_app, &first_app] {
        ids.push(
            phone
                .register(app_id, &NewRegistration::apns(&apns_token(), "ios"))
                .await
                .expect("under the cap")
                .id,
        );
    }
    // The fourth, in either app, is refused and says which limit.
    let refused = phone
        .register(&second_app, &NewRegistration::fcm(&fcm_token(), "android"))
        .await
        .expect_err("over the cap");
    let text = refused.to_string();
    assert!(
        text.contains("409") && text.contains("max_registrations_per_key"),
        "{text}"
    );
    // Another key is not affected; deleting one makes room again.
    device(&app, DeviceKey::generate_p256())
        .register(&first_app, &NewRegistration::direct("linux"))
        .await
        .expect("another key");
    phone.delete(&ids[0]).await.expect("delete");
    phone
        .register(&second_app, &NewRegistration::direct("macos"))
        .await
        .expect("room again");
}
both_backends!(
    a_device_key_holds_a_bounded_number_of_registrations,
    super::registrations_per_key
);
