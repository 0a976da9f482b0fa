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
    public_key: Option<std::path::PathBuf>,
    /// Without --public-key: generate the service account and write its JSON here.
    #[arg(long)]
    generate_service_account: Option<std::path::PathBuf>,
    /// Base URL others reach this simulator at (the generated `token_uri`).
    #[arg(long)]
    public_url: Option<String>,
    /// Extra host name for the TLS certificate (e.g. the compose service name).
    #[arg(long)]
    hostname: Vec<String>,
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
    let mut generated = None;
    let public_key = match (&args.public_key, &args.generate_service_account) {
        (Some(path), _) => rsa::RsaPublicKey::from_public_key_pem(&std::fs::read_to_string(path)?)?,
        (None, Some(path)) => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
            let pem = key.to_pkcs8_pem(LineEnding::LF)?.to_string();
            generated = Some((path.clone(), pem));
            key.to_public_key()
        }
        (None, None) => anyhow::bail!("give --public-key or --generate-service-account"),
    };
    let pki = loadtest::tls::TestPki::generate_for(&args.hostname)?;
    std::fs::write(&args.ca_out, &pki.ca_pem)?;
    let config = loadtest::fcm::FcmConfig {
        project_id: args.project_id,
        client_email: args.client_email,
        public_key,
        token_lifetime_seconds: args.token_lifetime_seconds,
        quota_per_minute: args.quota_per_minute,
    };
    let client_email = config.client_email.clone();
    let project_id = config.project_id.clone();
    let sim = loadtest::fcm::FcmSimulator::start(config, &pki, args.port).await?;
    if let Some((path, pem)) = generated {
        let base = args.public_url.clone().unwrap_or_else(|| sim.url.clone());
        let account = serde_json::json!({
            "type": "service_account", "project_id": project_id, "private_key_id": "sim-key",
            "private_key": pem, "client_email": client_email,
            "token_uri": format!("{}/token", base.trim_end_matches('/')),
        });
        std::fs::write(path, serde_json::to_string_pretty(&account)?)?;
    }
    println!(
        "mock-fcm listening on {} (token_uri {}, CA in {})",
        sim.url,
        sim.token_uri,
        args.ca_out.display()
    );
    loadtest::until_stopped().await?;
    Ok(())
}
