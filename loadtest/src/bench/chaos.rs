//! Fault scenarios on a three-node cluster (docs/RELIABILITY.md): PostgreSQL and Redis,
//! the APNs and FCM simulators, three push-service nodes; load through the real API by
//! a client that retries the way the API asks (`Retry-After`, another node, the same
//! `Idempotency-Key`); a fault in the middle; then every accepted notification is
//! looked for in the simulators' receipts. Every loop is bounded in count and time,
//! and everything started here is stopped here (nodes on drop, Redis by [`PrivateRedis`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::scenarios::{self, Devices, Tenant};
use super::service::{psql, rss_mib, Service, ServiceArgs, Store};
use super::Latency;
use crate::apns::ApnsFaults;
use crate::fcm::FcmFaults;

/// The faults of docs/RELIABILITY.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Fault {
    /// a. `kill -9` of one node in the middle of a whole-app fan-out.
    KillNode,
    /// b. Redis (no persistence) restarted under load.
    RedisRestart,
    /// c. APNs answers 503, then refuses connections, then recovers.
    ApnsOutage,
    /// d. PostgreSQL stopped under load, then started again.
    PostgresStop,
    /// e. Every node restarted in turn (SIGTERM) under load.
    RollingRestart,
    /// f. Both providers answer after 500 ms, load above what that allows.
    SlowProvider,
    /// g. APNs unreachable (connections refused) for 10 minutes under a steady
    /// load, then back: every delivery must arrive, the last within 10 s of the return.
    ApnsUnreachable,
}

/// Scenario g's bound: the last delivery within this long after APNs is back.
pub const RETURN_BOUND_SECONDS: f64 = 10.0;

impl Fault {
    /// The name on the command line (`kill-node`, …).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    #[arg(value_enum)]
    pub fault: Fault,
    /// The seconds-long version CI runs (small counts, short outages, short timers).
    #[arg(long)]
    pub short: bool,
    /// Registrations of the app (kill-node fans out to all of them).
    #[arg(long)]
    pub registrations: Option<usize>,
    /// Notifications per second the client offers (unicast, half APNs, half FCM).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the client offers load, in seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// How long the fault lasts, in seconds (apns-outage: half 503, half refused).
    #[arg(long)]
    pub outage_seconds: Option<f64>,
    /// Shell command that stops PostgreSQL (postgres-stop).
    #[arg(
        long,
        default_value = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main stop -m fast"
    )]
    pub pg_stop: String,
    /// Shell command that starts PostgreSQL again (postgres-stop).
    #[arg(
        long,
        default_value = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    )]
    pub pg_start: String,
    /// The push-service binary.
    #[arg(long, default_value = "target/release/push-service")]
    pub binary: std::path::PathBuf,
    /// Admin URL of the running PostgreSQL; a fresh database is made on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// The running Redis (redis-restart starts its own on a free port instead).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}

/// The line of figures every scenario ends with.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChaosFigures {
    pub fault: String,
    /// Notifications answered 202 (each counted once, whatever the retries).
    pub accepted: usize,
    /// (notification, device) pairs expected at the simulators.
    pub expected_deliveries: usize,
    /// Expected pairs that arrived at least once.
    pub delivered: usize,
    /// Expected pairs that never arrived before the drain deadline.
    pub lost: usize,
    /// Receipts beyond the first for the same pair.
    pub duplicates: usize,
    /// The same, by provider.
    pub duplicates_by_provider: BTreeMap<String, usize>,
    /// Receipts for notifications the client never saw accepted.
    pub unacknowledged_deliveries: usize,
    /// Notifications the client gave up on (after retrying for `give_up_seconds`).
    pub failed_requests: usize,
    /// Responses 500 or any 5xx other than 503: each one is a defect.
    pub server_errors: usize,
    /// Every answer the client got, by status ("conn" for no answer).
    pub responses: BTreeMap<String, usize>,
    /// `429`/`503` answers without a usable `Retry-After`: each one breaks the contract.
    pub missing_retry_after: usize,
    /// Latency of the requests answered 202.
    pub accept_latency: Latency,
    /// Peak resident memory of each node (MiB), sampled every 250 ms across restarts.
    pub peak_rss_mib: Vec<f64>,
    /// From the first request to the last receipt (or the drain deadline).
    pub seconds: f64,
    /// What happened when (seconds since the start).
    pub events: Vec<String>,
    /// Node settings the run used beyond the defaults.
    pub settings: Vec<String>,
    /// Up to 20 lost (notification tag, token) pairs, to look up in the store.
    pub lost_sample: Vec<(String, String)>,
    /// The database of the run (left in place for inspection).
    pub database: String,
    /// Scenario g: seconds from the provider's return to the last delivery.
    pub last_delivery_after_return_s: Option<f64>,
}

