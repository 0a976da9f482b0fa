//! The service under test: simulators in-process, push-service as a child process
//! configured to use them, and its resident memory and CPU read from /proc.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::apns::{ApnsConfig, ApnsKey, ApnsSimulator};
use crate::fcm::{FcmConfig, FcmSimulator};
use crate::tls::TestPki;

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
pub const TEAM: &str = "TEAM123456";
pub const KEY_ID: &str = "KEY1234567";
pub const TOPIC: &str = "com.acme.bench";
pub const PROJECT: &str = "bench-push";
pub const CLIENT_EMAIL: &str = "bench@bench-push.iam.gserviceaccount.com";

/// Where the store lives.
#[derive(Debug, Clone, clap::ValueEnum, serde::Serialize)]
pub enum Store {
    /// The embedded default: SQLite, in-process queue.
    Sqlite,
    /// PostgreSQL + Redis (URLs from --database-url / --redis-url).
    Postgres,
}

/// How to start the service under test.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The push-service binary (build it with `cargo build --release -p push-service`).
    #[arg(long, default_value = "target/release/push-service")]
    pub binary: std::path::PathBuf,
    #[arg(long, value_enum, default_value = "sqlite")]
    pub store: Store,
    /// Admin URL of a PostgreSQL server; a fresh database is created on it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Nodes to start (they share the store; requests are spread over them).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Extra PUSH_* settings for the nodes, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
}

/// A running service with its simulators.
pub struct Service {
    pub nodes: Vec<Node>,
    pub apns: ApnsSimulator,
    pub fcm: FcmSimulator,
    pub p8: String,
    pub service_account: serde_json::Value,
    _dir: tempfile::TempDir,
}

pub struct Node {
    pub url: String,
    pub child: Child,
    /// Spawn → /readyz answering 200.
    pub ready_after: Duration,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Service {
    pub async fn start(args: &ServiceArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.binary.exists(),
            "{} not found: run `cargo build --release -p push-service` first",
            args.binary.display()
        );
        let dir = tempfile::tempdir()?;
        let pki = TestPki::generate()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem)?;
        let p8_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let p8 = {
            use p256::pkcs8::{EncodePrivateKey, LineEnding};
            p8_key.to_pkcs8_pem(LineEnding::LF)?.to_string()
        };
        let apns = ApnsSimulator::start(
            ApnsConfig {
                keys: vec![ApnsKey {
                    key_id: KEY_ID.into(),
                    team_id: TEAM.into(),
                    public: p256::ecdsa::VerifyingKey::from(p8_key.public_key()),
                }],
                topics: vec![TOPIC.into()],
                max_concurrent_streams: 1000,
            },
            &pki,
            0,
        )
        .await?;
        let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
        let fcm = FcmSimulator::start(
            FcmConfig {
                project_id: PROJECT.into(),
                client_email: CLIENT_EMAIL.into(),
                public_key: rsa_key.to_public_key(),
                token_lifetime_seconds: 3599,
                quota_per_minute: 600_000_000,
            },
            &pki,
            0,
        )
        .await?;
        let service_account = {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            serde_json::json!({
                "type": "service_account", "project_id": PROJECT, "private_key_id": "bench",
                "private_key": rsa_key.to_pkcs8_pem(LineEnding::LF)?.to_string(),
                "client_email": CLIENT_EMAIL, "token_uri": fcm.token_uri,
            })
        };
        let (database, redis) = match args.store {
            Store::Sqlite => (
                format!("sqlite://{}", dir.path().join("push.db").display()),
                String::new(),
            ),
            Store::Postgres => (fresh_database(&args.database_url)?, args.redis_url.clone()),
        };
        let prefix = format!("bench:{}:", rand::random::<u32>());
        let master_key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        };
        let mut nodes = Vec::new();
        for i in 0..args.nodes.max(1) {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let data = dir.path().join(format!("node{i}"));
            let started = Instant::now();
            let child = Command::new(&args.binary)
                .env_clear()
                .env("PUSH_LISTEN", format!("127.0.0.1:{port}"))
                .env("PUSH_PUBLIC_URL", &url)
                .env("PUSH_DATA_DIR", &data)
                .env("PUSH_DATABASE_URL", &database)
                .env("PUSH_REDIS_URL", &redis)
                .env("PUSH_REDIS_KEY_PREFIX", &prefix)
                .env("PUSH_ADMIN_TOKEN", ADMIN_TOKEN)
                // Shared by every node: each must decrypt the credentials the others stored.
                .env("PUSH_MASTER_KEY", &master_key)
                .env("PUSH_NOTIFIER_AUDIENCE", "push-bench")
                .env("PUSH_APNS_PRODUCTION_URL", &apns.url)
                .env("PUSH_APNS_SANDBOX_URL", &apns.url)
                .env("PUSH_FCM_URL", &fcm.url)
                .env("PUSH_PROVIDER_CA_FILE", &ca)
                .env("PUSH_LOG_LEVEL", "warn")
                .env("PUSH_MAX_BODY_BYTES", "1048576")
                // One notifier and one address drive all the load: the limits
                // would measure themselves. They stay on when --env sets them.
                .env("PUSH_RATE_LIMIT_NOTIFIER_REQUESTS_PER_SECOND", "0")
                .env("PUSH_RATE_LIMIT_NOTIFIER_NOTIFICATIONS_PER_SECOND", "0")
                .env("PUSH_RATE_LIMIT_APP_NOTIFICATIONS_PER_SECOND", "0")
                .env("PUSH_RATE_LIMIT_ADDRESS_REQUESTS_PER_SECOND", "0")
                .env("PUSH_RATE_LIMIT_DEVICE_REQUESTS_PER_MINUTE", "0")
                .envs(args.env.iter().filter_map(|kv| kv.split_once('=')))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                    if r.status().is_success() {
                        break;
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "{url} never became ready");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            nodes.push(Node {
                url,
                child,
                ready_after: started.elapsed(),
            });
        }
        Ok(Service {
            nodes,
            apns,
            fcm,
            p8,
            service_account,
            _dir: dir,
        })
    }

    /// Resident memory of each node, in MiB.
    pub fn rss_mib(&self) -> Vec<f64> {
        self.nodes.iter().map(|n| rss_mib(n.child.id())).collect()
    }

    /// CPU seconds (user + system) each node has used.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        self.nodes
            .iter()
            .map(|n| cpu_seconds(n.child.id()))
            .collect()
    }
}

/// A fresh database on the server of `admin_url`, via psql.
fn fresh_database(admin_url: &str) -> anyhow::Result<String> {
    let name = format!("pushbench_{}_{}", crate::jws::now(), rand::random::<u32>());
    let status = Command::new("psql")
        .arg(admin_url)
        .arg("-qc")
        .arg(format!("CREATE DATABASE \"{name}\""))
        .status()?;
    anyhow::ensure!(status.success(), "cannot create database {name}");
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(&name);
    Ok(url.to_string())
}

pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}
