//! APNs simulator: `POST /3/device/<token>` over HTTP/2 + TLS, validating like Apple
//! (docs/providers.md), with token auth rules, scripted outcomes, faults and receipts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::jws::{self, now};
use crate::tls::{bind, serve_tls, PeerCertificate, ServeOptions, TestPki};

/// A provider signing key APNs knows: its id, its team, its public key.
#[derive(Clone)]
pub struct ApnsKey {
    pub key_id: String,
    pub team_id: String,
    pub public: p256::ecdsa::VerifyingKey,
}

/// What the simulated APNs accepts.
#[derive(Clone)]
pub struct ApnsConfig {
    pub keys: Vec<ApnsKey>,
    /// Topics the teams may push to, in full: a bundle id (alert, background and the
    /// other push types without a suffix), and a bundle id with a push type's suffix
    /// (`com.acme.voip`, `com.acme.complication`, …) for each push type the app is
    /// entitled to. Anything else is `TopicDisallowed`, as Apple answers.
    pub topics: Vec<String>,
    pub max_concurrent_streams: u32,
    /// Apple's 20-minute rule for new provider tokens, per signing key across all
    /// connections (one provider process, as a test node is). Off: per connection,
    /// so several provider processes sharing a key (a cluster) each keep their own.
    pub tokens_per_key: bool,
}

/// One accepted notification, as the device would get it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApnsReceipt {
    pub apns_id: String,
    pub token: String,
    pub topic: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Value,
    /// Milliseconds since the epoch.
    pub at: u128,
}

/// Injected faults, settable through `POST /control/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApnsFaults {
    /// Added to every response.
    #[serde(default)]
    pub latency_ms: u64,
    /// Answer `503 ServiceUnavailable` to everything until this time (ms since the epoch).
    #[serde(default)]
    pub unavailable_until_ms: u128,
    /// Answer `429 TooManyRequests` to the next N requests.
    #[serde(default)]
    pub too_many_requests: u32,
}

#[derive(Default)]
struct Shared {
    receipts: Vec<ApnsReceipt>,
    rejections: BTreeMap<String, u64>,
    faults: ApnsFaults,
    connections: u64,
    token_updates: u64,
    /// Per signing key: the last new provider token and when it was first seen
    /// (Apple's 20-minute rule holds per key, across connections).
    key_tokens: BTreeMap<String, (String, i64)>,
    /// Scripted answers by device token: (status, reason).
    script: BTreeMap<String, (u16, String)>,
}

/// Per-connection state: APNs binds a connection to the first team and key it sees.
#[derive(Default)]
struct Connection {
    team: Option<String>,
    first_kid: Option<String>,
    /// The last new token accepted: (token, accepted at, its iat).
    token: Option<(String, i64, i64)>,
}

#[derive(Clone)]
struct Sim {
    config: Arc<ApnsConfig>,
    shared: Arc<Mutex<Shared>>,
}

/// A running APNs simulator.
pub struct ApnsSimulator {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    shutdown: CancellationToken,
    down: tokio::sync::watch::Sender<bool>,
}

impl Drop for ApnsSimulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
    "widgets",
    "controls",
];

impl ApnsSimulator {
    /// Starts on 127.0.0.1:`port` with TLS from `pki`.
    pub async fn start(config: ApnsConfig, pki: &TestPki, port: u16) -> anyhow::Result<Self> {
        Self::start_with_client_roots(config, pki, port, &[]).await
    }

    /// [`ApnsSimulator::start`] that also trusts client certificates issued by
    /// `client_roots` (DER): a connection that presents one is authenticated by
    /// it, and its requests need no provider token (certificate-based trust).
    pub async fn start_with_client_roots(
        config: ApnsConfig,
        pki: &TestPki,
        port: u16,
        client_roots: &[Vec<u8>],
    ) -> anyhow::Result<Self> {
        let (listener, addr) = bind(port).await?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sim = Sim {
            config: Arc::new(config),
            shared: shared.clone(),
        };
        let shutdown = CancellationToken::new();
        let (down, down_rx) = tokio::sync::watch::channel(false);
        let options = ServeOptions {
            http2_only: true,
            max_concurrent_streams: sim.config.max_concurrent_streams,
            down: down_rx,
        };
        let tls = pki.server_config_with_client_roots(&[b"h2"], client_roots)?;
        let make = move || {
            sim.shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .connections += 1;
            router(sim.clone()).layer(Extension(Arc::new(Mutex::new(Connection::default()))))
        };
        tokio::spawn(serve_tls(listener, tls, options, make, shutdown.clone()));
        Ok(ApnsSimulator {
            url: format!("https://127.0.0.1:{}", addr.port()),
            shared,
            shutdown,
            down,
        })
    }

