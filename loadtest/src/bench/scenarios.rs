//! Scenarios: set up through the real API, drive load, read the simulators' receipts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::service::{Service, ADMIN_TOKEN, KEY_ID, TEAM, TOPIC};
use super::{now_ms, progress, Latency};
use crate::jws::sign_es256;

/// An app with credentials and a notifier, ready to notify.
pub struct Tenant {
    pub app_id: String,
    pub notifier_id: String,
    key: p256::ecdsa::SigningKey,
    pub http: reqwest::Client,
    pub nodes: Vec<String>,
    /// The notifier reuses its tokens until `exp` (else one single-use token per request).
    pub token_reuse: bool,
}

impl Tenant {
    /// A fresh notifier JWT (its `jti` is single-use).
    pub fn jwt(&self) -> String {
        self.minter().jwt()
    }

    /// A token source that can move into a task.
    fn minter(&self) -> TenantJwt {
        self.minter_with(Arc::default())
    }

    /// A token source that hands out `presigned` tokens first.
    fn minter_with(&self, presigned: Presigned) -> TenantJwt {
        TenantJwt {
            key: self.key.clone(),
            iss: self.notifier_id.clone(),
            reuse: self.token_reuse,
            current: std::sync::Mutex::new(None),
            presigned,
        }
    }

    /// `n` single-use tokens signed now (none when tokens are reused): an
    /// auth server signs on its own machine, so the load generator signs
    /// before the load instead of beside the service during it (ES256 in
    /// pure Rust took ~400 µs of this machine's CPU a request, more than the
    /// service's own share). Each is valid for the notifier's longest
    /// lifetime (300 s); one too close to its end is not used.
    pub fn sign_ahead(&self, n: usize) -> Presigned {
        if self.token_reuse {
            return Arc::default();
        }
        let minter = self.minter();
        let tokens = (0..n).map(|_| minter.single_use(290)).collect();
        Arc::new(Mutex::new(tokens))
    }

    pub fn node(&self, i: usize) -> &str {
        &self.nodes[i % self.nodes.len()]
    }
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "setup call failed: {status} {body}");
    Ok(body)
}

/// Creates an app with the simulators' credentials and a notifier.
pub async fn tenant(service: &Service) -> anyhow::Result<Tenant> {
    tenant_with(service, false).await
}

/// Creates an app with the simulators' credentials and a notifier that reuses
/// its tokens (`token_reuse`) or not.
pub async fn tenant_with(service: &Service, token_reuse: bool) -> anyhow::Result<Tenant> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = &service.nodes[0].url;
    let app = admin(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/apps"),
        json!({"name": "bench"}),
    )
    .await?;
    let app_id = app["id"].as_str().unwrap_or_default().to_owned();
    admin(
        &http,
        reqwest::Method::PUT,
        format!("{base}/v1/apps/{app_id}/credentials/apns"),
        json!({"auth": "token", "team_id": TEAM, "key_id": KEY_ID, "private_key": service.p8,
            "topic": TOPIC, "environment": "production"}),
    )
    .await?;
    admin(
        &http,
        reqwest::Method::PUT,
        format!("{base}/v1/apps/{app_id}/credentials/fcm"),
        json!({"service_account": service.service_account}),
    )
    .await?;
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256",
        "x": b64.encode(point.x().map(|x| x.to_vec()).unwrap_or_default()),
        "y": b64.encode(point.y().map(|y| y.to_vec()).unwrap_or_default())});
    let mut body = json!({"name": "bench", "jwks": {"keys": [jwk]}, "scopes": ["notify"]});
    if token_reuse {
        // Only when asked: a service from before `token_reuse` refuses the field.
        body["token_reuse"] = json!(true);
    }
    let notifier = admin(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/apps/{app_id}/notifiers"),
        body,
    )
    .await?;
    Ok(Tenant {
        app_id,
        notifier_id: notifier["id"].as_str().unwrap_or_default().to_owned(),
        key,
        http,
        nodes: service.nodes.iter().map(|n| n.url.clone()).collect(),
        token_reuse,
    })
}

