//! `mock-fcm`: the FCM simulator as a process (see `loadtest::fcm`).

use clap::Parser;
use rsa::pkcs8::DecodePublicKey;

#[derive(Parser)]
#[command(about = "FCM HTTP v1 simulator: OAuth token endpoint and messages:send")]
struct Args {
    #[arg(long, default_value_t = 4443)]
    port: u16,
    #[arg(long)]
    project_id: String,
    #[arg(long)]
    client_email: String,
    /// The service account's public key (PEM, SPKI).
    #[arg(long)]
    public_key: std::path::PathBuf,
    #[arg(long, default_value_t = 600_000)]
    quota_per_minute: u64,
    #[arg(long, default_value_t = 3599)]
    token_lifetime_seconds: i64,
    #[arg(long, default_value = "mock-ca.pem")]
    ca_out: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let public_key =
        rsa::RsaPublicKey::from_public_key_pem(&std::fs::read_to_string(&args.public_key)?)?;
    let pki = loadtest::tls::TestPki::generate()?;
    std::fs::write(&args.ca_out, &pki.ca_pem)?;
    let config = loadtest::fcm::FcmConfig {
        project_id: args.project_id,
        client_email: args.client_email,
        public_key,
        token_lifetime_seconds: args.token_lifetime_seconds,
        quota_per_minute: args.quota_per_minute,
    };
    let sim = loadtest::fcm::FcmSimulator::start(config, &pki, args.port).await?;
    println!(
        "mock-fcm listening on {} (token_uri {}, CA in {})",
        sim.url,
        sim.token_uri,
        args.ca_out.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
