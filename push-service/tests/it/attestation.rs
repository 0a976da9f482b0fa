use reqwest::{Method, StatusCode};
use sdk_client::{unix_now, DeviceKey, NewRegistration};
use serde_json::json;

use crate::actors::device;
use crate::both_backends;
use crate::helpers::TestApp;

/// An attestation JWT by `signer` (kid) binding `device_key`, expiring at `exp`.
fn attestation(signer: &DeviceKey, kid: &str, device_key: &DeviceKey, exp: i64) -> String {
    signer.sign_jws(
        &json!({"alg": signer.alg(), "typ": "JWT", "kid": kid}),
        &json!({"iss": "acme-build", "sub": "com.acme.auth", "iat": unix_now(), "exp": exp,
            "cnf": {"jwk": device_key.public_jwk()}}),
    )
}

async fn attestation_is_enforced(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let implementer = DeviceKey::generate_p256();
    let mut jwk = implementer.public_jwk();
    jwk["kid"] = json!("build-2026");
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/attestation"),
            Some(json!({"jwks": {"keys": [jwk]}, "required": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let device_key = DeviceKey::generate_p256();
    let client = device(&app, device_key.clone());
    let later = unix_now() + 300;
    let stranger = DeviceKey::generate_p256();
    let other_device = DeviceKey::generate_p256();
    let cases = [
        (None, "requires"),
        (
            Some(attestation(&stranger, "build-2026", &device_key, later)),
            "signature",
        ),
        (
            Some(attestation(&stranger, "unknown-kid", &device_key, later)),
            "does not know",
        ),
        (
            Some(attestation(
                &implementer,
                "build-2026",
                &other_device,
                later,
            )),
            "another key",
        ),
        (
            Some(attestation(
                &implementer,
                "build-2026",
                &device_key,
                unix_now() - 600,
            )),
            "expired",
        ),
    ];
    for (attestation, needle) in cases {
        let mut registration = NewRegistration::direct("macos");
        registration.attestation = attestation;
        let err = client
            .register(&app_id, &registration)
            .await
            .expect_err("refused");
        assert_eq!(err.problem_kind(), Some("invalid-attestation"), "{err}");
        assert!(err.to_string().contains(needle), "{err} / {needle}");
    }
    let ok = client
        .register(
            &app_id,
            &NewRegistration::direct("macos").attestation(&attestation(
                &implementer,
                "build-2026",
                &device_key,
                later,
            )),
        )
        .await
        .expect("attested registration");
    assert_eq!(ok.status, "active");

    // Not required: registration without attestation passes, a bad one is still refused.
    app.admin(
        Method::PUT,
        &format!("/v1/apps/{app_id}/attestation"),
        Some(
            json!({"jwks": {"keys": [implementer.public_jwk().as_object().map(|o| {
            let mut o = o.clone();
            o.insert("kid".into(), json!("build-2026"));
            o
        })]}, "required": false}),
        ),
    )
    .await;
    client
        .register(&app_id, &NewRegistration::direct("macos"))
        .await
        .expect("optional attestation");
    let err = client
        .register(
            &app_id,
            &NewRegistration::direct("macos").attestation(&attestation(
                &stranger,
                "x",
                &device_key,
                later,
            )),
        )
        .await
        .expect_err("a bad attestation is refused even when optional");
    assert_eq!(err.problem_kind(), Some("invalid-attestation"));
}
both_backends!(attestation_is_enforced, super::attestation_is_enforced);

async fn unattested_cap(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let mut options = crate::helpers::Options::new(backend);
    options.extra = "max_unattested_registrations_per_app = 2\n".into();
    let app = crate::helpers::spawn(options).await;
    let app_id = app.create_app("Open").await;
    let other_app = app.create_app("Other").await;
    // Attestation offered but not required: devices may come with or without.
    let implementer = DeviceKey::generate_p256();
    let mut jwk = implementer.public_jwk();
    jwk["kid"] = json!("build-2026");
    let (status, body) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/attestation"),
            Some(json!({"jwks": {"keys": [jwk]}, "required": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..2 {
        device(&app, DeviceKey::generate_p256())
            .register(&app_id, &NewRegistration::direct("linux"))
            .await
            .expect("under the cap");
    }
    let refused = device(&app, DeviceKey::generate_p256())
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect_err("over the cap");
    let text = refused.to_string();
    assert!(
        text.contains("409") && text.contains("max_unattested_registrations_per_app"),
        "{text}"
    );
    // With an attestation the device still registers; another app is not affected.
    let key = DeviceKey::generate_p256();
    device(&app, key.clone())
        .register(
            &app_id,
            &NewRegistration::direct("macos").attestation(&attestation(
                &implementer,
                "build-2026",
                &key,
                unix_now() + 300,
            )),
        )
        .await
        .expect("attested");
    device(&app, DeviceKey::generate_p256())
        .register(&other_app, &NewRegistration::direct("linux"))
        .await
        .expect("another app");
}
both_backends!(
    registrations_without_attestation_are_capped_per_app,
    super::unattested_cap
);