impl ChaosFigures {
    /// The one-line summary.
    pub fn line(&self) -> String {
        format!(
            "{}: accepted {} · expected {} · delivered {} · lost {} · duplicates {} · \
             unacknowledged {} · failed requests {} · 5xx (not 503) {} · \
             429/503 without Retry-After {} · accept p99 {:.1} ms · peak RSS MiB {} · {:.1} s{}",
            self.fault,
            self.accepted,
            self.expected_deliveries,
            self.delivered,
            self.lost,
            self.duplicates,
            self.unacknowledged_deliveries,
            self.failed_requests,
            self.server_errors,
            self.missing_retry_after,
            self.accept_latency.p99_ms,
            self.peak_rss_mib
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join("/"),
            self.seconds,
            self.last_delivery_after_return_s
                .map(|s| format!(" · last delivery {s:.1} s after APNs was back"))
                .unwrap_or_default()
        )
    }

    /// Whether the run kept the promise: nothing lost, no 500, every "retry
    /// later" saying when.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.server_errors == 0
            && self.failed_requests == 0
            && self.missing_retry_after == 0
            && self
                .last_delivery_after_return_s
                .is_none_or(|s| s <= RETURN_BOUND_SECONDS)
    }
}

/// Seeded registration `g`: its id and provider token (even: APNs, odd: FCM).
fn seeded(g: usize) -> (String, String) {
    let token = if g % 2 == 0 {
        format!("{g:064x}")
    } else {
        format!("seed-{g:012}-{}", "f".repeat(40))
    };
    (format!("reg_seed{g:09}"), token)
}

/// Registers one APNs and one FCM device through the API (so the rows are what the
/// service writes), then copies them in SQL to `n` more (`seeded(0..n)`): registering
/// 100,000 devices through DPoP would take minutes and prove nothing new here.
/// On PostgreSQL through `psql`, on SQLite through `sqlite3`.
pub async fn seed_registrations(
    service: &Service,
    tenant: &Tenant,
    n: usize,
) -> anyhow::Result<()> {
    scenarios::register(tenant, 2, 1, Devices::Mobile, "templates").await?;
    let app = &tenant.app_id;
    let last = n.saturating_sub(1);
    let columns = "INSERT INTO registrations (id, app_id, provider, token, environment, platform, \
                   key_thumbprint, encryption_jwk, status, created_at, updated_at)";
    let copy = "t.environment, t.platform, t.key_thumbprint, t.encryption_jwk, 'active', \
                t.created_at, t.updated_at";
    if let Some(path) = service.database_url.strip_prefix("sqlite://") {
        let sql = format!(
            "WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < {last}) \
             {columns} SELECT 'reg_seed' || printf('%09d', x), t.app_id, t.provider, \
               CASE WHEN t.provider = 'apns' THEN printf('%064x', x) \
                    ELSE 'seed-' || printf('%012d', x) || '-' || '{f}' END, {copy} \
             FROM g JOIN registrations t ON t.app_id = '{app}' AND t.id NOT LIKE 'reg_seed%' \
               AND t.provider = CASE WHEN x % 2 = 0 THEN 'apns' ELSE 'fcm' END;",
            f = "f".repeat(40)
        );
        let output = std::process::Command::new("sqlite3")
            .args(["-cmd", ".timeout 30000", path, &sql])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "sqlite3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return Ok(());
    }
    psql(
        &service.database_url,
        &format!(
            "{columns} SELECT 'reg_seed' || lpad(g::text, 9, '0'), t.app_id, t.provider, \
               CASE WHEN t.provider = 'apns' THEN lpad(to_hex(g), 64, '0') \
                    ELSE 'seed-' || lpad(g::text, 12, '0') || '-' || repeat('f', 40) END, {copy} \
             FROM generate_series(0, {last}) g \
             JOIN registrations t ON t.app_id = '{app}' AND t.id NOT LIKE 'reg_seed%' \
               AND t.provider = CASE WHEN g % 2 = 0 THEN 'apns' ELSE 'fcm' END"
        ),
    )?;
    Ok(())
}

