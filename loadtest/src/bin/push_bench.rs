//! `push-bench`: load scenarios against push-service and its simulators.
//!
//! Every scenario starts the APNs and FCM simulators in-process and the
//! push-service binary as a child (SQLite, or PostgreSQL + Redis), sets up an
//! app, credentials, a notifier and registrations through the real API, then
//! measures. `ceiling` runs the same HTTP/2 client stack straight to the
//! simulators, so service figures can be read as a share of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use loadtest::apns::{ApnsConfig, ApnsKey, ApnsSimulator};
use loadtest::bench::scenarios::{self, Devices};
use loadtest::bench::service::{Service, ServiceArgs};
use loadtest::bench::{cost, cpu, profile, report, Latency};
use loadtest::fcm::{FcmConfig, FcmSimulator};
use loadtest::jws::{now, sign_es256, sign_rs256};
use loadtest::tls::TestPki;
use serde_json::json;

#[derive(Parser)]
#[command(about = "push-service load generator")]
struct Cli {
    /// Directory for the JSON figures, the markdown summary and the plots.
    #[arg(long, global = true, default_value = "bench-results")]
    out: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Requests straight to the simulators (no service): the ceiling.
    Ceiling {
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Notifications to single registrations (half APNs, half FCM), one per request.
    Unicast {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        load: UnicastArgs,
    },
    /// The same notifications, `--batch-size` per request to the batch endpoint.
    Batch {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        load: UnicastArgs,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
    },
    /// One notification to a whole app of N registrations.
    Broadcast {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(long, default_value_t = 100_000)]
        registrations: usize,
        /// Register two devices through the API and copy them in SQL to the
        /// rest (proof of possession for a million devices would take half an
        /// hour and measure registration, not the broadcast).
        #[arg(long)]
        seed: bool,
    },
    /// A registration storm through the sdk-client (DPoP).
    Register {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(long, default_value_t = 10_000)]
        registrations: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// K idle Server-Sent-Events streams, then one notification to all.
    Direct {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(long, default_value_t = 1_000)]
        connections: usize,
    },
    /// The idle service: resident memory and time to ready.
    Idle {
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// A fault under load on three nodes (PostgreSQL + Redis): counts what the
    /// simulators received against what the API accepted (docs/RELIABILITY.md).
    /// Exits non-zero when anything accepted was lost or a request got a 500.
    Chaos(loadtest::bench::chaos::ChaosArgs),
}

/// What the unicast and batch scenarios share.
#[derive(clap::Args)]
struct UnicastArgs {
    #[arg(long, default_value_t = 20_000)]
    notifications: usize,
    #[arg(long, default_value_t = 1_000)]
    registrations: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Target rate per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// The notifier reuses one token until near its `exp` (APNs's way) instead
    /// of signing a single-use token per request.
    #[arg(long)]
    token_reuse: bool,
    /// Fail when the deliveries left after the load exceed one second of the
    /// deliveries measured during it.
    #[arg(long)]
    keep_pace: bool,
    /// Requests to the APNs simulator alone before the run (its ceiling in the
    /// same run, for the ratio); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    ceiling_requests: usize,
    /// Profile this many seconds of the load once a quarter of it has been
    /// delivered (`perf record` on the service, PostgreSQL and push-bench):
    /// the run's report then says where a notification's CPU went, by
    /// component.
    #[arg(long)]
    profile: Option<f64>,
}

fn write(
    out: &std::path::Path,
    name: &str,
    figures: &serde_json::Value,
    markdown: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(figures)?,
    )?;
    std::fs::write(out.join(format!("{name}.md")), markdown)?;
    println!("{markdown}");
    Ok(())
}

fn service_line(service: &Service, cpu_before: &[f64], seconds: f64) -> String {
    let rss: Vec<String> = service
        .rss_mib()
        .iter()
        .map(|r| format!("{r:.1}"))
        .collect();
    let cpu: Vec<String> = service
        .cpu_seconds()
        .iter()
        .zip(cpu_before)
        .map(|(after, before)| format!("{:.0}%", 100.0 * (after - before) / seconds.max(1e-9)))
        .collect();
    format!(
        "service RSS MiB: {} · CPU: {}",
        rss.join(", "),
        cpu.join(", ")
    )
}