/// What kind of devices to register.
#[derive(Clone, Copy)]
pub enum Devices {
    /// Alternating APNs and FCM tokens.
    Mobile,
    /// Direct-channel desktops.
    Direct,
}

/// Registers `n` devices through the sdk-client (DPoP), `concurrency` at a time.
/// Returns the registrations (id, key) and the latency of the calls.
pub async fn register(
    tenant: &Tenant,
    n: usize,
    concurrency: usize,
    devices: Devices,
    label: &str,
) -> anyhow::Result<(Vec<(String, sdk_client::DeviceKey)>, Latency, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (next, done) = (next.clone(), done.clone());
        let node = tenant.node(worker).to_owned();
        let app = tenant.app_id.clone();
        let label = label.to_owned();
        tasks.push(tokio::spawn(async move {
            let key = sdk_client::DeviceKey::generate_p256();
            let client = sdk_client::Client::builder(&node, key.clone()).build()?;
            let mut out = Vec::new();
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let registration = match devices {
                    Devices::Mobile if i % 2 == 0 => {
                        sdk_client::NewRegistration::apns(&format!("a{:063x}", i), "ios")
                    }
                    Devices::Mobile => sdk_client::NewRegistration::fcm(
                        &format!("bench-{i:012}-{}", "f".repeat(40)),
                        "android",
                    ),
                    Devices::Direct => sdk_client::NewRegistration::direct("linux"),
                };
                let sent = Instant::now();
                let info = client.register(&app, &registration).await?;
                latencies.push(sent.elapsed());
                out.push((info.id, key.clone()));
                let count = done.fetch_add(1, Ordering::Relaxed) + 1;
                if count % 500 == 0 || count == n {
                    progress(&label, count, n);
                }
            }
            Ok::<_, anyhow::Error>((out, latencies))
        }));
    }
    let mut registrations = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        let (out, lat) = task.await??;
        registrations.extend(out);
        latencies.extend(lat);
    }
    Ok((
        registrations,
        Latency::of(latencies),
        start.elapsed().as_secs_f64(),
    ))
}

/// Per-second samples for the plot: accepted, delivered, accept p99 (ms).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timeline {
    pub accepted_per_second: Vec<usize>,
    pub delivered_per_second: Vec<usize>,
    pub accept_p99_ms: Vec<f64>,
}

/// Figures of a delivery scenario.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeliveryFigures {
    pub notifications: usize,
    pub accept_errors: usize,
    pub accepted_per_second: f64,
    pub accept_latency: Latency,
    pub delivered: usize,
    pub delivered_per_second: f64,
    pub end_to_end_latency: Latency,
    pub seconds: f64,
    /// Deliveries per second while the load ran.
    pub delivered_per_second_during_load: f64,
    /// Deliveries that happened after the last request was answered: the backlog.
    pub delivered_after_load: usize,
    /// From the last answered request to the last delivery.
    pub drain_seconds: f64,
    pub timeline: Timeline,
}

impl DeliveryFigures {
    /// Delivery kept pace with acceptance: what was left when the load stopped
    /// was at most one second of deliveries — drained within a second, or no
    /// more than the deliveries of one second during the load.
    pub fn kept_pace(&self) -> bool {
        self.drain_seconds <= 1.0
            || self.delivered_after_load as f64 <= self.delivered_per_second_during_load.max(1.0)
    }
}

/// Receipts at the simulators: (time ms, the `t` the bench put in the data).
fn receipts(service: &Service) -> Vec<(u128, Option<u128>)> {
    let mut all: Vec<(u128, Option<u128>)> = service
        .apns
        .receipts()
        .iter()
        .map(|r| (r.at, r.payload["t"].as_str().and_then(|t| t.parse().ok())))
        .collect();
    all.extend(service.fcm.receipts().iter().map(|r| {
        (
            r.at,
            r.message["data"]["t"].as_str().and_then(|t| t.parse().ok()),
        )
    }));
    all
}