    /// Everything accepted so far.
    pub fn receipts(&self) -> Vec<ApnsReceipt> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .receipts
            .clone()
    }

    /// Rejections by reason.
    pub fn rejections(&self) -> BTreeMap<String, u64> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejections
            .clone()
    }

    /// TLS connections opened, and new provider tokens seen on them.
    pub fn connection_stats(&self) -> (u64, u64) {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        (shared.connections, shared.token_updates)
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

    pub fn set_faults(&self, faults: ApnsFaults) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).faults = faults;
    }

    /// Answers `status` with `reason` to every request for `token` (after the
    /// header and auth checks), so a test can walk every row of Apple's table.
    pub fn script(&self, token: &str, status: u16, reason: &str) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .script
            .insert(token.to_owned(), (status, reason.to_owned()));
    }
}

/// The `apns-topic` suffix Apple requires for a push type ("" for none).
pub fn topic_suffix(push_type: &str) -> &'static str {
    match push_type {
        "voip" => ".voip",
        "complication" => ".complication",
        "fileprovider" => ".pushkit.fileprovider",
        "liveactivity" => ".push-type.liveactivity",
        "location" => ".location-query",
        "pushtotalk" => ".voip-ptt",
        "widgets" => ".push-type.widgets",
        "controls" => ".push-type.controls",
        _ => "",
    }
}

fn router(sim: Sim) -> Router {
    Router::new()
        .route("/3/device/{token}", post(push))
        .route("/3/device/", post(missing_token))
        .route("/control/receipts", get(receipts))
        .route("/control/stats", get(stats))
        .route("/control/faults", post(set_faults))
        .fallback(|| async { reject(StatusCode::NOT_FOUND, "BadPath", "") })
        .with_state(sim)
}

fn reject(status: StatusCode, reason: &str, apns_id: &str) -> Response {
    let mut body = json!({ "reason": reason });
    if status == StatusCode::GONE {
        body["timestamp"] = json!(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default());
    }
    let id = if apns_id.is_empty() {
        new_uuid()
    } else {
        apns_id.to_owned()
    };
    (
        status,
        [("apns-id", id), ("content-type", "application/json".into())],
        body.to_string(),
    )
        .into_response()
}

fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n)
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

async fn missing_token(State(sim): State<Sim>) -> Response {
    count(&sim, "MissingDeviceToken");
    reject(StatusCode::BAD_REQUEST, "MissingDeviceToken", "")
}

fn count(sim: &Sim, reason: &str) {
    *sim.shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .rejections
        .entry(reason.to_owned())
        .or_default() += 1;
}