fn delivery_markdown(title: &str, f: &scenarios::DeliveryFigures, service_line: &str) -> String {
    format!(
        "### {title}\n\n| figure | value |\n|---|---|\n| notifications | {} ({} errors) |\n| accepted/s | {:.0} |\n\
         | accept latency p50 / p90 / p99 / max ms | {:.2} / {:.2} / {:.2} / {:.2} |\n| delivered | {} |\n\
         | delivered/s | {:.0} |\n| end-to-end p50 / p90 / p99 / max ms | {:.1} / {:.1} / {:.1} / {:.1} |\n\
         | run seconds | {:.1} |\n\n{service_line}\n",
        f.notifications, f.accept_errors, f.accepted_per_second,
        f.accept_latency.p50_ms, f.accept_latency.p90_ms, f.accept_latency.p99_ms, f.accept_latency.max_ms,
        f.delivered, f.delivered_per_second,
        f.end_to_end_latency.p50_ms, f.end_to_end_latency.p90_ms, f.end_to_end_latency.p99_ms, f.end_to_end_latency.max_ms,
        f.seconds,
    )
}

/// `PUSH_BENCH_SMOKE=1`: the same scenarios at seconds-long sizes (counts capped,
/// chaos in its `--short` form). CI runs README's benchmark commands this way: it
/// checks that the commands work, not a speed.
fn smoke(mut cli: Cli) -> Cli {
    if std::env::var_os("PUSH_BENCH_SMOKE").is_none_or(|v| v.is_empty()) {
        return cli;
    }
    let cap = |n: &mut usize, max: usize| *n = (*n).min(max);
    match &mut cli.scenario {
        Scenario::Ceiling { requests, .. } => cap(requests, 500),
        Scenario::Unicast { load, .. } | Scenario::Batch { load, .. } => {
            cap(&mut load.notifications, 200);
            cap(&mut load.registrations, 50);
            cap(&mut load.ceiling_requests, 500);
            // A smoke run checks the command, not a speed: reported, not enforced.
            if load.keep_pace {
                eprintln!("PUSH_BENCH_SMOKE: --keep-pace is reported, not enforced");
                load.keep_pace = false;
            }
        }
        Scenario::Broadcast { registrations, .. } => cap(registrations, 200),
        Scenario::Register { registrations, .. } => cap(registrations, 100),
        Scenario::Direct { connections, .. } => cap(connections, 100),
        Scenario::Idle { .. } => {}
        Scenario::Chaos(args) => args.short = true,
    }
    cli
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = smoke(Cli::parse());
    let out = cli.out.clone();
    match cli.scenario {
        Scenario::Chaos(args) => {
            let name = format!("chaos-{}", args.fault.name());
            let figures = loadtest::bench::chaos::run(&args, &out.join(&name)).await?;
            let mut md = format!("### {name}\n\n{}\n\n", figures.line());
            for event in &figures.events {
                md.push_str(&format!("- {event}\n"));
            }
            md.push_str(&format!("\nresponses: {:?}\n", figures.responses));
            write(&out, &name, &serde_json::to_value(&figures)?, &md)?;
            anyhow::ensure!(
                figures.passed(),
                "{name}: lost {}, failed requests {}, 5xx other than 503: {}, \
                 429/503 without Retry-After: {}, last delivery after the provider's return: {:?} s \
                 (bound {} s)",
                figures.lost,
                figures.failed_requests,
                figures.server_errors,
                figures.missing_retry_after,
                figures.last_delivery_after_return_s,
                loadtest::bench::chaos::RETURN_BOUND_SECONDS
            );
        }
        Scenario::Ceiling {
            requests,
            concurrency,
            connections,
        } => {
            let figures = ceiling(requests, concurrency, connections).await?;
            let mut md = String::from("### ceiling (simulators only)\n\n| target | requests | errors | per second | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|\n");
            for f in &figures {
                md.push_str(&format!(
                    "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    f.target,
                    f.requests,
                    f.errors,
                    f.per_second,
                    f.p50_ms,
                    f.p90_ms,
                    f.p99_ms,
                    f.max_ms
                ));
            }
            write(&out, "ceiling", &serde_json::to_value(&figures)?, &md)?;
        }
        Scenario::Unicast { service, load } => {
            unicast(&out, &service, &load, 1).await?;
        }
        Scenario::Batch {
            service,
            load,
            batch_size,
        } => {
            anyhow::ensure!(
                (1..=500).contains(&batch_size),
                "--batch-size must be 1 to 500"
            );
            unicast(&out, &service, &load, batch_size).await?;
        }
        Scenario::Broadcast {
            service,
            registrations,
            seed,
        } => {
            let svc = Service::start(&service).await?;
            let tenant = scenarios::tenant(&svc).await?;
            let (reg_latency, reg_seconds) = if seed {
                let start = std::time::Instant::now();
                loadtest::bench::chaos::seed_registrations(&svc, &tenant, registrations).await?;
                (Default::default(), start.elapsed().as_secs_f64())
            } else {
                let (_, latency, seconds) =
                    scenarios::register(&tenant, registrations, 64, Devices::Mobile, "registering")
                        .await?;
                (latency, seconds)
            };
            let cpu = svc.cpu_seconds();
            let figures = scenarios::broadcast(&svc, &tenant, registrations).await?;
            let line = service_line(&svc, &cpu, figures.seconds);
            let title = format!(
                "broadcast of {registrations} · {:?} · {} node(s)",
                service.store, service.nodes
            );
            let md = format!(
                "{}\nsetup: {registrations} registrations in {reg_seconds:.1} s ({:.0}/s, p99 {:.1} ms)\n",
                delivery_markdown(&title, &figures, &line),
                registrations as f64 / reg_seconds,
                reg_latency.p99_ms
            );
            std::fs::create_dir_all(&out)?;
            std::fs::write(
                out.join("broadcast.svg"),
                report::svg(&title, &figures.timeline),
            )?;
            write(
                &out,
                "broadcast",
                &json!({"store": service.store, "figures": figures}),
                &md,
            )?;
        }
        Scenario::Register {
            service,
            registrations,
            concurrency,
        } => {
            let svc = Service::start(&service).await?;
            let tenant = scenarios::tenant(&svc).await?;
            let cpu = svc.cpu_seconds();
            let (_, latency, seconds) = scenarios::register(
                &tenant,
                registrations,
                concurrency,
                Devices::Mobile,
                "registering",
            )
            .await?;
            let line = service_line(&svc, &cpu, seconds);
            let md = format!(
                "### register storm · {:?}\n\n| registrations | per second | p50 / p90 / p99 / max ms |\n|---|---|---|\n| {registrations} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} |\n\n{line}\n",
                service.store, registrations as f64 / seconds, latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms
            );
            write(
                &out,
                "register",
                &json!({"store": service.store, "latency": latency, "seconds": seconds}),
                &md,
            )?;
        }
        Scenario::Direct {
            service,
            connections,
        } => {
            let svc = Service::start(&service).await?;
            let tenant = scenarios::tenant(&svc).await?;
            let figures = scenarios::direct(&svc, &tenant, connections).await?;
            let md = format!(
                "### direct channel · {connections} streams · {:?}\n\n| figure | value |\n|---|---|\n| streams connected | {} |\n\
                 | RSS idle → connected MiB | {:.1} → {:.1} |\n| KiB per connection | {:.1} |\n| received | {} |\n\
                 | fan-out p50 / p99 / all ms | {:.0} / {:.0} / {:.0} |\n",
                service.store, figures.connected, figures.rss_idle_mib, figures.rss_connected_mib, figures.kib_per_connection,
                figures.received, figures.fan_out.p50_ms, figures.fan_out.p99_ms, figures.fan_out.max_ms
            );
            write(&out, "direct", &serde_json::to_value(&figures)?, &md)?;
        }
        Scenario::Idle { service } => {
            let mut svc = Service::start(&service).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
            // The first start made the store's schema (on PostgreSQL, the DDL
            // on the fresh database); a restart finds it made, as a node that
            // is rescheduled or scaled out does.
            let ready: Vec<String> = svc.nodes.iter().map(|n| ms(n.ready_after)).collect();
            let rss: Vec<String> = svc.rss_mib().iter().map(|r| format!("{r:.1}")).collect();
            let mut restarts = Vec::new();
            for _ in 0..RESTARTS {
                svc.terminate(0, Duration::from_secs(10)).await?;
                svc.restart(0).await?;
                restarts.push(ms(svc.nodes[0].ready_after));
            }
            let md = format!(
                "### idle service · {:?}\n\n| ready after the first start ms | ready after a restart ms | RSS MiB |\n|---|---|---|\n| {} | {} | {} |\n",
                service.store,
                ready.join(", "),
                restarts.join(", "),
                rss.join(", ")
            );
            write(
                &out,
                "idle",
                &json!({"ready_ms": ready, "restart_ready_ms": restarts, "rss_mib": rss}),
                &md,
            )?;
        }
    }
    Ok(())
}

