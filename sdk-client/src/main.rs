//! `push-client`: the sdk-client as a command line, for demos, scripts and tests.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sdk_client::{CertificateDer, Client, DeviceKey, EncryptionKey, NewRegistration, Pin};

#[derive(Parser)]
#[command(
    name = "push-client",
    version,
    about = "Register a device with push-service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Connection {
    /// The service's public URL.
    #[arg(long, env = "PUSH_SERVER")]
    server: String,
    /// The device key (PKCS#8 PEM), as written by `keygen`.
    #[arg(long, env = "PUSH_DEVICE_KEY", default_value = "device-key.pem")]
    key: PathBuf,
    /// SPKI SHA-256 pin (base64); repeat for backups.
    #[arg(long = "pin")]
    pins: Vec<String>,
    /// Extra trusted root certificate (PEM file), e.g. a private CA.
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a device key.
    Keygen {
        #[arg(long, default_value = "device-key.pem")]
        out: PathBuf,
        /// rsa2048, rsa3072, rsa4096 or p256.
        #[arg(long, default_value = "rsa2048")]
        kind: String,
    },
    /// Generate an encryption key (a private JWK file): content for a
    /// registration made with it is sealed to it.
    EncryptionKeygen {
        #[arg(long, default_value = "encryption-key.jwk")]
        out: PathBuf,
        /// p256, x25519, rsa2048, rsa3072 or rsa4096.
        #[arg(long, default_value = "p256")]
        kind: String,
    },
    /// Register this device; prints the registration (keep its id).
    Register {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        app: String,
        /// apns, fcm or direct.
        #[arg(long)]
        provider: String,
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        platform: String,
        /// APNs environment: production or sandbox.
        #[arg(long)]
        environment: Option<String>,
        /// Client attestation JWT, when the app requires one.
        #[arg(long)]
        attestation: Option<String>,
        /// An encryption key (private JWK file, from `encryption-keygen`):
        /// its public half is registered for sealed content.
        #[arg(long)]
        encryption_key: Option<PathBuf>,
    },
    /// The registration's inbox: sealed requests waiting for this device.
    Inbox {
        #[command(subcommand)]
        command: InboxCommand,
    },
    /// Replace the provider token of a registration.
    Rotate {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
        #[arg(long)]
        token: String,
    },
    /// Show a registration.
    Status {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
    },
    /// Print notifications received on a `direct` registration, one JSON line each.
    Listen {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
        /// Exit after this many notifications.
        #[arg(long)]
        count: Option<u64>,
        /// Resume after this event id.
        #[arg(long)]
        last_event_id: Option<String>,
    },
    /// Delete a registration.
    Delete {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum InboxCommand {
    /// List the pending items, one JSON line each.
    List {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
    },
    /// Fetch and open an item: prints it, writes its attachments into --out.
    Fetch {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
        #[arg(long)]
        item: String,
        /// The registration's encryption key (private JWK file).
        #[arg(long, default_value = "encryption-key.jwk")]
        encryption_key: PathBuf,
        /// Folder for the attachments (made if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Print the item as it is stored: the compact JWE, not opened (for
        /// another JOSE implementation, or a key held elsewhere).
        #[arg(long)]
        jwe: bool,
    },
    /// Acknowledge an item: the service drops its content.
    Ack {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        id: String,
        #[arg(long)]
        item: String,
    },
}

fn encryption_key(path: &std::path::Path) -> Result<EncryptionKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let jwk: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a JWK: {e}", path.display()))?;
    EncryptionKey::from_jwk(&jwk).map_err(|e| format!("{}: {e}", path.display()))
}

fn client(connection: &Connection) -> Result<Client, String> {
    let pem = std::fs::read_to_string(&connection.key)
        .map_err(|e| format!("cannot read {}: {e}", connection.key.display()))?;
    let key = DeviceKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?;
    let mut builder = Client::builder(&connection.server, key);
    for pin in &connection.pins {
        builder = builder.pin(Pin::from_base64(pin).map_err(|e| e.to_string())?);
    }
    if let Some(ca) = &connection.ca {
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        for der in pem_certificates(&pem)? {
            builder = builder.add_root_certificate(der);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                body.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .map_err(|_| "the CA file holds an unreadable certificate".to_owned())?;
                out.push(CertificateDer::from(der));
            }
            other if inside => body.push_str(other),
            _ => {}
        }
    }
    if out.is_empty() {
        return Err("the CA file holds no PEM certificate".into());
    }
    Ok(out)
}

