//! Every metric the Grafana dashboard and the alert rules name is exported by a live server.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sdk_client::{DeviceKey, NewRegistration};
use serde_json::json;

use crate::actors::{device, TestNotifier};
use crate::helpers::Backend;
use crate::notify::{send, wait_status};
use crate::providers::{apns_token, fcm_token, p8, register, rig, BUNDLE};

/// Metric names used by a dashboard or rule file.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("push_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded_by_word && text[start..end].len() > 6 {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn every_metric_in_the_dashboard_and_alerts_is_exported() {
    let rig = rig(Backend::Sqlite, 3599, "").await;
    // Traffic that makes every series exist: sends through APNs, FCM and the direct channel,
    // a broken credential (circuit), a certificate credential (expiry), an open stream.
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let desktop = device(&rig.app, DeviceKey::generate_p256());
    let direct = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register")
        .id;
    let mut listener = desktop.listen(&direct);
    let regs = vec![
        register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await,
        register(
            &rig,
            &app_id,
            NewRegistration::fcm(&fcm_token("android"), "android"),
        )
        .await,
        direct.clone(),
    ];
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"registrations": regs}, "notification": {"title": "m"}}),
    )
    .await;
    crate::notify::next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("direct event");
    wait_status(
        &rig.app,
        &notifier,
        answer["id"].as_str().expect("id"),
        |s| s["counts"]["sent"] == 3,
    )
    .await;
    let (broken_key, _) = p8();
    let (broken_app, broken) = rig.tenant(&broken_key).await;
    let broken_reg = register(
        &rig,
        &broken_app,
        NewRegistration::apns(&apns_token(""), "ios"),
    )
    .await;
    let answer = send(
        &rig.app,
        &broken,
        json!({"targets": {"registrations": [broken_reg]}, "notification": {"title": "x"}}),
    )
    .await;
    wait_status(&rig.app, &broken, answer["id"].as_str().expect("id"), |s| {
        s["targets"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("circuit open")
    })
    .await;
    let cert_app = rig.app.create_app("Cert").await;
    let (p12, _) = crate::fixtures::apns_p12("pw", -1, 90);
    let (status, _) = rig
        .app
        .admin(
            Method::PUT,
            &format!("/v1/apps/{cert_app}/credentials/apns"),
            Some(json!({"auth": "certificate", "p12": p12, "password": "pw", "topic": BUNDLE, "environment": "production"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let cert_notifier = TestNotifier::create(&rig.app, &cert_app, &["notify"]).await;
    let cert_reg = register(
        &rig,
        &cert_app,
        NewRegistration::apns(&apns_token(""), "ios"),
    )
    .await;
    let answer = send(
        &rig.app,
        &cert_notifier,
        json!({"targets": {"registrations": [cert_reg]}, "notification": {"title": "c"}}),
    )
    .await;
    wait_status(
        &rig.app,
        &cert_notifier,
        answer["id"].as_str().expect("id"),
        |s| {
            s["targets"][0]["attempts"].as_i64().unwrap_or(0) >= 1
                || s["targets"][0]["reason"].is_string()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // one sweep: queue gauges

    let exported = rig
        .app
        .client
        .get(rig.app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let used: std::collections::BTreeSet<String> = [
        include_str!("../../../deploy/grafana/push-service.json"),
        include_str!("../../../deploy/prometheus/alerts.yaml"),
    ]
    .iter()
    .flat_map(|text| metric_names(text))
    .collect();
    assert!(used.len() >= 12, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| {
            !exported
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "named in dashboards/alerts but not exported: {missing:?}"
    );
    drop(listener);
}
