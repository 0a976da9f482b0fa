//! `mock-apns`: the APNs simulator as a process (see `loadtest::apns`).

use clap::Parser;
use p256::pkcs8::DecodePublicKey;

#[derive(Parser)]
#[command(about = "APNs simulator: HTTP/2 + TLS, token auth, scripted outcomes")]
struct Args {
    #[arg(long, default_value_t = 2197)]
    port: u16,
    /// Provider key: KEY_ID:TEAM_ID:path/to/public.pem (repeatable).
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Generate a key and write its .p8 here (as Apple issues it: PEM PKCS#8
    /// P-256), for the operator to upload with --key-id and --team-id.
    #[arg(long)]
    generate_key: Option<std::path::PathBuf>,
    /// The generated key's id (10 characters, as Apple's).
    #[arg(long, default_value = "KEY1234567")]
    key_id: String,
    /// The generated key's team (10 characters, as Apple's).
    #[arg(long, default_value = "TEAM123456")]
    team_id: String,
    /// Extra host name for the TLS certificate (e.g. the compose service name).
    #[arg(long)]
    hostname: Vec<String>,
    /// Allowed topic in full (repeatable): the bundle id, and the bundle id with a push
    /// type's suffix (e.g. `com.acme.voip`) for each push type the app is entitled to.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    max_concurrent_streams: u32,
    /// Where to write the generated CA certificate (PEM) that clients must trust.
    #[arg(long, default_value = "mock-ca.pem")]
    ca_out: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut keys = Vec::new();
    for spec in &args.keys {
        let mut parts = spec.splitn(3, ':');
        let (Some(key_id), Some(team_id), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("--key is KEY_ID:TEAM_ID:public.pem");
        };
        let pem = std::fs::read_to_string(path)?;
        keys.push(loadtest::apns::ApnsKey {
            key_id: key_id.into(),
            team_id: team_id.into(),
            public: p256::ecdsa::VerifyingKey::from_public_key_pem(&pem)?,
        });
    }
    if let Some(path) = &args.generate_key {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        std::fs::write(path, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;
        keys.push(loadtest::apns::ApnsKey {
            key_id: args.key_id.clone(),
            team_id: args.team_id.clone(),
            public: p256::ecdsa::VerifyingKey::from(key.public_key()),
        });
    }
    anyhow::ensure!(!keys.is_empty(), "give --key or --generate-key");
    let pki = loadtest::tls::TestPki::generate_for(&args.hostname)?;
    std::fs::write(&args.ca_out, &pki.ca_pem)?;
    let config = loadtest::apns::ApnsConfig {
        keys,
        topics: args.topics,
        max_concurrent_streams: args.max_concurrent_streams,
        tokens_per_key: false,
    };
    let sim = loadtest::apns::ApnsSimulator::start(config, &pki, args.port).await?;
    println!(
        "mock-apns listening on {} (CA in {})",
        sim.url,
        args.ca_out.display()
    );
    loadtest::until_stopped().await?;
    Ok(())
}
