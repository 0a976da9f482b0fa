//! `push-demo`: the whole loop on one machine in seconds, nothing to prepare.
//!
//! Starts push-service (the release binary) on SQLite in a temporary folder with
//! the bundled APNs and FCM simulators (one CA, an APNs key and an FCM service
//! account generated for the run), creates an app with credentials the
//! simulators trust and a notifier, registers an APNs, an FCM and a direct
//! device with DPoP (sdk-client), sends one notification to all three, and
//! prints each delivery as the simulator (or the direct stream) received it,
//! then the notification's status. Everything listens on 127.0.0.1 and stops
//! when the demo ends.

use std::time::{Duration, Instant};

use clap::Parser;
use loadtest::bench::scenarios;
use loadtest::bench::service::{Service, ServiceArgs, Store};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "push-demo",
    about = "push-service with APNs and FCM simulators: one notification to three devices"
)]
struct Args {
    /// The push-service binary.
    #[arg(long, default_value = "target/release/push-service")]
    binary: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let service = Service::start(&ServiceArgs {
        binary: args.binary,
        store: Store::Sqlite,
        database_url: String::new(),
        redis_url: String::new(),
        nodes: 1,
        env: Vec::new(),
        log_dir: None,
    })
    .await?;
    let base = service.nodes[0].url.clone();
    println!("push-service    {base} (SQLite in a temporary folder)");
    println!("APNs simulator  {}", service.apns.url);
    println!("FCM simulator   {}", service.fcm.url);

    // An app whose APNs and FCM credentials the simulators trust, and a notifier.
    let tenant = scenarios::tenant(&service).await?;
    println!(
        "app             {} (APNs token auth, FCM service account, notifier {})",
        tenant.app_id, tenant.notifier_id
    );

    // Three devices, each proving its own key (DPoP).
    let apns_token = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let fcm_token = format!(
        "demo-{:032x}:APA91b{}",
        rand::random::<u128>(),
        "x".repeat(40)
    );
    let mut registrations = Vec::new();
    for (label, registration) in [
        (
            "iOS (APNs)",
            sdk_client::NewRegistration::apns(&apns_token, "ios"),
        ),
        (
            "Android (FCM)",
            sdk_client::NewRegistration::fcm(&fcm_token, "android"),
        ),
        (
            "desktop (direct)",
            sdk_client::NewRegistration::direct("linux"),
        ),
    ] {
        let key = sdk_client::DeviceKey::generate_p256();
        let client = sdk_client::Client::builder(&base, key).build()?;
        let info = client.register(&tenant.app_id, &registration).await?;
        println!("registered      {label:<17} {}", info.id);
        registrations.push((client, info.id));
    }
    let (desktop, desktop_id) = &registrations[2];
    let mut listener = desktop.listen(desktop_id);

    // One notification to the three, as an auth server sends it.
    let ids: Vec<&String> = registrations.iter().map(|(_, id)| id).collect();
    let response = tenant
        .http
        .post(format!("{base}/v1/apps/{}/notifications", tenant.app_id))
        .bearer_auth(tenant.jwt())
        .json(&json!({"targets": {"registrations": ids},
            "notification": {"title": "Sign-in request", "body": "Approve the login?"},
            "data": {"request_id": "demo-1"}, "ttl_seconds": 120}))
        .send()
        .await?;
    let status = response.status();
    let accepted: Value = response.json().await?;
    anyhow::ensure!(
        status.as_u16() == 202,
        "notify answered {status}: {accepted}"
    );
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    println!("notified        {id} → {status} {accepted}");

    // What each channel received.
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = tokio::time::timeout(Duration::from_secs(30), listener.next())
        .await
        .map_err(|_| anyhow::anyhow!("the direct stream got nothing within 30 s"))??;
    while (service.apns.receipt_count() < 1 || service.fcm.receipt_count() < 1)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let apns = service
        .apns
        .receipts()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("APNs received nothing within 30 s"))?;
    let fcm = service
        .fcm
        .receipts()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("FCM received nothing within 30 s"))?;
    println!("\nAPNs received   POST /3/device/{}…", &apns.token[..8]);
    for (name, value) in &apns.headers {
        println!("                {name}: {value}");
    }
    println!("                {}", apns.payload);
    println!("FCM received    {}", fcm.message);
    println!("direct stream   {}", serde_json::to_string(&event)?);

    // The status an auth server reads.
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = tenant
            .http
            .get(format!(
                "{base}/v1/apps/{}/notifications/{id}",
                tenant.app_id
            ))
            .bearer_auth(tenant.jwt())
            .send()
            .await?
            .json()
            .await?;
        if status["counts"]["sent"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\nstatus          {}",
        serde_json::to_string_pretty(&status)?
    );
    anyhow::ensure!(
        status["counts"]["sent"] == 3,
        "not every delivery is sent yet"
    );
    println!(
        "\nthree deliveries in {:.1} s; everything stops now.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
