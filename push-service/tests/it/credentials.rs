use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::fixtures::{apns_p12, apns_p8, pem_body, service_account};
use crate::helpers::{assert_problem, TestApp};

async fn credentials_round_trip_without_secrets(app: TestApp) {
    let app_id = app.create_app("Acme Auth").await;
    let p8 = apns_p8();
    let (status, token_info) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/credentials/apns"),
            Some(
                json!({"auth": "token", "team_id": "ABCDE12345", "key_id": "XYZ9876543",
                "private_key": p8, "topic": "com.acme.auth", "environment": "production"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{token_info}");
    assert_eq!(token_info["auth"], "token");
    assert_eq!(token_info["key_id"], "XYZ9876543");
    assert!(token_info["fingerprint"]
        .as_str()
        .expect("fp")
        .starts_with("sha256:"));
    assert!(token_info.get("private_key").is_none());

    let (status, read_back) = app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/credentials/apns"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read_back["fingerprint"], token_info["fingerprint"]);
    assert!(!read_back.to_string().contains(&pem_body(&p8)[..40]));

    // A second app holds the certificate form, so both forms live in the store at once.
    let cert_app = app.create_app("Acme Legacy").await;
    let (p12, p12_key_der) = apns_p12("s3cret-pass", -1, 365);
    let (status, cert_info) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{cert_app}/credentials/apns"),
            Some(
                json!({"auth": "certificate", "p12": p12, "password": "s3cret-pass",
                "topic": "com.acme.auth", "environment": "sandbox"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cert_info}");
    assert_eq!(cert_info["auth"], "certificate");
    assert_eq!(cert_info["environment"], "sandbox");
    assert!(cert_info["expires_at"].as_str().is_some(), "{cert_info}");
    assert!(cert_info["subject"]
        .as_str()
        .expect("subject")
        .contains("com.acme.auth"));

    let (sa, sa_pem) = service_account("acme-auth");
    let (status, fcm_info) = app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{app_id}/credentials/fcm"),
            Some(json!({"service_account": sa})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fcm_info}");
    assert_eq!(fcm_info["project_id"], "acme-auth");
    assert_eq!(
        fcm_info["client_email"],
        "push@acme-auth.iam.gserviceaccount.com"
    );
    assert!(fcm_info.get("private_key").is_none());
    let (status, _) = app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/credentials/fcm"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The database dump holds no key material in clear: not the PEM bodies, not the
    // raw key bytes (hex, as dumps print blobs), not the .p12 or its password.
    let dump = app.dump_database().await;
    assert!(dump.contains("XYZ9876543"), "metadata is stored in clear");
    for secret in [
        pem_body(&p8)[..48].to_owned(),
        pem_body(&sa_pem)[..48].to_owned(),
        p12[..48].to_owned(),
        "s3cret-pass".to_owned(),
        hex::encode(&p12_key_der[..24]),
        "PRIVATE KEY".to_owned(),
    ] {
        assert!(!dump.contains(&secret), "dump leaks {secret}");
        assert!(
            !dump.to_lowercase().contains(&secret.to_lowercase()),
            "dump leaks {secret}"
        );
    }

    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/v1/apps/{app_id}/credentials/fcm"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .admin(
            Method::GET,
            &format!("/v1/apps/{app_id}/credentials/fcm"),
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found", "fcm");
}
both_backends!(
    credentials_round_trip_without_secrets,
    super::credentials_round_trip_without_secrets
);

async fn bad_credentials_are_refused(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let apns = format!("/v1/apps/{app_id}/credentials/apns");
    let token = |key: &str, team: &str| {
        json!({"auth": "token", "team_id": team, "key_id": "XYZ9876543", "private_key": key,
            "topic": "com.acme.auth", "environment": "production"})
    };
    let (status, body) = app
        .admin(
            Method::PUT,
            &apns,
            Some(token(
                "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----",
                "ABCDE12345",
            )),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "private_key",
    );
    // An RSA key is PKCS#8 too, but not P-256.
    let (_, rsa_pem) = service_account("x");
    let (status, body) = app
        .admin(Method::PUT, &apns, Some(token(&rsa_pem, "ABCDE12345")))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "P-256",
    );
    assert!(
        !body.to_string().contains(&pem_body(&rsa_pem)[..40]),
        "error echoes the key"
    );
    let (status, body) = app
        .admin(Method::PUT, &apns, Some(token(&apns_p8(), "short")))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "team_id",
    );
    let (status, body) = app
        .admin(
            Method::PUT,
            &apns,
            Some(json!({"auth": "password", "topic": "x"})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "auth",
    );

    let (expired, _) = apns_p12("pw", -30, -1);
    let cert = |p12: &str, password: &str| {
        json!({"auth": "certificate", "p12": p12, "password": password,
            "topic": "com.acme.auth", "environment": "production"})
    };
    let (status, body) = app
        .admin(Method::PUT, &apns, Some(cert(&expired, "pw")))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "expired",
    );
    let (valid, _) = apns_p12("pw", -1, 30);
    let (status, body) = app
        .admin(Method::PUT, &apns, Some(cert(&valid, "wrong")))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "password",
    );
    let (status, body) = app.admin(Method::PUT, &apns, Some(cert("%%%", "pw"))).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "base64",
    );

    let fcm = format!("/v1/apps/{app_id}/credentials/fcm");
    let (mut sa, _) = service_account("acme");
    sa.as_object_mut().expect("object").remove("client_email");
    let (status, body) = app
        .admin(Method::PUT, &fcm, Some(json!({"service_account": sa})))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "client_email",
    );
    let (mut sa, _) = service_account("acme");
    sa["private_key"] = json!(apns_p8());
    let (status, body) = app
        .admin(Method::PUT, &fcm, Some(json!({"service_account": sa})))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "RSA",
    );

    let (status, body) = app
        .admin(
            Method::PUT,
            "/v1/apps/app_missing/credentials/fcm",
            Some(json!({"service_account": {}})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not-found",
        "app_missing",
    );
}
both_backends!(
    bad_credentials_are_refused,
    super::bad_credentials_are_refused
);
