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
    /// Where the nodes' logs go (none: discarded).
    #[arg(skip)]
    pub log_dir: Option<std::path::PathBuf>,
}

/// A running service with its simulators.
pub struct Service {
    pub nodes: Vec<Node>,
    /// How each node was started, to start it again (same port, same settings).
    specs: Vec<NodeSpec>,
    /// The current process id of each node (for samplers running beside the scenario).
    pub pids: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    /// The database the nodes share (a fresh one on PostgreSQL).
    pub database_url: String,
    pub apns: ApnsSimulator,
    pub fcm: FcmSimulator,
    pub p8: String,
    pub service_account: serde_json::Value,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct NodeSpec {
    binary: std::path::PathBuf,
    url: String,
    env: Vec<(String, String)>,
    log: Option<std::path::PathBuf>,
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
    /// Requests the two simulators have taken so far: deliveries.
    pub fn receipts(&self) -> usize {
        self.apns.receipt_count() + self.fcm.receipt_count()
    }

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
                tokens_per_key: false,
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
        let mut specs = Vec::new();
        for i in 0..args.nodes.max(1) {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let data = dir.path().join(format!("node{i}"));
            let mut env: Vec<(String, String)> = [
                ("PUSH_LISTEN", format!("127.0.0.1:{port}")),
                ("PUSH_PUBLIC_URL", url.clone()),
                ("PUSH_DATA_DIR", data.display().to_string()),
                ("PUSH_DATABASE_URL", database.clone()),
                ("PUSH_REDIS_URL", redis.clone()),
                ("PUSH_REDIS_KEY_PREFIX", prefix.clone()),
                ("PUSH_ADMIN_TOKEN", ADMIN_TOKEN.into()),
                // Shared by every node: each must decrypt the credentials the others stored.
                ("PUSH_MASTER_KEY", master_key.clone()),
                ("PUSH_NOTIFIER_AUDIENCE", "push-bench".into()),
                ("PUSH_APNS_PRODUCTION_URL", apns.url.clone()),
                ("PUSH_APNS_SANDBOX_URL", apns.url.clone()),
                ("PUSH_FCM_URL", fcm.url.clone()),
                ("PUSH_PROVIDER_CA_FILE", ca.display().to_string()),
                // The FCM simulator's token endpoint is on loopback.
                ("PUSH_ALLOW_PRIVATE_FETCH", "true".into()),
                ("PUSH_FCM_TOKEN_URI_ALLOW", "https://127.0.0.1:".into()),
                // A load tool registers many devices and opens many streams per key.
                ("PUSH_MAX_REGISTRATIONS_PER_KEY", "0".into()),
                ("PUSH_MAX_STREAMS_PER_KEY", "0".into()),
                ("PUSH_MAX_CONNECTIONS", "100000".into()),
                ("PUSH_LOG_LEVEL", "warn".into()),
                ("PUSH_MAX_BODY_BYTES", "1048576".into()),
                // One notifier and one address drive all the load: the limits
                // would measure themselves. They stay on when --env sets them.
                ("PUSH_RATE_LIMIT_NOTIFIER_REQUESTS_PER_SECOND", "0".into()),
                (
                    "PUSH_RATE_LIMIT_NOTIFIER_NOTIFICATIONS_PER_SECOND",
                    "0".into(),
                ),
                ("PUSH_RATE_LIMIT_APP_NOTIFICATIONS_PER_SECOND", "0".into()),
                ("PUSH_RATE_LIMIT_ADDRESS_REQUESTS_PER_SECOND", "0".into()),
                ("PUSH_RATE_LIMIT_DEVICE_REQUESTS_PER_MINUTE", "0".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            env.extend(
                args.env
                    .iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
            specs.push(NodeSpec {
                binary: args.binary.clone(),
                url,
                env,
                log: args
                    .log_dir
                    .as_ref()
                    .map(|d| d.join(format!("node{i}.log"))),
            });
        }
        let mut nodes = Vec::new();
        for spec in &specs {
            nodes.push(spawn_node(spec).await?);
        }
        let pids = std::sync::Arc::new(std::sync::Mutex::new(
            nodes.iter().map(|n| n.child.id()).collect(),
        ));
        Ok(Service {
            nodes,
            specs,
            pids,
            database_url: database,
            apns,
            fcm,
            p8,
            service_account,
            _dir: dir,
        })
    }

    /// `kill -9` of node `i`: no shutdown, no drain.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let child = &mut self.nodes[i].child;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM to node `i`, then waits (at most `limit`) for it to drain and exit.
    /// Returns how long it took and whether it exited 0.
    pub async fn terminate(
        &mut self,
        i: usize,
        limit: Duration,
    ) -> anyhow::Result<(Duration, bool)> {
        let child = &mut self.nodes[i].child;
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        loop {
            if let Some(exit) = child.try_wait()? {
                return Ok((started.elapsed(), exit.success()));
            }
            if started.elapsed() > limit {
                child.kill()?;
                child.wait()?;
                return Ok((started.elapsed(), false));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts node `i` again with its first settings (after [`Service::kill`] or
    /// [`Service::terminate`]); returns once it is ready.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let node = spawn_node(&self.specs[i]).await?;
        self.pids.lock().unwrap_or_else(|p| p.into_inner())[i] = node.child.id();
        self.nodes[i] = node;
        Ok(())
    }

    /// SIGTERM to every node, each given `limit` to drain and exit.
    pub async fn terminate_all(&mut self, limit: Duration) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.terminate(i, limit).await?;
        }
        Ok(())
    }

    /// Starts every node again (after [`Service::terminate_all`]).
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.restart(i).await?;
        }
        Ok(())
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

/// Starts a node and waits for `/readyz`.
async fn spawn_node(spec: &NodeSpec) -> anyhow::Result<Node> {
    let started = Instant::now();
    let stderr = match &spec.log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(&spec.binary)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", spec.url)).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() >= deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{} never became ready", spec.url);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(Node {
        url: spec.url.clone(),
        child,
        ready_after: started.elapsed(),
    })
}

/// Runs `sql` on the database at `url` with psql; returns its unaligned output.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| super::cpu::process_times(&s))
        .map_or(0.0, |t| t.own)
}