/// The tokens of every active registration of the app.
fn active_tokens(service: &Service, app: &str) -> anyhow::Result<Vec<String>> {
    Ok(psql(
        &service.database_url,
        &format!("SELECT token FROM registrations WHERE app_id = '{app}' AND status = 'active'"),
    )?
    .lines()
    .map(str::to_owned)
    .collect())
}

/// What the client saw.
#[derive(Default)]
struct ClientLog {
    /// Notification tag → accepted.
    accepted: HashSet<String>,
    /// When each tag was accepted (ms since the epoch).
    accepted_at: HashMap<String, u128>,
    responses: BTreeMap<String, usize>,
    missing_retry_after: usize,
    latencies: Vec<Duration>,
    failed: usize,
}

/// A client that retries like the API asks: on 429/503 after `Retry-After`, on a
/// dropped connection or another 5xx at the next node, always with the same
/// `Idempotency-Key`, for at most `give_up` per notification.
#[derive(Clone)]
struct Client {
    tenant: Arc<Tenant>,
    http: reqwest::Client,
    log: Arc<Mutex<ClientLog>>,
    give_up: Duration,
    run: String,
}

impl Client {
    async fn send(&self, tag: String, targets: Value, first_node: usize) {
        let started = Instant::now();
        let body = json!({"targets": targets, "notification": {"title": "chaos", "body": tag},
            "data": {"n": tag}});
        let mut node = first_node;
        loop {
            let url = format!(
                "{}/v1/apps/{}/notifications",
                self.tenant.node(node),
                self.tenant.app_id
            );
            let sent = Instant::now();
            let answer = self
                .http
                .post(&url)
                .bearer_auth(self.tenant.jwt())
                .header("Idempotency-Key", format!("{}-{tag}", self.run))
                .json(&body)
                .send()
                .await;
            let elapsed = sent.elapsed();
            let (status, wait) = match &answer {
                Ok(r) => {
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    (r.status().as_u16().to_string(), retry_after)
                }
                Err(_) => ("conn".to_owned(), None),
            };
            {
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                *log.responses.entry(status.clone()).or_default() += 1;
                if matches!(status.as_str(), "429" | "503") && wait.is_none() {
                    log.missing_retry_after += 1;
                }
                match status.as_str() {
                    "202" => {
                        log.latencies.push(elapsed);
                        log.accepted_at.insert(tag.clone(), super::now_ms());
                        log.accepted.insert(tag);
                        return;
                    }
                    // Outages: retry (429/503 after Retry-After, the rest at once elsewhere).
                    "429" | "503" | "conn" | "408" => {}
                    s if s.starts_with('5') => {}
                    _ => {
                        // A 4xx other than 408/429 is an answer, not an outage: no retry.
                        log.failed += 1;
                        return;
                    }
                }
            }
            if started.elapsed() >= self.give_up {
                self.log.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
                return;
            }
            let pause = match wait {
                Some(seconds) => Duration::from_secs(seconds.min(10)),
                None => Duration::from_millis(200),
            };
            tokio::time::sleep(pause).await;
            node += 1;
        }
    }
}

/// Offers `rate` unicast notifications per second for `seconds`, spread over the nodes,
/// targets cycling over the first `targets` seeded registrations. Returns when every
/// notification is accepted or given up; `expected` gets (tag, token) of each one sent.
async fn offer_load(
    client: Client,
    rate: f64,
    seconds: f64,
    targets: usize,
    expected: Arc<Mutex<HashMap<String, Vec<String>>>>,
) {
    let count = (rate * seconds).round() as usize;
    let start = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (id, token) = seeded(i % targets);
        let tag = format!("u{i}");
        expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag.clone(), vec![token]);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.send(tag, json!({"registrations": [id]}), i).await;
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Peak RSS of each node, sampled until `stop`.
fn sample_rss(
    pids: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut peak: Vec<f64> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now: Vec<u32> = pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
            peak.resize(now.len(), 0.0);
            for (i, pid) in now.iter().enumerate() {
                peak[i] = peak[i].max(rss_mib(*pid));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        peak
    })
}

/// A Redis of our own on a free port, so restarting it disturbs nothing else.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut redis = PrivateRedis {
            port,
            child: None,
            dir: tempfile::tempdir()?,
        };
        redis.spawn()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("redis-server did not start on port {}", self.port)
    }

    /// SIGKILL: nothing kept, as with no persistence.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs its command when done with, or on drop if nobody did.
struct Restart(Option<String>);

impl Restart {
    fn now(mut self) -> anyhow::Result<()> {
        match self.0.take() {
            Some(command) => shell(&command),
            None => Ok(()),
        }
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(command) = self.0.take() {
            let _ = shell(&command);
        }
    }
}