/// The first failed check, in APNs' order (after pushy's validating handler), or `None`.
fn validate(
    sim: &Sim,
    connection: &Mutex<Connection>,
    certified: bool,
    headers: &HeaderMap,
    token: &str,
    body: &[u8],
) -> Option<(StatusCode, &'static str)> {
    use StatusCode as S;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    for name in [
        "apns-id",
        "apns-topic",
        "apns-priority",
        "apns-push-type",
        "apns-expiration",
        "apns-collapse-id",
        "authorization",
    ] {
        if headers.get_all(name).iter().count() > 1 {
            return Some((S::BAD_REQUEST, "DuplicateHeaders"));
        }
    }
    if let Some(id) = header("apns-id") {
        if !is_uuid(id) {
            return Some((S::BAD_REQUEST, "BadMessageId"));
        }
    }
    let Some(topic) = header("apns-topic") else {
        return Some((S::BAD_REQUEST, "MissingTopic"));
    };
    if header("apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Some((S::BAD_REQUEST, "BadCollapseId"));
    }
    let priority = header("apns-priority").unwrap_or("10");
    if !matches!(priority, "1" | "5" | "10") {
        return Some((S::BAD_REQUEST, "BadPriority"));
    }
    let push_type = header("apns-push-type").unwrap_or("alert");
    if !PUSH_TYPES.contains(&push_type) {
        return Some((S::BAD_REQUEST, "InvalidPushType"));
    }
    if push_type == "background" && priority == "10" {
        return Some((S::BAD_REQUEST, "BadPriority"));
    }
    if header("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
        return Some((S::BAD_REQUEST, "BadExpirationDate"));
    }
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some((S::BAD_REQUEST, "BadDeviceToken"));
    }
    // The topic must carry the push type's suffix, and the app must be entitled to it.
    let suffix = topic_suffix(push_type);
    if !suffix.is_empty() && !topic.ends_with(suffix) {
        return Some((S::BAD_REQUEST, "BadTopic"));
    }
    if !sim.config.topics.iter().any(|t| t == topic) {
        return Some((S::BAD_REQUEST, "TopicDisallowed"));
    }
    // A connection authenticated by its client certificate needs no provider
    // token; a token sent on it is still checked.
    let authorization = header("authorization");
    if !(certified && authorization.is_none()) {
        if let Some(reason) = authenticate(sim, connection, authorization) {
            return Some(reason);
        }
    }
    if body.is_empty() {
        return Some((S::BAD_REQUEST, "PayloadEmpty"));
    }
    let limit = if push_type == "voip" { 5120 } else { 4096 };
    if body.len() > limit {
        return Some((S::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
    }
    if serde_json::from_slice::<Value>(body)
        .map(|v| !v.is_object())
        .unwrap_or(true)
    {
        return Some((S::BAD_REQUEST, "BadPayload"));
    }
    None
}

/// Token auth: ES256 JWT by a known key of the connection's team, `iat` under an hour,
/// one key and team per connection, new tokens at most every 20 minutes.
fn authenticate(
    sim: &Sim,
    connection: &Mutex<Connection>,
    authorization: Option<&str>,
) -> Option<(StatusCode, &'static str)> {
    use StatusCode as S;
    let Some(value) = authorization else {
        return Some((S::FORBIDDEN, "MissingProviderToken"));
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return Some((S::FORBIDDEN, "MissingProviderToken"));
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Some((S::FORBIDDEN, "MissingProviderToken"));
    }
    let token = token.trim();
    let now = now();
    {
        // The token this connection already verified: only its age can have changed.
        let conn = connection.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, _, iat)) = &conn.token {
            if known == token {
                return (now - iat > 3600).then_some((S::FORBIDDEN, "ExpiredProviderToken"));
            }
        }
    }
    let Some(jws) = jws::parse(token) else {
        return Some((S::FORBIDDEN, "InvalidProviderToken"));
    };
    if jws.header["alg"] != "ES256" {
        return Some((S::FORBIDDEN, "InvalidProviderToken"));
    }
    let kid = jws.header["kid"].as_str().unwrap_or_default();
    let Some(key) = sim.config.keys.iter().find(|k| k.key_id == kid) else {
        return Some((S::FORBIDDEN, "InvalidProviderToken"));
    };
    if jws.claims["iss"].as_str() != Some(key.team_id.as_str())
        || !jws::verify_es256(&jws, &key.public)
    {
        return Some((S::FORBIDDEN, "InvalidProviderToken"));
    }
    let Some(iat) = jws.claims["iat"].as_i64() else {
        return Some((S::FORBIDDEN, "InvalidProviderToken"));
    };
    if now - iat > 3600 {
        return Some((S::FORBIDDEN, "ExpiredProviderToken"));
    }
    let mut conn = connection.lock().unwrap_or_else(|p| p.into_inner());
    match &conn.team {
        Some(team) if team != &key.team_id => return Some((S::FORBIDDEN, "InvalidProviderToken")),
        Some(_) => {}
        None => conn.team = Some(key.team_id.clone()),
    }
    match &conn.first_kid {
        Some(first) if first != kid => return Some((S::FORBIDDEN, "UnrelatedKeyIdInToken")),
        Some(_) => {}
        None => conn.first_kid = Some(kid.to_owned()),
    }
    // A new token within 20 minutes of the last new one is refused: per connection,
    // or with `tokens_per_key` per key whichever connection it comes on (then a new
    // connection is no way around the rule).
    let key_name = format!("{}/{}", key.team_id, key.key_id);
    let mut shared = sim.shared.lock().unwrap_or_else(|p| p.into_inner());
    let last = if sim.config.tokens_per_key {
        shared.key_tokens.get(&key_name).cloned()
    } else {
        conn.token.as_ref().map(|(t, since, _)| (t.clone(), *since))
    };
    match last {
        Some((previous, _)) if previous == token => {}
        Some((_, since)) if now - since < 20 * 60 => {
            return Some((S::TOO_MANY_REQUESTS, "TooManyProviderTokenUpdates"))
        }
        _ => {
            shared.key_tokens.insert(key_name, (token.to_owned(), now));
            shared.token_updates += 1;
        }
    }
    conn.token = Some((token.to_owned(), now, iat));
    None
}