/// Restarts of the first node the idle scenario times.
const RESTARTS: usize = 3;

/// The unicast and batch scenarios: the ceiling of this run first, then the
/// load, the cost per notification, whether delivery kept pace, and the
/// ceiling again.
async fn unicast(
    out: &std::path::Path,
    service: &ServiceArgs,
    load: &UnicastArgs,
    batch: usize,
) -> anyhow::Result<()> {
    let ceiling_apns = ceiling_of(load.ceiling_requests).await?;
    let mut svc = Service::start(service).await?;
    let tenant = scenarios::tenant_with(&svc, load.token_reuse).await?;
    let (regs, _, _) = scenarios::register(
        &tenant,
        load.registrations,
        32,
        Devices::Mobile,
        "registering",
    )
    .await?;
    let targets: Vec<String> = regs.into_iter().map(|(id, _)| id).collect();
    let redis_url = match service.store {
        loadtest::bench::service::Store::Postgres => service.redis_url.as_str(),
        loadtest::bench::service::Store::Sqlite => "",
    };
    cost::prepare(&svc.database_url);
    // PostgreSQL counts a pooled connection's transactions only when it runs
    // again or closes: the nodes are stopped so that the registrations'
    // transactions are in the first read (before, ~3,000 of them showed up as
    // the notifications' cost of a 20,000 run), and again after the load so
    // that the last ones are in the second.
    // Signed before the readings: an auth server signs on its own machine.
    let presigned = tenant.sign_ahead(load.notifications.div_ceil(batch.max(1)));
    svc.terminate_all(Duration::from_secs(30)).await?;
    cost::quiesce(&svc.database_url).await;
    let before = cost::read(&svc.database_url, redis_url);
    let cpu_before = cpu::read();
    svc.restart_all().await?;
    let cpu = svc.cpu_seconds();
    let profiling = async {
        match load.profile {
            Some(seconds) => {
                Some(profile::record(&svc, load.notifications / 4, seconds, out).await)
            }
            None => None,
        }
    };
    let (figures, window) = tokio::join!(
        scenarios::unicast(
            &svc,
            &tenant,
            &targets,
            scenarios::Load {
                count: load.notifications,
                concurrency: load.concurrency,
                rate: load.rate,
                batch,
                presigned,
            },
        ),
        profiling
    );
    let figures = figures?;
    let line = service_line(&svc, &cpu, figures.seconds);
    // Stopping drains the nodes: the last outcomes' writes are in.
    svc.terminate_all(Duration::from_secs(30)).await?;
    cost::quiesce(&svc.database_url).await;
    let cost = before.per(&cost::read(&svc.database_url, redis_url), figures.delivered);
    let cpu_per = cpu_before.per(&cpu::read(), figures.delivered);
    // Measured again once the nodes have stopped: this machine's speed can
    // change by half within a minute, and two ceilings far apart say that
    // the ratio of this run is not to be read alone.
    let ceiling_after = ceiling_of(load.ceiling_requests).await?;
    // Read after the second ceiling: unwinding the samples takes a while.
    let profile = match window {
        Some(Ok(window)) => Some(window.read().await),
        Some(Err(why)) => Some(Err(why)),
        None => None,
    };
    let name = if batch > 1 { "batch" } else { "unicast" };
    let title = format!(
        "{name}{} · {:?} · {} node(s) · {} connections · {} tokens",
        if batch > 1 {
            format!(" of {batch}")
        } else {
            String::new()
        },
        service.store,
        service.nodes,
        load.concurrency,
        if load.token_reuse {
            "reused"
        } else {
            "single-use"
        }
    );
    let ratio = ceiling_apns.map(|c| figures.delivered_per_second / c);
    let ratio_after = ceiling_after.map(|c| figures.delivered_per_second / c);
    let unsteady =
        matches!((ceiling_apns, ceiling_after), (Some(a), Some(b)) if a.max(b) > 1.25 * a.min(b));
    let md = format!(
        "{}\n| ceiling (APNs simulator, this run) | {} |\n| delivered/s ÷ ceiling | {} |\n\
         | ceiling after the load / ratio to it | {} / {}{} |\n\
         | cost per notification | {} |\n| CPU per notification, restart to stop (the service: above) | {} |\n\
         | delivered after the load / drain | {} / {:.1} s (kept pace: {}) |\n",
        delivery_markdown(&title, &figures, &line),
        ceiling_apns.map_or("not measured".into(), |c| format!("{c:.0}/s")),
        ratio.map_or("—".into(), |r| format!("{:.1} %", r * 100.0)),
        ceiling_after.map_or("not measured".into(), |c| format!("{c:.0}/s")),
        ratio_after.map_or("—".into(), |r| format!("{:.1} %", r * 100.0)),
        if unsteady {
            " (the machine's speed changed during the run: compare delivered/s and the CPU a notification, not the ratio)"
        } else {
            ""
        },
        cost.line(),
        cpu_per.line(),
        figures.delivered_after_load,
        figures.drain_seconds,
        if figures.kept_pace() { "yes" } else { "no" },
    );
    let md = match &profile {
        Some(Ok(p)) => md + &p.markdown(),
        Some(Err(why)) => md + &format!("\nNo profile: {why}\n"),
        None => md,
    };
    let profile = match profile {
        Some(Ok(p)) => serde_json::to_value(p)?,
        Some(Err(why)) => json!({ "error": why }),
        None => serde_json::Value::Null,
    };
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{name}.svg")),
        report::svg(&title, &figures.timeline),
    )?;
    write(
        out,
        name,
        &json!({"store": service.store, "nodes": service.nodes, "batch": batch,
            "token_reuse": load.token_reuse, "figures": figures, "service": line,
            "ceiling_apns_per_second": ceiling_apns, "ratio_to_ceiling": ratio,
            "ceiling_after_apns_per_second": ceiling_after, "ratio_to_ceiling_after": ratio_after,
            "ceilings_apart": unsteady, "cost": cost, "cpu": cpu_per, "profile": profile}),
        &md,
    )?;
    anyhow::ensure!(
        !load.keep_pace || figures.kept_pace(),
        "delivery did not keep pace: {} deliveries after the load (more than one second's {:.0}), drained in {:.1} s",
        figures.delivered_after_load,
        figures.delivered_per_second_during_load,
        figures.drain_seconds
    );
    Ok(())
}