fn shell(command: &str) -> anyhow::Result<()> {
    let status = Command::new("sh").args(["-c", command]).status()?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    Ok(())
}

/// Scenario parameters after defaults (full or short).
struct Plan {
    registrations: usize,
    rate: f64,
    seconds: f64,
    outage: f64,
    /// When the fault starts, seconds after the load.
    fault_at: f64,
    /// How long to wait for the last receipts after the load.
    drain: Duration,
    settings: Vec<String>,
}

fn plan(args: &ChaosArgs) -> Plan {
    let short = args.short;
    // Timers shortened so that a take-over (visibility) and a re-drive (sweep) happen
    // within the run; retries keep their default schedule in full runs.
    let mut settings = vec![
        format!(
            "PUSH_QUEUE_VISIBILITY_SECONDS={}",
            if short { 3 } else { 10 }
        ),
        format!("PUSH_REDRIVE_AFTER_SECONDS={}", if short { 5 } else { 15 }),
        format!(
            "PUSH_PROVIDER_TIMEOUT_SECONDS={}",
            if short { 2 } else { 5 }
        ),
        "PUSH_SWEEP_INTERVAL_SECONDS=1".to_owned(),
        "PUSH_SHUTDOWN_GRACE_SECONDS=10".to_owned(),
    ];
    if short {
        settings.push("PUSH_RETRY_BASE_MS=200".into());
    }
    let (registrations, rate, seconds, outage, fault_at) = match (args.fault, short) {
        (Fault::KillNode, false) => (100_000, 0.0, 0.0, 0.0, 0.0),
        (Fault::KillNode, true) => (2_000, 0.0, 0.0, 0.0, 0.0),
        (Fault::ApnsOutage, false) => (1_000, 100.0, 70.0, 40.0, 10.0),
        (Fault::ApnsOutage, true) => (100, 40.0, 8.0, 4.0, 2.0),
        (Fault::PostgresStop, false) => (1_000, 100.0, 50.0, 20.0, 10.0),
        (Fault::PostgresStop, true) => (100, 40.0, 8.0, 3.0, 2.0),
        (Fault::RedisRestart, false) => (1_000, 100.0, 40.0, 2.0, 15.0),
        (Fault::RedisRestart, true) => (100, 40.0, 8.0, 1.0, 3.0),
        (Fault::RollingRestart, false) => (1_000, 100.0, 60.0, 0.0, 10.0),
        (Fault::RollingRestart, true) => (100, 40.0, 12.0, 0.0, 2.0),
        (Fault::SlowProvider, false) => (1_000, 300.0, 40.0, 0.0, 0.0),
        (Fault::SlowProvider, true) => (100, 150.0, 8.0, 0.0, 0.0),
        // Load from before the outage to 20 s after it.
        (Fault::ApnsUnreachable, false) => (1_000, 20.0, 630.0, 600.0, 10.0),
        (Fault::ApnsUnreachable, true) => (100, 20.0, 30.0, 20.0, 3.0),
    };
    if args.fault == Fault::SlowProvider {
        settings.push(format!(
            "PUSH_MAX_QUEUE_DEPTH={}",
            if short { 200 } else { 1000 }
        ));
    }
    let drain = match (args.fault, short) {
        (_, true) => Duration::from_secs(60),
        // Retries of a 40 s outage back off 1, 2, 4, … 64 s.
        (Fault::ApnsOutage, false) => Duration::from_secs(240),
        _ => Duration::from_secs(180),
    };
    Plan {
        registrations: args.registrations.unwrap_or(registrations),
        rate: args.rate.unwrap_or(rate),
        seconds: args.seconds.unwrap_or(seconds),
        outage: args.outage_seconds.unwrap_or(outage),
        fault_at,
        drain,
        settings,
    }
}

