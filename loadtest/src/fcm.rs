//! FCM simulator: the OAuth token endpoint (JWT-bearer grant, RS256) and
//! `POST /v1/projects/{p}/messages:send`, answering like FCM (docs/providers.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::jws::{self, now};
use crate::tls::{bind, serve_tls, ServeOptions, TestPki};

/// The simulated Firebase project and its service account.
#[derive(Clone)]
pub struct FcmConfig {
    pub project_id: String,
    pub client_email: String,
    pub public_key: rsa::RsaPublicKey,
    /// Lifetime of issued access tokens (FCM: 3599).
    pub token_lifetime_seconds: i64,
    /// Messages per minute for the project (FCM: 600,000).
    pub quota_per_minute: u64,
}

/// One accepted message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FcmReceipt {
    pub name: String,
    pub token: String,
    pub message: Value,
    pub at: u128,
    /// The HTTP version the send came over (`HTTP/2.0`, `HTTP/1.1`).
    #[serde(default)]
    pub http: String,
}

/// Faults, settable through `POST /control/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FcmFaults {
    #[serde(default)]
    pub latency_ms: u64,
    /// `503 UNAVAILABLE` with `Retry-After: 1` until this time (ms since the epoch).
    #[serde(default)]
    pub unavailable_until_ms: u128,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Shared {
    receipts: Vec<FcmReceipt>,
    rejections: BTreeMap<String, u64>,
    access_tokens: HashMap<String, i64>,
    tokens_issued: u64,
    faults: FcmFaults,
    bucket: Bucket,
    /// Scripted answers by registration token: (status, canonical status, FcmError code).
    script: HashMap<String, (u16, String, Option<String>)>,
}

#[derive(Clone)]
struct Sim {
    config: Arc<FcmConfig>,
    token_uri: String,
    shared: Arc<Mutex<Shared>>,
}

/// A running FCM simulator.
pub struct FcmSimulator {
    pub url: String,
    /// What the service account's `token_uri` should say.
    pub token_uri: String,
    shared: Arc<Mutex<Shared>>,
    shutdown: CancellationToken,
    down: tokio::sync::watch::Sender<bool>,
}

impl Drop for FcmSimulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl FcmSimulator {
    /// Starts on 127.0.0.1:`port` with TLS from `pki` (HTTP/2 and HTTP/1.1).
    /// FCM offering HTTP/2 and HTTP/1.1 by ALPN, as Google's front ends do.
    pub async fn start(config: FcmConfig, pki: &TestPki, port: u16) -> anyhow::Result<Self> {
        Self::start_offering(config, pki, port, &[b"h2", b"http/1.1"]).await
    }

    /// The simulator offering only `alpn` (`[b"http/1.1"]`: a front end that
    /// speaks HTTP/1.1 alone).
    pub async fn start_offering(
        config: FcmConfig,
        pki: &TestPki,
        port: u16,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Self> {
        let (listener, addr) = bind(port).await?;
        let url = format!("https://127.0.0.1:{}", addr.port());
        let token_uri = format!("{url}/token");
        let shared = Arc::new(Mutex::new(Shared {
            receipts: Vec::new(),
            rejections: BTreeMap::new(),
            access_tokens: HashMap::new(),
            tokens_issued: 0,
            faults: FcmFaults::default(),
            script: HashMap::new(),
            bucket: Bucket {
                tokens: config.quota_per_minute as f64,
                at: Instant::now(),
            },
        }));
        let sim = Sim {
            config: Arc::new(config),
            token_uri: token_uri.clone(),
            shared: shared.clone(),
        };
        let shutdown = CancellationToken::new();
        let (down, down_rx) = tokio::sync::watch::channel(false);
        let tls = pki.server_config(alpn)?;
        let options = ServeOptions {
            http2_only: false,
            max_concurrent_streams: 100,
            down: down_rx,
        };
        let make = move || router(sim.clone());
        tokio::spawn(serve_tls(listener, tls, options, make, shutdown.clone()));
        Ok(FcmSimulator {
            url,
            token_uri,
            shared,
            shutdown,
            down,
        })
    }

    pub fn receipts(&self) -> Vec<FcmReceipt> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .receipts
            .clone()
    }

    pub fn rejections(&self) -> BTreeMap<String, u64> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejections
            .clone()
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tokens_issued
    }

    /// Takes the simulator down (`true`: port closed, connections cut) or back up.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// How many notifications were accepted so far (cheaper than cloning them).
    pub fn receipt_count(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .receipts
            .len()
    }

    pub fn set_faults(&self, faults: FcmFaults) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).faults = faults;
    }

    /// Revokes every access token issued so far: the next send with one gets `401`.
    pub fn revoke_access_tokens(&self) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .access_tokens
            .clear();
    }

    /// Answers every send to `token` with `status`, the canonical status and, when
    /// given, an `FcmError` code (after the auth and message checks), so a test can
    /// walk every row of the error table.
    pub fn script(&self, token: &str, status: u16, canonical: &str, code: Option<&str>) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .script
            .insert(
                token.to_owned(),
                (status, canonical.to_owned(), code.map(str::to_owned)),
            );
    }
}

