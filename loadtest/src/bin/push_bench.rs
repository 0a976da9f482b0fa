//! `push-bench`: load scenarios against push-service and its simulators.
//! Today: `ceiling`, the HTTP/2 client stack straight to the simulators, no service
//! in between: the upper bound every service figure is compared with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use loadtest::apns::{ApnsConfig, ApnsKey, ApnsSimulator};
use loadtest::fcm::{FcmConfig, FcmSimulator};
use loadtest::jws::{now, sign_es256, sign_rs256};
use loadtest::tls::TestPki;
use serde_json::json;

#[derive(Parser)]
#[command(about = "push-service load generator")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Requests straight to in-process APNs and FCM simulators (no service).
    Ceiling {
        /// Requests per simulator.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// HTTP/2 connections (requests spread over them).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

/// Figures of one run.
#[derive(serde::Serialize)]
struct Figures {
    target: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Builds request number `i` on a client.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// Sends `requests` requests made by `make` with `concurrency` in flight over `clients`.
async fn drive(
    target: &'static str,
    clients: Vec<reqwest::Client>,
    requests: usize,
    concurrency: usize,
    make: MakeRequest,
) -> Figures {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = Arc::new(clients);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, clients, make) = (next.clone(), clients.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let client = &clients[i % clients.len()];
                let sent = Instant::now();
                match make(client, i).send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    Figures {
        target,
        requests,
        errors,
        seconds,
        per_second: latencies.len() as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0),
    }
}

fn h2_client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http2_prior_knowledge()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .tcp_nodelay(true)
        .build()?)
}

async fn ceiling(
    requests: usize,
    concurrency: usize,
    connections: usize,
) -> anyhow::Result<Vec<Figures>> {
    let pki = TestPki::generate()?;
    let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let apns = ApnsSimulator::start(
        ApnsConfig {
            keys: vec![ApnsKey {
                key_id: "KEY1234567".into(),
                team_id: "TEAM123456".into(),
                public: *signing.verifying_key(),
            }],
            topics: vec!["com.acme.bench".into()],
            max_concurrent_streams: 1000,
        },
        &pki,
        0,
    )
    .await?;
    let jwt = sign_es256(
        &signing,
        &json!({"alg": "ES256", "kid": "KEY1234567"}),
        &json!({"iss": "TEAM123456", "iat": now()}),
    );
    let clients = (0..connections)
        .map(|_| h2_client(&pki.ca_pem))
        .collect::<Result<Vec<_>, _>>()?;
    let url = apns.url.clone();
    let payload = json!({"aps": {"alert": {"title": "bench", "body": "ceiling"}}}).to_string();
    let apns_figures = drive(
        "apns-simulator",
        clients,
        requests,
        concurrency,
        Arc::new(move |client, i| {
            client
                .post(format!("{url}/3/device/{:064x}", i + 1))
                .header("authorization", format!("bearer {jwt}"))
                .header("apns-topic", "com.acme.bench")
                .header("apns-push-type", "alert")
                .body(payload.clone())
        }),
    )
    .await;

    let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
    let fcm = FcmSimulator::start(
        FcmConfig {
            project_id: "bench".into(),
            client_email: "bench@bench.iam.gserviceaccount.com".into(),
            public_key: rsa_key.to_public_key(),
            token_lifetime_seconds: 3599,
            quota_per_minute: u64::MAX / 2,
        },
        &pki,
        0,
    )
    .await?;
    let clients = (0..connections)
        .map(|_| h2_client(&pki.ca_pem))
        .collect::<Result<Vec<_>, _>>()?;
    let assertion = sign_rs256(
        &rsa_key,
        &json!({"alg": "RS256", "typ": "JWT"}),
        &json!({"iss": "bench@bench.iam.gserviceaccount.com", "aud": fcm.token_uri,
            "scope": "https://www.googleapis.com/auth/firebase.messaging", "iat": now(), "exp": now() + 3600}),
    );
    let token: serde_json::Value = clients[0]
        .post(&fcm.token_uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"))
        .send()
        .await?
        .json()
        .await?;
    let access = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = format!("{}/v1/projects/bench/messages:send", fcm.url);
    let fcm_figures = drive(
        "fcm-simulator",
        clients,
        requests,
        concurrency,
        Arc::new(move |client, i| {
            client
                .post(&url)
                .bearer_auth(&access)
                .json(&json!({"message": {
                "token": format!("bench-token-{i}"), "notification": {"title": "bench"}}}))
        }),
    )
    .await;
    Ok(vec![apns_figures, fcm_figures])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Ceiling {
            requests,
            concurrency,
            connections,
            json,
        } => {
            let figures = ceiling(requests, concurrency, connections).await?;
            println!(
                "| target | requests | errors | per second | p50 ms | p90 ms | p99 ms | max ms |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            for f in &figures {
                println!(
                    "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    f.target,
                    f.requests,
                    f.errors,
                    f.per_second,
                    f.p50_ms,
                    f.p90_ms,
                    f.p99_ms,
                    f.max_ms
                );
            }
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
            }
        }
    }
    Ok(())
}