/// Runs one scenario and returns its figures.
pub async fn run(args: &ChaosArgs, log_dir: &std::path::Path) -> anyhow::Result<ChaosFigures> {
    let plan = plan(args);
    std::fs::create_dir_all(log_dir)?;
    let mut private_redis = if args.fault == Fault::RedisRestart {
        Some(PrivateRedis::start()?)
    } else {
        None
    };
    let service_args = ServiceArgs {
        binary: args.binary.clone(),
        store: Store::Postgres,
        database_url: args.database_url.clone(),
        redis_url: private_redis
            .as_ref()
            .map(PrivateRedis::url)
            .unwrap_or_else(|| args.redis_url.clone()),
        nodes: 3,
        env: plan.settings.clone(),
        log_dir: Some(log_dir.to_owned()),
    };
    let mut service = Service::start(&service_args).await?;
    let tenant = Arc::new(scenarios::tenant(&service).await?);
    seed_registrations(&service, &tenant, plan.registrations).await?;

    let log = Arc::new(Mutex::new(ClientLog::default()));
    let client = Client {
        tenant: tenant.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(64)
            .build()?,
        log: log.clone(),
        give_up: Duration::from_secs(if args.short { 30 } else { 120 }),
        run: format!("{:08x}", rand::random::<u32>()),
    };
    let expected: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(service.pids.clone(), stop_sampling.clone());
    let start = Instant::now();
    let mut events = Vec::new();
    let mut apns_back_ms = None;
    let at = |start: Instant| format!("{:>6.1} s", start.elapsed().as_secs_f64());
    if args.fault == Fault::SlowProvider {
        slow_providers(&service, 500);
        events.push(format!(
            "{} APNs and FCM answer after 500 ms from now on",
            at(start)
        ));
    }

    if args.fault == Fault::KillNode {
        // One notification to the whole app; kill -9 a node once a fifth has arrived.
        let tokens = active_tokens(&service, &tenant.app_id)?;
        let total = tokens.len();
        expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert("all".into(), tokens);
        client.send("all".into(), json!({"all": true}), 0).await;
        events.push(format!("{} fan-out to {total} accepted", at(start)));
        let until = Instant::now() + Duration::from_secs(120);
        while service.receipts() < total / 5 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let victim = 1;
        service.kill(victim)?;
        events.push(format!(
            "{} kill -9 node {victim} at {} of {total} delivered",
            at(start),
            service.receipts()
        ));
    } else {
        let load = tokio::spawn(offer_load(
            client.clone(),
            plan.rate,
            plan.seconds,
            plan.registrations,
            expected.clone(),
        ));
        events.push(format!(
            "{} load: {} notifications/s for {} s",
            at(start),
            plan.rate,
            plan.seconds
        ));
        tokio::time::sleep(Duration::from_secs_f64(plan.fault_at)).await;
        match args.fault {
            Fault::KillNode => unreachable!("handled above"),
            Fault::RedisRestart => {
                if let Some(redis) = private_redis.as_mut() {
                    redis.stop();
                    events.push(format!("{} Redis killed (no persistence)", at(start)));
                    tokio::time::sleep(Duration::from_secs_f64(plan.outage)).await;
                    redis.spawn()?;
                    events.push(format!("{} Redis started, empty", at(start)));
                }
            }
            Fault::ApnsOutage => {
                let half = plan.outage / 2.0;
                service.apns.set_faults(ApnsFaults {
                    unavailable_until_ms: super::now_ms() + (half * 1000.0) as u128,
                    ..Default::default()
                });
                events.push(format!("{} APNs answers 503 for {half} s", at(start)));
                tokio::time::sleep(Duration::from_secs_f64(half)).await;
                service.apns.set_down(true);
                events.push(format!(
                    "{} APNs refuses connections for {half} s",
                    at(start)
                ));
                tokio::time::sleep(Duration::from_secs_f64(half)).await;
                service.apns.set_down(false);
                apns_back_ms = Some(super::now_ms());
                events.push(format!("{} APNs back", at(start)));
            }
            Fault::PostgresStop => {
                // Started again even if this run fails half-way.
                let stopped = Restart(Some(args.pg_start.clone()));
                shell(&args.pg_stop)?;
                events.push(format!("{} PostgreSQL stopped", at(start)));
                tokio::time::sleep(Duration::from_secs_f64(plan.outage)).await;
                stopped.now()?;
                events.push(format!("{} PostgreSQL started", at(start)));
            }
            Fault::RollingRestart => {
                for i in 0..service.nodes.len() {
                    let (took, clean) = service.terminate(i, Duration::from_secs(30)).await?;
                    events.push(format!(
                        "{} node {i} SIGTERM: exited {} after {:.1} s",
                        at(start),
                        if clean { "0" } else { "non-zero or killed" },
                        took.as_secs_f64()
                    ));
                    service.restart(i).await?;
                    events.push(format!("{} node {i} ready again", at(start)));
                    tokio::time::sleep(Duration::from_secs(if args.short { 1 } else { 5 })).await;
                }
            }
            Fault::SlowProvider => {}
            Fault::ApnsUnreachable => {
                service.apns.set_down(true);
                events.push(format!(
                    "{} APNs refuses connections for {} s",
                    at(start),
                    plan.outage
                ));
                tokio::time::sleep(Duration::from_secs_f64(plan.outage)).await;
                service.apns.set_down(false);
                apns_back_ms = Some(super::now_ms());
                events.push(format!("{} APNs back", at(start)));
            }
        }
        load.await?;
        events.push(format!("{} load finished", at(start)));
    }

    // Drain: wait until every expected pair arrived, or the deadline.
    let expected = std::mem::take(&mut *expected.lock().unwrap_or_else(|p| p.into_inner()));
    let accepted_tags = log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .accepted
        .clone();
    let wanted: usize = expected
        .iter()
        .filter(|(tag, _)| accepted_tags.contains(*tag))
        .map(|(_, tokens)| tokens.len())
        .sum();
    let until = Instant::now() + plan.drain;
    let mut last_count = 0;
    while Instant::now() < until {
        let count = service.receipts();
        if count >= wanted && count == last_count {
            break;
        }
        last_count = count;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A little longer, for late duplicates.
    tokio::time::sleep(Duration::from_secs(2)).await;
    events.push(format!(
        "{} drained ({} receipts)",
        at(start),
        service.receipts()
    ));
    stop_sampling.store(true, Ordering::Relaxed);
    let peak_rss_mib = sampler.await.unwrap_or_default();

    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut last_at = 0u128;
    for r in service.apns.receipts() {
        if let Some(tag) = r.payload["n"].as_str() {
            *seen.entry((tag.to_owned(), r.token)).or_default() += 1;
            last_at = last_at.max(r.at);
        }
    }
    for r in service.fcm.receipts() {
        if let Some(tag) = r.message["data"]["n"].as_str() {
            *seen.entry((tag.to_owned(), r.token)).or_default() += 1;
            last_at = last_at.max(r.at);
        }
    }
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    let mut figures = ChaosFigures {
        fault: args.fault.name(),
        accepted: log.accepted.len(),
        failed_requests: log.failed,
        responses: log.responses.clone(),
        missing_retry_after: log.missing_retry_after,
        server_errors: log
            .responses
            .iter()
            .filter(|(s, _)| s.starts_with('5') && s.as_str() != "503")
            .map(|(_, n)| n)
            .sum(),
        accept_latency: Latency::of(log.latencies.clone()),
        peak_rss_mib,
        seconds: start.elapsed().as_secs_f64(),
        events,
        settings: plan.settings.clone(),
        database: service.database_url.clone(),
        ..Default::default()
    };
    for (tag, tokens) in &expected {
        if !log.accepted.contains(tag) {
            continue;
        }
        for token in tokens {
            figures.expected_deliveries += 1;
            match seen.get(&(tag.clone(), token.clone())) {
                Some(n) => {
                    figures.delivered += 1;
                    figures.duplicates += n - 1;
                    if *n > 1 {
                        let provider = if token.starts_with("seed-") {
                            "fcm"
                        } else {
                            "apns"
                        };
                        *figures
                            .duplicates_by_provider
                            .entry(provider.into())
                            .or_default() += n - 1;
                    }
                }
                None => {
                    figures.lost += 1;
                    if figures.lost_sample.len() < 20 {
                        figures.lost_sample.push((tag.clone(), token.clone()));
                    }
                }
            }
        }
    }
    if let Some(back) = apns_back_ms {
        // The backlog: APNs deliveries of notifications accepted before the return.
        let backlog_done = service
            .apns
            .receipts()
            .iter()
            .filter(|r| {
                r.payload["n"]
                    .as_str()
                    .and_then(|tag| log.accepted_at.get(tag))
                    .is_some_and(|accepted| *accepted < back)
            })
            .map(|r| r.at)
            .max()
            .unwrap_or(back);
        figures.last_delivery_after_return_s =
            Some(backlog_done.saturating_sub(back) as f64 / 1000.0);
    }
    figures.unacknowledged_deliveries = seen
        .keys()
        .filter(|(tag, _)| !log.accepted.contains(tag))
        .count();
    Ok(figures)
}

/// Applies the slow-provider latency (both simulators) before the load starts.
fn slow_providers(service: &Service, latency_ms: u64) {
    service.apns.set_faults(ApnsFaults {
        latency_ms,
        ..Default::default()
    });
    service.fcm.set_faults(FcmFaults {
        latency_ms,
        ..Default::default()
    });
}
