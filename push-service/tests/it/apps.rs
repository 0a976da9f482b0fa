use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{assert_problem, read, TestApp};

async fn app_lifecycle_and_pagination(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_app(&format!("App {i}")).await);
    }
    ids.sort();
    let (status, page) = app.admin(Method::GET, "/v1/apps?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some(String::new());
    while let Some(after) = next {
        let (_, page) = app
            .admin(
                Method::GET,
                &format!("/v1/apps?limit=2&after={after}"),
                None,
            )
            .await;
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen, ids,
        "keyset pagination returns every app once, in order"
    );

    let (status, one) = app
        .admin(Method::GET, &format!("/v1/apps/{}", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["id"], ids[0].as_str());
    assert!(one["created_at"]
        .as_str()
        .expect("created_at")
        .ends_with('Z'));

    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/apps/{}", ids[0]), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .admin(Method::GET, &format!("/v1/apps/{}", ids[0]), None)
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found", &ids[0]);
    let (status, body) = app
        .admin(Method::DELETE, &format!("/v1/apps/{}", ids[0]), None)
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found", &ids[0]);
}
both_backends!(
    app_lifecycle_and_pagination,
    super::app_lifecycle_and_pagination
);

async fn admin_token_is_required(app: TestApp) {
    let (status, body) = read(
        app.client
            .get(app.url("/v1/apps"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authorization",
    );
    let response = app
        .client
        .post(app.url("/v1/apps"))
        .bearer_auth("not-the-admin-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, body) = read(response).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not valid",
    );
    let (status, body) = read(
        app.client
            .get(app.url("/v1/apps"))
            .header("authorization", "Basic YWRtaW46YWRtaW4=")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Bearer",
    );
}
both_backends!(admin_token_is_required, super::admin_token_is_required);

async fn bad_bodies_get_problems(app: TestApp) {
    let post = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/apps"))
            .bearer_auth(&app.admin_token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, body) = read(post("{\"name\": ", "application/json").await.expect("sent")).await;
    assert_problem(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "malformed-json",
        "EOF",
    );
    let (status, body) = read(
        post("{\"name\": 42}", "application/json")
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "name",
    );
    let (status, body) = read(
        post("{\"nom\": \"x\"}", "application/json")
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "nom",
    );
    let (status, body) = read(
        post("{\"name\": \"  \"}", "application/json")
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "name",
    );
    let (status, body) = read(post("{\"name\": \"x\"}", "text/plain").await.expect("sent")).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "application/json",
    );
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(200_000));
    let (status, body) = read(
        app.client
            .post(app.url("/v1/apps"))
            .bearer_auth(&app.admin_token)
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "65536",
    );
    let (status, body) = app.admin(Method::GET, "/v1/apps?limit=lots", None).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "limit",
    );
    let (status, body) = app.admin(Method::GET, "/v1/apps?limit=0", None).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "limit",
    );
}
both_backends!(bad_bodies_get_problems, super::bad_bodies_get_problems);
