//! Devices (through the sdk-client) and notifiers (auth servers) as tests use them.

use reqwest::{Method, StatusCode};
use sdk_client::{random_id, unix_now, Client, DeviceKey, RetryPolicy};
use serde_json::{json, Value};

use crate::helpers::{read, Api};

/// An sdk-client for `key` against the test server, without retries.
pub fn device(app: &Api, key: DeviceKey) -> Client {
    Client::builder(&app.base, key)
        .retry(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .expect("client builds")
}

/// A notifier registered on an app, holding its P-256 signing key.
pub struct TestNotifier {
    pub id: String,
    pub app_id: String,
    pub key: DeviceKey,
    pub kid: String,
    pub audience: String,
}

impl TestNotifier {
    /// Registers a notifier with a fresh key and these scopes.
    pub async fn create(app: &Api, app_id: &str, scopes: &[&str]) -> Self {
        Self::create_with(app, app_id, scopes, json!({})).await
    }

    /// Registers a notifier with a fresh key, these scopes and `extra` fields.
    pub async fn create_with(app: &Api, app_id: &str, scopes: &[&str], extra: Value) -> Self {
        let key = DeviceKey::generate_p256();
        let kid = format!("kid-{}", random_id());
        let mut jwk = key.public_jwk();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!("ES256");
        let (status, body) = app
            .admin(
                Method::POST,
                &format!("/v1/apps/{app_id}/notifiers"),
                Some({
                    let mut body =
                        json!({"name": "auth", "jwks": {"keys": [jwk]}, "scopes": scopes});
                    for (k, v) in extra.as_object().into_iter().flatten() {
                        body[k] = v.clone();
                    }
                    body
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        TestNotifier {
            id: body["id"].as_str().expect("id").to_owned(),
            app_id: app_id.to_owned(),
            key,
            kid,
            audience: "push-test".into(),
        }
    }

    /// Valid header and claims for a token with `scope`.
    pub fn parts(&self, scope: &str) -> (Value, Value) {
        let now = unix_now();
        (
            json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}),
            json!({"iss": self.id, "aud": self.audience, "iat": now, "exp": now + 60,
                "jti": random_id(), "scope": scope}),
        )
    }

    /// A valid, fresh token with `scope`.
    pub fn jwt(&self, scope: &str) -> String {
        let (header, claims) = self.parts(scope);
        self.key.sign_jws(&header, &claims)
    }
}

/// Calls the API with a bearer JWT.
pub async fn with_jwt(
    app: &Api,
    method: Method,
    path: &str,
    jwt: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(jwt);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.expect("sent")).await
}

/// A 64-hex-digit APNs device token, random.
pub fn apns_token() -> String {
    (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect()
}

/// A plausible FCM registration token, random.
pub fn fcm_token() -> String {
    format!("{}:APA91b{}", random_id(), random_id().repeat(5))
}
