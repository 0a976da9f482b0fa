use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::{assert_problem, read, Backend, TestApp};

async fn health_ready_metrics_openapi(app: TestApp) {
    let response = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));

    let (status, body) = read(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["store"], "ok");
    let expected_redis = if app.backend == Backend::Postgres {
        "ok"
    } else {
        "not configured"
    };
    assert_eq!(body["redis"], expected_redis);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("push_http_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/readyz\""), "{metrics}");
    assert!(
        metrics.contains("push_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    let (status, doc) = read(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().expect("version").starts_with("3.1"),
        "{doc}"
    );
    for path in [
        "/v1/apps",
        "/v1/apps/{app}",
        "/v1/apps/{app}/credentials/apns",
        "/v1/apps/{app}/credentials/fcm",
        "/v1/apps/{app}/notifiers",
        "/v1/apps/{app}/notifiers/{id}",
        "/v1/apps/{app}/attestation",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}
both_backends!(
    health_ready_metrics_openapi,
    super::health_ready_metrics_openapi
);

async fn request_id_is_echoed(app: TestApp) {
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}
both_backends!(request_id_is_echoed, super::request_id_is_echoed);

async fn unknown_route_and_method_are_problems(app: TestApp) {
    let response = app
        .client
        .get(app.url("/v2/nothing"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (status, body) = read(response).await;
    assert_problem(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not-found",
        "endpoint",
    );

    let (status, body) = read(
        app.client
            .patch(app.url("/v1/apps"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method",
    );
}
both_backends!(
    unknown_route_and_method_are_problems,
    super::unknown_route_and_method_are_problems
);