fn print<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Keygen { out, kind } if out.exists() => {
            // Kept, never overwritten: the same command twice gives the same key.
            let pem = std::fs::read_to_string(&out)
                .map_err(|e| format!("cannot read {}: {e}", out.display()))?;
            let key = DeviceKey::from_pkcs8_pem(&pem).map_err(|e| {
                format!(
                    "{} exists and is not a device key ({e}); remove it or choose another --out",
                    out.display()
                )
            })?;
            let _ = kind;
            print(
                &serde_json::json!({"key": out, "alg": key.alg(), "thumbprint": key.thumbprint(), "existing": true}),
            );
        }
        Command::Keygen { out, kind } => {
            let key = match kind.as_str() {
                "rsa2048" => DeviceKey::generate_rsa(2048),
                "rsa3072" => DeviceKey::generate_rsa(3072),
                "rsa4096" => DeviceKey::generate_rsa(4096),
                "p256" => Ok(DeviceKey::generate_p256()),
                other => return Err(format!("unknown key kind `{other}`")),
            }
            .map_err(|e| e.to_string())?;
            let pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
            write_private(&out, &pem)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            print(
                &serde_json::json!({"key": out, "alg": key.alg(), "thumbprint": key.thumbprint()}),
            );
        }
        Command::Register {
            connection,
            app,
            provider,
            token,
            platform,
            environment,
            attestation,
            encryption_key: key_file,
        } => {
            let encryption_key = match &key_file {
                Some(path) => Some(encryption_key(path)?.public().to_jwk()),
                None => None,
            };
            let registration = NewRegistration {
                provider,
                token,
                environment,
                platform,
                encryption_key,
                attestation,
            };
            print(
                &client(&connection)?
                    .register(&app, &registration)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Command::Rotate {
            connection,
            id,
            token,
        } => {
            print(
                &client(&connection)?
                    .rotate(&id, &token)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Command::Status { connection, id } => {
            print(
                &client(&connection)?
                    .status(&id)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Command::Listen {
            connection,
            id,
            count,
            last_event_id,
        } => {
            use std::io::Write;
            let client = client(&connection)?;
            let mut listener = client.listen_after(&id, last_event_id);
            let mut received = 0;
            while count.is_none_or(|n| received < n) {
                let event = listener.next().await.map_err(|e| e.to_string())?;
                let line = serde_json::json!({"event_id": event.event_id, "notification": event.notification});
                println!("{line}");
                let _ = std::io::stdout().flush();
                received += 1;
            }
        }
        Command::EncryptionKeygen { out, kind } if out.exists() => {
            // Kept, never overwritten, like the device key.
            let key = encryption_key(&out)?;
            let _ = kind;
            print(&serde_json::json!({"key": out, "alg": key.public().alg(),
                "thumbprint": key.public().thumbprint(), "existing": true}));
        }
        Command::EncryptionKeygen { out, kind } => {
            let key = match kind.as_str() {
                "p256" => Ok(EncryptionKey::generate_p256()),
                "x25519" => Ok(EncryptionKey::generate_x25519()),
                "rsa2048" => EncryptionKey::generate_rsa(2048),
                "rsa3072" => EncryptionKey::generate_rsa(3072),
                "rsa4096" => EncryptionKey::generate_rsa(4096),
                other => return Err(format!("unknown encryption key kind `{other}`")),
            }
            .map_err(|e| e.to_string())?;
            write_private(&out, &key.to_jwk().to_string())
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            print(&serde_json::json!({"key": out, "alg": key.public().alg(),
                "thumbprint": key.public().thumbprint()}));
        }
        Command::Inbox { command } => inbox(command).await?,
        Command::Delete { connection, id } => {
            client(&connection)?
                .delete(&id)
                .await
                .map_err(|e| e.to_string())?;
            print(&serde_json::json!({"deleted": id}));
        }
    }
    Ok(())
}

async fn inbox(command: InboxCommand) -> Result<(), String> {
    match command {
        InboxCommand::List { connection, id } => {
            for item in client(&connection)?
                .inbox(&id)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("{}", serde_json::to_string(&item).unwrap_or_default());
            }
        }
        InboxCommand::Fetch {
            connection,
            id,
            item,
            encryption_key: key_file,
            out,
            jwe: true,
        } => {
            let _ = (key_file, out);
            let jwe = client(&connection)?
                .fetch_jwe(&id, &item)
                .await
                .map_err(|e| e.to_string())?;
            print(&serde_json::json!({"item": item, "jwe": jwe}));
        }
        InboxCommand::Fetch {
            connection,
            id,
            item,
            encryption_key: key_file,
            out,
            jwe: false,
        } => {
            let key = encryption_key(&key_file)?;
            let content = client(&connection)?
                .fetch(&id, &item, &key)
                .await
                .map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&out)
                .map_err(|e| format!("cannot make {}: {e}", out.display()))?;
            let mut files = Vec::new();
            for attachment in &content.attachments {
                // The service refused names with separators; checked again here.
                let name = std::path::Path::new(&attachment.name)
                    .file_name()
                    .ok_or_else(|| {
                        format!("attachment name `{}` is not a file name", attachment.name)
                    })?;
                let path = out.join(name);
                std::fs::write(&path, &attachment.bytes)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                files.push(serde_json::json!({"name": attachment.name,
                    "media_type": attachment.media_type, "bytes": attachment.bytes.len(), "file": path}));
            }
            let data = match &content.data {
                Some(data) => data.clone(),
                None => serde_json::json!(String::from_utf8_lossy(&content.raw)),
            };
            print(
                &serde_json::json!({"item": item, "media_type": content.media_type,
                "data": data, "attachments": files}),
            );
        }
        InboxCommand::Ack {
            connection,
            id,
            item,
        } => {
            client(&connection)?
                .ack(&id, &item)
                .await
                .map_err(|e| e.to_string())?;
            print(&serde_json::json!({"acked": item}));
        }
    }
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push-client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