/// Waits until the simulators hold `expected` more receipts than `before`, or `deadline`.
async fn wait_receipts(
    service: &Service,
    before: usize,
    expected: usize,
    deadline: Duration,
    label: &str,
) -> Vec<(u128, Option<u128>)> {
    let until = Instant::now() + deadline;
    // Counted while waiting, copied once at the end: copying a million
    // receipts under the simulators' lock every poll stalled the simulators
    // for seconds (and more as the receipts grew), which the figures then
    // blamed on the service.
    loop {
        let count = service.receipts();
        let got = count.saturating_sub(before);
        progress(label, got.min(expected), expected);
        if got >= expected || Instant::now() >= until {
            if got < expected {
                eprintln!();
            }
            return receipts(service).into_iter().skip(before).collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How `unicast` drives the load.
#[derive(Debug, Clone)]
pub struct Load {
    /// Notifications in all.
    pub count: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Paced to this many notifications per second (default: as fast as possible).
    pub rate: Option<f64>,
    /// Notifications per request: 1 posts to `/notifications`, more to `/notifications/batch`.
    pub batch: usize,
    /// Single-use tokens signed before the load ([`Tenant::sign_ahead`]);
    /// the requests sign their own when these run out.
    pub presigned: Presigned,
}

/// `load.count` notifications, each to one registration, `load.concurrency`
/// requests in flight (or paced to `load.rate` per second), one or a batch per request.
pub async fn unicast(
    service: &Service,
    tenant: &Tenant,
    targets: &[String],
    load: Load,
) -> anyhow::Result<DeliveryFigures> {
    let Load {
        count,
        concurrency,
        rate,
        batch,
        presigned,
    } = load;
    let batch = batch.max(1);
    let before = service.receipts();
    let next = Arc::new(AtomicUsize::new(0));
    let accepted: Arc<Mutex<Vec<(u128, Duration)>>> = Arc::default();
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let started_ms = now_ms();
    let targets = Arc::new(targets.to_vec());
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (next, accepted, errors, targets) = (
            next.clone(),
            accepted.clone(),
            errors.clone(),
            targets.clone(),
        );
        let http = reqwest::Client::builder().build()?;
        let url = format!(
            "{}/v1/apps/{}/notifications{}",
            tenant.node(worker),
            tenant.app_id,
            if batch > 1 { "/batch" } else { "" }
        );
        let tenant_jwt = tenant.minter_with(presigned.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= count {
                    break;
                }
                let last = (first + batch).min(count);
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(first as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = now_ms();
                let item = |i: usize| json!({"targets": {"registrations": [targets[i % targets.len()]]},
                    "notification": {"title": "bench", "body": "unicast"}, "data": {"t": t.to_string()}});
                let body = if batch > 1 {
                    json!({"notifications": (first..last).map(item).collect::<Vec<_>>()})
                } else {
                    item(first)
                };
                let sent = Instant::now();
                let response = http.post(&url).bearer_auth(tenant_jwt.jwt()).json(&body).send().await;
                let ok = match response {
                    Ok(r) if batch == 1 => usize::from(r.status() == reqwest::StatusCode::ACCEPTED),
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .map(|answer| {
                            answer["results"]
                                .as_array()
                                .map(|items| items.iter().filter(|i| i["status"] == 202).count())
                                .unwrap_or(0)
                        })
                        .unwrap_or(0),
                    _ => 0,
                };
                let latency = sent.elapsed();
                {
                    let mut accepted = accepted.lock().unwrap_or_else(|p| p.into_inner());
                    accepted.extend(std::iter::repeat_n((t, latency), ok));
                }
                errors.fetch_add(last - first - ok, Ordering::Relaxed);
                if first / 1000 != last / 1000 {
                    progress("accepting", last, count);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    progress("accepting", count, count);
    let accept_seconds = start.elapsed().as_secs_f64();
    let accepted = std::mem::take(&mut *accepted.lock().unwrap_or_else(|p| p.into_inner()));
    let ok = accepted.len();
    let deadline = Duration::from_secs(60 + (ok as u64) / 200);
    let delivered = wait_receipts(service, before, ok, deadline, "delivered").await;
    Ok(figures(
        started_ms,
        accept_seconds,
        count,
        errors.load(Ordering::Relaxed),
        &accepted,
        &delivered,
    ))
}

/// A notifier JWT minter that can move into a task: a single-use token per
/// call, or one token reused until ten minutes before its `exp` (50 minutes).
struct TenantJwt {
    key: p256::ecdsa::SigningKey,
    iss: String,
    reuse: bool,
    current: std::sync::Mutex<Option<(i64, String)>>,
    /// Single-use tokens signed before the load, with their `exp`.
    presigned: Presigned,
}

/// Tokens signed ahead, shared by the load's tasks: `(exp, token)`.
pub type Presigned = Arc<Mutex<Vec<(i64, String)>>>;

impl TenantJwt {
    fn jwt(&self) -> String {
        let now = crate::jws::now();
        if !self.reuse {
            let ahead = self
                .presigned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            return match ahead {
                Some((exp, token)) if exp > now + 30 => token,
                _ => self.single_use(120).1,
            };
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some((exp, token)) if *exp > now + 600 => token.clone(),
            _ => {
                let exp = now + 3000;
                let token = self.sign(now, exp, None);
                *current = Some((exp, token.clone()));
                token
            }
        }
    }

    /// A token with its own `jti`, valid for `seconds`: `(exp, token)`.
    fn single_use(&self, seconds: i64) -> (i64, String) {
        let now = crate::jws::now();
        let exp = now + seconds;
        let jti = format!("{:032x}", rand::random::<u128>());
        (exp, self.sign(now, exp, Some(jti)))
    }

    /// The notifier's ES256 token issued at `iat`, with a `jti` when single-use.
    fn sign(&self, iat: i64, exp: i64, jti: Option<String>) -> String {
        let mut claims = json!({"iss": self.iss, "aud": "push-bench", "iat": iat, "exp": exp,
            "scope": "notify"});
        if let Some(jti) = jti {
            claims["jti"] = json!(jti);
        }
        sign_es256(&self.key, &json!({"alg": "ES256", "kid": "bench"}), &claims)
    }
}

fn figures(
    started_ms: u128,
    accept_seconds: f64,
    count: usize,
    errors: usize,
    accepted: &[(u128, Duration)],
    delivered: &[(u128, Option<u128>)],
) -> DeliveryFigures {
    let last = delivered
        .iter()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(started_ms);
    let seconds = (last.saturating_sub(started_ms)) as f64 / 1000.0;
    let e2e: Vec<Duration> = delivered
        .iter()
        .filter_map(|(at, t)| t.map(|t| Duration::from_millis(at.saturating_sub(t) as u64)))
        .collect();
    let buckets = (seconds.ceil() as usize).max(1);
    let mut timeline = Timeline {
        accepted_per_second: vec![0; buckets],
        delivered_per_second: vec![0; buckets],
        accept_p99_ms: vec![0.0; buckets],
    };
    let mut per_second: Vec<Vec<Duration>> = vec![Vec::new(); buckets];
    for (t, latency) in accepted {
        let b = ((t.saturating_sub(started_ms)) / 1000) as usize;
        if b < buckets {
            timeline.accepted_per_second[b] += 1;
            per_second[b].push(*latency);
        }
    }
    for (at, _) in delivered {
        let b = ((at.saturating_sub(started_ms)) / 1000) as usize;
        if b < buckets {
            timeline.delivered_per_second[b] += 1;
        }
    }
    for (b, sample) in per_second.into_iter().enumerate() {
        timeline.accept_p99_ms[b] = Latency::of(sample).p99_ms;
    }
    let load_end = started_ms + (accept_seconds * 1000.0) as u128;
    let after_load = delivered.iter().filter(|(at, _)| *at > load_end).count();
    DeliveryFigures {
        delivered_per_second_during_load: (delivered.len() - after_load) as f64
            / accept_seconds.max(1e-9),
        delivered_after_load: after_load,
        drain_seconds: (last.saturating_sub(load_end)) as f64 / 1000.0,
        notifications: count,
        accept_errors: errors,
        accepted_per_second: accepted.len() as f64 / accept_seconds.max(1e-9),
        accept_latency: Latency::of(accepted.iter().map(|(_, l)| *l).collect()),
        delivered: delivered.len(),
        delivered_per_second: delivered.len() as f64 / seconds.max(1e-9),
        end_to_end_latency: Latency::of(e2e),
        seconds,
        timeline,
    }
}

/// One notification to the whole app; time until every registration reached a simulator.
pub async fn broadcast(
    service: &Service,
    tenant: &Tenant,
    registrations: usize,
) -> anyhow::Result<DeliveryFigures> {
    let before = service.receipts();
    let started_ms = now_ms();
    let start = Instant::now();
    let response = tenant
        .http
        .post(format!("{}/v1/apps/{}/notifications", tenant.node(0), tenant.app_id))
        .bearer_auth(tenant.jwt())
        .json(&json!({"targets": {"all": true}, "notification": {"title": "bench", "body": "broadcast"},
            "data": {"t": started_ms.to_string()}}))
        .send()
        .await?;
    let accept = start.elapsed();
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::ACCEPTED,
        "broadcast refused: {}",
        response.status()
    );
    let deadline = Duration::from_secs(120 + registrations as u64 / 500);
    let delivered = wait_receipts(service, before, registrations, deadline, "delivered").await;
    Ok(figures(
        started_ms,
        accept.as_secs_f64(),
        1,
        0,
        &[(started_ms, accept)],
        &delivered,
    ))
}

/// Figures of the direct-channel scenario.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirectFigures {
    pub connections: usize,
    pub connected: usize,
    pub rss_idle_mib: f64,
    pub rss_connected_mib: f64,
    pub kib_per_connection: f64,
    pub received: usize,
    pub fan_out: Latency,
    pub all_received_seconds: f64,
}

/// `k` idle SSE streams, then one notification to all of them.
pub async fn direct(service: &Service, tenant: &Tenant, k: usize) -> anyhow::Result<DirectFigures> {
    let (registrations, _, _) = register(tenant, k, 32, Devices::Direct, "registering").await?;
    let rss_idle = service.rss_mib().iter().sum::<f64>();
    let connected = Arc::new(AtomicUsize::new(0));
    let received: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let sent_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, (id, key)) in registrations.into_iter().enumerate() {
        let node = tenant.node(i).to_owned();
        let (connected, received, sent_at) = (connected.clone(), received.clone(), sent_at.clone());
        tasks.push(tokio::spawn(async move {
            let client = sdk_client::Client::builder(&node, key).build()?;
            let mut listener = client.listen(&id);
            connected.fetch_add(1, Ordering::Relaxed);
            let event = tokio::time::timeout(Duration::from_secs(120), listener.next()).await;
            if let Ok(Ok(_)) = event {
                let since = sent_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .map(|s| s.elapsed());
                if let Some(since) = since {
                    received
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(since);
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    // Give the streams time to open (the listener connects on its first `next`).
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics_url = format!("{}/metrics", tenant.node(0));
    loop {
        let open: f64 = tenant
            .http
            .get(&metrics_url)
            .send()
            .await?
            .text()
            .await?
            .lines()
            .find(|l| l.starts_with("push_direct_streams "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        progress("streams", open as usize, k / tenant.nodes.len().max(1));
        if open as usize >= k / tenant.nodes.len().max(1) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = service.rss_mib().iter().sum::<f64>();
    *sent_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let response = tenant
        .http
        .post(format!("{}/v1/apps/{}/notifications", tenant.node(0), tenant.app_id))
        .bearer_auth(tenant.jwt())
        .json(&json!({"targets": {"all": true}, "notification": {"title": "bench", "body": "direct"}}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::ACCEPTED,
        "notify refused"
    );
    for task in tasks {
        let _ = task.await;
    }
    let sample = std::mem::take(&mut *received.lock().unwrap_or_else(|p| p.into_inner()));
    let fan_out = Latency::of(sample.clone());
    Ok(DirectFigures {
        connections: k,
        connected: connected.load(Ordering::Relaxed),
        rss_idle_mib: rss_idle,
        rss_connected_mib: rss_connected,
        kib_per_connection: (rss_connected - rss_idle) * 1024.0 / k.max(1) as f64,
        received: sample.len(),
        all_received_seconds: fan_out.max_ms / 1000.0,
        fan_out,
    })
}