fn router(sim: Sim) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/v1/projects/{project}/messages:send", post(send))
        .route("/control/receipts", get(receipts))
        .route("/control/faults", post(set_faults))
        .with_state(sim)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(sim): State<Sim>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    let Some(jws) = form.get("assertion").and_then(|a| jws::parse(a)) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    };
    if jws.header["alg"] != "RS256" || !jws::verify_rs256(&jws, &sim.config.public_key) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    }
    if jws.claims["iss"].as_str() != Some(sim.config.client_email.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    let aud = jws.claims["aud"].as_str().unwrap_or_default();
    if aud != sim.token_uri && aud != "https://oauth2.googleapis.com/token" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Failed audience check.",
        );
    }
    let (iat, exp, now) = (
        jws.claims["iat"].as_i64().unwrap_or(0),
        jws.claims["exp"].as_i64().unwrap_or(0),
        now(),
    );
    if exp - iat > 3600 || exp < now - 30 || iat > now + 30 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scope = jws.claims["scope"].as_str().unwrap_or_default();
    if !scope.split(' ').any(|s| {
        s == "https://www.googleapis.com/auth/firebase.messaging"
            || s == "https://www.googleapis.com/auth/cloud-platform"
    }) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let access = format!("ya29.sim-{}", hex_token());
    let lifetime = sim.config.token_lifetime_seconds;
    let mut shared = sim.shared.lock().unwrap_or_else(|p| p.into_inner());
    shared.access_tokens.insert(access.clone(), now + lifetime);
    shared.tokens_issued += 1;
    Json(json!({"access_token": access, "expires_in": lifetime, "token_type": "Bearer"}))
        .into_response()
}

fn hex_token() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A google.rpc.Status error, with an FcmError detail when `error_code` is given.
fn fcm_error(
    status: StatusCode,
    canonical: &str,
    message: &str,
    error_code: Option<&str>,
    extra: Vec<Value>,
) -> Response {
    let mut details = extra;
    if let Some(code) = error_code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}));
    }
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": canonical, "details": details}});
    (status, Json(body)).into_response()
}

fn bad_request(field: &str, description: &str) -> Response {
    fcm_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        description,
        Some("INVALID_ARGUMENT"),
        vec![json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}]})],
    )
}

fn reject(sim: &Sim, reason: &str, response: Response) -> Response {
    *sim.shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .rejections
        .entry(reason.to_owned())
        .or_default() += 1;
    response
}

/// Validates a message like FCM: one target, string data, no reserved keys, TTL format, size.
#[allow(clippy::result_large_err)] // an axum response is the natural error here
fn check_message(message: &Value) -> Result<String, Response> {
    let targets = ["token", "topic", "condition", "fid"]
        .iter()
        .filter(|t| message.get(**t).is_some())
        .count();
    if targets != 1 {
        return Err(bad_request(
            "message",
            "Exactly one of token, topic, condition or fid must be set.",
        ));
    }
    let token = message
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(data) = message.get("data") {
        let Some(map) = data.as_object() else {
            return Err(bad_request("message.data", "data must be a map of strings"));
        };
        for (i, (key, value)) in map.iter().enumerate() {
            if !value.is_string() {
                return Err(bad_request(
                    &format!("message.data[{i}].value"),
                    "Invalid value at 'message.data[0].value' (TYPE_STRING)",
                ));
            }
            let lower = key.to_ascii_lowercase();
            if lower == "from"
                || lower == "message_type"
                || lower.starts_with("google")
                || lower.starts_with("gcm")
            {
                return Err(bad_request(
                    &format!("message.data[{i}].key"),
                    "Invalid data message key (reserved)",
                ));
            }
        }
    }
    if let Some(priority) = message.pointer("/android/priority") {
        if !matches!(priority.as_str(), Some("NORMAL" | "HIGH")) {
            return Err(bad_request(
                "message.android.priority",
                "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority)",
            ));
        }
    }
    if let Some(priority) = message.pointer("/apns/headers/apns-priority") {
        if !matches!(priority.as_str(), Some("1" | "5" | "10")) {
            return Err(bad_request("message.apns.headers", "Invalid APNs headers"));
        }
    }
    if let Some(ttl) = message.pointer("/android/ttl") {
        let valid = ttl
            .as_str()
            .and_then(|t| t.strip_suffix('s'))
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|t| (0.0..=2_419_200.0).contains(&t));
        if !valid {
            return Err(bad_request("message.android.ttl", "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)"));
        }
    }
    let size = serde_json::to_vec(message.get("data").unwrap_or(&Value::Null))
        .map(|v| v.len())
        .unwrap_or(0)
        + serde_json::to_vec(message.get("notification").unwrap_or(&Value::Null))
            .map(|v| v.len())
            .unwrap_or(0);
    if size > 4096 {
        return Err(bad_request("message", "Message is too big"));
    }
    Ok(token)
}