/// Outcomes scripted by the token's first four hex digits.
fn scripted(token: &str) -> Option<(StatusCode, &'static str)> {
    match &token[..4.min(token.len())] {
        "4100" => Some((StatusCode::GONE, "Unregistered")),
        "4101" => Some((StatusCode::GONE, "ExpiredToken")),
        "400b" => Some((StatusCode::BAD_REQUEST, "BadDeviceToken")),
        "400d" => Some((StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic")),
        "4290" => Some((StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")),
        "5000" => Some((StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")),
        "5030" => Some((StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")),
        _ => None,
    }
}

async fn push(
    State(sim): State<Sim>,
    Extension(connection): Extension<Arc<Mutex<Connection>>>,
    peer: Option<Extension<PeerCertificate>>,
    Path(token): Path<String>,
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
    let apns_id = headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    if now_ms < faults.unavailable_until_ms {
        count(&sim, "ServiceUnavailable");
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &apns_id,
        );
    }
    if faults.too_many_requests > 0 {
        sim.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .faults
            .too_many_requests -= 1;
        count(&sim, "TooManyRequests");
        return reject(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", &apns_id);
    }
    let certified = peer.is_some_and(|Extension(p)| p.0.is_some());
    if let Some((status, reason)) =
        validate(&sim, &connection, certified, &headers, &token, &body).or_else(|| scripted(&token))
    {
        count(&sim, reason);
        return reject(status, reason, &apns_id);
    }
    let script = sim
        .shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .script
        .get(&token)
        .cloned();
    if let Some((status, reason)) = script {
        count(&sim, &reason);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return reject(status, &reason, &apns_id);
    }
    let apns_id = if apns_id.is_empty() {
        new_uuid()
    } else {
        apns_id
    };
    let receipt = ApnsReceipt {
        apns_id: apns_id.clone(),
        token,
        topic: headers
            .get("apns-topic")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        headers: headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("apns-"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        payload: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: now_ms,
    };
    sim.shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .receipts
        .push(receipt);
    (StatusCode::OK, [("apns-id", apns_id)]).into_response()
}

async fn receipts(State(sim): State<Sim>) -> Json<Vec<ApnsReceipt>> {
    Json(
        sim.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .receipts
            .clone(),
    )
}

async fn stats(State(sim): State<Sim>) -> Json<Value> {
    let shared = sim.shared.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({
        "accepted": shared.receipts.len(),
        "rejected": shared.rejections,
        "connections": shared.connections,
        "token_updates": shared.token_updates,
    }))
}

async fn set_faults(State(sim): State<Sim>, Json(faults): Json<ApnsFaults>) -> StatusCode {
    sim.shared.lock().unwrap_or_else(|p| p.into_inner()).faults = faults;
    StatusCode::NO_CONTENT
}