/// The APNs simulator's requests per second alone (64 in flight, 4
/// connections); `None` when `requests` is 0 (not measured).
async fn ceiling_of(requests: usize) -> anyhow::Result<Option<f64>> {
    if requests == 0 {
        return Ok(None);
    }
    eprintln!("measuring the ceiling ({requests} requests to the APNs simulator alone)");
    let figures = ceiling(requests, 64, 4).await?;
    Ok(figures
        .iter()
        .find(|f| f.target == "apns-simulator")
        .map(|f| f.per_second))
}

/// Figures of the ceiling run.
#[derive(serde::Serialize)]
struct CeilingFigures {
    target: &'static str,
    requests: usize,
    errors: usize,
    per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Builds request number `i` on a client.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

async fn drive(
    target: &'static str,
    clients: Vec<reqwest::Client>,
    requests: usize,
    concurrency: usize,
    make: MakeRequest,
) -> CeilingFigures {
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
    let ok = latencies.len();
    let l = Latency::of(latencies);
    CeilingFigures {
        target,
        requests,
        errors,
        per_second: ok as f64 / seconds,
        p50_ms: l.p50_ms,
        p90_ms: l.p90_ms,
        p99_ms: l.p99_ms,
        max_ms: l.max_ms,
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
) -> anyhow::Result<Vec<CeilingFigures>> {
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
            tokens_per_key: false,
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