async fn send(
    State(sim): State<Sim>,
    Path(project): Path<String>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let faults = sim
        .shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .faults
        .clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    if now_ms < faults.unavailable_until_ms {
        let mut response = fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            Some("UNAVAILABLE"),
            vec![],
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return reject(&sim, "UNAVAILABLE", response);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let valid = bearer.as_ref().is_some_and(|token| {
        let shared = sim.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared
            .access_tokens
            .get(token)
            .is_some_and(|exp| *exp > now())
    });
    if !valid {
        let mut response = fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
            vec![],
        );
        response.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static(
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ),
        );
        return reject(&sim, "UNAUTHENTICATED", response);
    }
    if project != sim.config.project_id {
        let message = format!("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).");
        return reject(
            &sim,
            "PERMISSION_DENIED",
            fcm_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                &message,
                None,
                vec![],
            ),
        );
    }
    // Quota: a token bucket of messages per minute, counting messages and 4xx.
    {
        let mut shared = sim.shared.lock().unwrap_or_else(|p| p.into_inner());
        let per_second = sim.config.quota_per_minute as f64 / 60.0;
        let bucket = &mut shared.bucket;
        bucket.tokens = (bucket.tokens + bucket.at.elapsed().as_secs_f64() * per_second)
            .min(sim.config.quota_per_minute as f64);
        bucket.at = Instant::now();
        if bucket.tokens < 1.0 {
            drop(shared);
            let mut response = fcm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Messages'.",
                Some("QUOTA_EXCEEDED"),
                vec![],
            );
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("60"));
            return reject(&sim, "QUOTA_EXCEEDED", response);
        }
        bucket.tokens -= 1.0;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return reject(
            &sim,
            "INVALID_ARGUMENT",
            bad_request("", "Invalid JSON payload received."),
        );
    };
    let Some(message) = request.get("message") else {
        return reject(
            &sim,
            "INVALID_ARGUMENT",
            bad_request("message", "Message is required."),
        );
    };
    let token = match check_message(message) {
        Ok(token) => token,
        Err(response) => return reject(&sim, "INVALID_ARGUMENT", response),
    };
    let script = sim
        .shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .script
        .get(&token)
        .cloned();
    if let Some((status, canonical, code)) = script {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let name = code.clone().unwrap_or_else(|| canonical.clone());
        let mut response = fcm_error(
            status,
            &canonical,
            "Scripted answer.",
            code.as_deref(),
            vec![],
        );
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        return reject(&sim, &name, response);
    }
    let scripted = |prefix: &str| token.starts_with(prefix);
    if scripted("unregistered") {
        return reject(
            &sim,
            "UNREGISTERED",
            fcm_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
                vec![],
            ),
        );
    }
    if scripted("mismatch") {
        return reject(
            &sim,
            "SENDER_ID_MISMATCH",
            fcm_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
                vec![],
            ),
        );
    }
    if scripted("badtoken") {
        return reject(
            &sim,
            "INVALID_ARGUMENT",
            bad_request(
                "message.token",
                "The registration token is not a valid FCM registration token",
            ),
        );
    }
    if scripted("apnsauth") {
        return reject(
            &sim,
            "THIRD_PARTY_AUTH_ERROR",
            fcm_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
                Some("THIRD_PARTY_AUTH_ERROR"),
                vec![],
            ),
        );
    }
    if scripted("unavailable") {
        let mut response = fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            Some("UNAVAILABLE"),
            vec![],
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return reject(&sim, "UNAVAILABLE", response);
    }
    if scripted("internal") {
        return reject(
            &sim,
            "INTERNAL",
            fcm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error encountered.",
                Some("INTERNAL"),
                vec![],
            ),
        );
    }
    let name = if request.get("validate_only").and_then(Value::as_bool) == Some(true) {
        format!("projects/{project}/messages/fake_message_id")
    } else {
        format!("projects/{project}/messages/0:{}%{}", now_ms, hex_token())
    };
    sim.shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .receipts
        .push(FcmReceipt {
            name: name.clone(),
            token,
            message: message.clone(),
            at: now_ms,
            http: format!("{version:?}"),
        });
    Json(json!({"name": name})).into_response()
}

async fn receipts(State(sim): State<Sim>) -> Json<Vec<FcmReceipt>> {
    Json(
        sim.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .receipts
            .clone(),
    )
}

async fn set_faults(State(sim): State<Sim>, Json(faults): Json<FcmFaults>) -> StatusCode {
    sim.shared.lock().unwrap_or_else(|p| p.into_inner()).faults = faults;
    StatusCode::NO_CONTENT
}
