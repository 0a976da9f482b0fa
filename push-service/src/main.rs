//! The `push-service` binary: parses the command line and configuration, then calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the C library's malloc: with glibc's, a fifth of the
/// service's CPU on the unicast hot path went to `malloc`, `free` and
/// `malloc_consolidate` (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "push-service",
    version,
    about = "Self-hostable push notification service"
)]
struct Cli {
    /// TOML configuration file, layered over the built-in defaults (then PUSH_* variables).
    #[arg(long, global = true, env = "PUSH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations, then exit.
    Migrate,
    /// Print the built-in default configuration, with comments.
    DefaultConfig,
    /// Rotate the master key that seals stored APNs/FCM credentials (docs/OPERATIONS.md).
    /// With --new-key-file: seal every credential under the new key and, still, under
    /// the configured one. With --finish (run with the new key configured): drop the
    /// old key's copies.
    #[command(group(clap::ArgGroup::new("step").required(true).args(["new_key_file", "finish"])))]
    RotateMasterKey {
        /// File holding the new key (32 bytes, base64).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
        /// Finish a rotation: every credential under the configured key alone.
        #[arg(long)]
        finish: bool,
    },
    /// Copy the SQLite database to a new file while the service runs (VACUUM INTO).
    /// PostgreSQL: use pg_dump (docs/OPERATIONS.md).
    Backup {
        /// Where to write the copy (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Exit 0 when the service answers /healthz (for a container HEALTHCHECK). Without
    /// --url, the address comes from the configuration: `admin_listen` if set, else
    /// `listen`, over https when the service terminates TLS; a wildcard address is
    /// asked on loopback.
    Health {
        #[arg(long)]
        url: Option<String>,
    },
    /// Generate a notifier signing key (P-256); prints the JWKS to register with the notifier.
    NotifierKey {
        /// Where to write the private key (PKCS#8 PEM, mode 0600).
        #[arg(long, default_value = "notifier-key.pem")]
        out: PathBuf,
        /// Key id to put in the JWKS and in tokens.
        #[arg(long, default_value = "k1")]
        kid: String,
    },
    /// Mint a short-lived notifier JWT (for curl and scripts).
    Token {
        /// The notifier's private key (PKCS#8 PEM, P-256 or RSA).
        #[arg(long, default_value = "notifier-key.pem")]
        key: PathBuf,
        /// The notifier id (the JWT `iss`).
        #[arg(long)]
        notifier: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "notify")]
        scope: String,
        /// The service's audience (default: PUSH_NOTIFIER_AUDIENCE, PUSH_PUBLIC_URL, or http://127.0.0.1:8080).
        #[arg(long)]
        audience: Option<String>,
        #[arg(long, default_value = "k1")]
        kid: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
    /// Seal standard input to a registration's encryption key, as an auth
    /// server does for end-to-end content: prints the compact JWE.
    Seal {
        /// The registration's `encryption_key` (a public JWK, JSON).
        #[arg(long)]
        jwk: String,
        /// The JWE's content type (`cty`).
        #[arg(long)]
        cty: Option<String>,
    },
}

/// Where the running service answers `/healthz`, from the same layers `serve` reads.
fn health_url(cli: &Cli) -> String {
    use figment::providers::{Env, Format, Toml};
    let mut figment = figment::Figment::from(Toml::string(push_service::config::DEFAULT_CONFIG));
    if let Some(file) = &cli.config {
        figment = figment.merge(Toml::file(file));
    }
    let figment = figment.merge(Env::prefixed("PUSH_").split("__"));
    let text = |key: &str| figment.extract_inner::<String>(key).unwrap_or_default();
    let loopback = |addr: std::net::SocketAddr| match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    let admin = text("admin_listen");
    let (address, tls) = if admin.trim().is_empty() {
        (text("listen"), !text("tls_cert").trim().is_empty())
    } else {
        let tls = figment.extract_inner::<bool>("admin_tls").unwrap_or(false);
        (admin, tls)
    };
    let addr = address
        .trim()
        .parse::<std::net::SocketAddr>()
        .map(loopback)
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    format!("{}://{addr}/healthz", if tls { "https" } else { "http" })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::DefaultConfig) => {
            print!("{}", push_service::config::DEFAULT_CONFIG);
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Health { url }) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a Tokio runtime can be built");
            let url = url.clone().unwrap_or_else(|| health_url(&cli));
            let healthy = runtime.block_on(async {
                // Loopback to this very process: the certificate names the public
                // host, not 127.0.0.1, so it is not checked here.
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .danger_accept_invalid_certs(true)
                    .build()
                    .ok()?;
                Some(client.get(&url).send().await.ok()?.status().is_success())
            });
            return if healthy == Some(true) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            };
        }
        Some(Command::Seal { jwk, cty }) => {
            return report(push_service::tokens::seal(jwk, cty.as_deref()));
        }
        Some(Command::NotifierKey { out, kid }) => {
            return report(push_service::tokens::notifier_key(out, kid));
        }
        Some(Command::Token {
            key,
            notifier,
            scope,
            audience,
            kid,
            ttl,
        }) => {
            let audience = audience
                .clone()
                .or_else(|| {
                    std::env::var("PUSH_NOTIFIER_AUDIENCE")
                        .ok()
                        .filter(|a| !a.is_empty())
                })
                .or_else(|| {
                    std::env::var("PUSH_PUBLIC_URL")
                        .ok()
                        .filter(|a| !a.is_empty())
                })
                .unwrap_or_else(|| "http://127.0.0.1:8080".into());
            return report(push_service::tokens::mint(
                key, notifier, scope, &audience, kid, *ttl,
            ));
        }
        _ => {}
    }
    let config = match push_service::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("push-service: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    push_service::telemetry::init_logging(&config.log_level, config.log_format);
    for path in &config.created_files {
        let what = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.contains("admin") => {
                "generated the admin token (the operator API's bearer token) in this file, mode 0600"
            }
            Some(name) if name.contains("master") => {
                "generated the master key (it seals the stored APNs/FCM credentials: back it up) in this file, mode 0600"
            }
            _ => "generated a new secret file (mode 0600); keep it safe",
        };
        tracing::warn!(path = %path.display(), "{what}");
        if path.ends_with("master.key") && !config.database_url.expose().starts_with("sqlite:") {
            tracing::warn!(
                "a shared database with a node-local generated master key: other nodes cannot decrypt \
                 the credentials this node stores; give every node the same PUSH_MASTER_KEY"
            );
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => {
                let store = push_service::store::connect(
                    config.database_url.expose(),
                    config.database_max_connections,
                    config.sqlite_full_sync,
                    config.database_ca_file.as_deref(),
                )
                .await?;
                store.migrate().await?;
                tracing::info!(backend = store.backend(), "migrations applied");
                Ok(())
            }
            Some(Command::RotateMasterKey {
                new_key_file: Some(file),
                ..
            }) => {
                println!(
                    "{}",
                    push_service::maintenance::rotate_master_key(&config, &file).await?
                );
                Ok(())
            }
            Some(Command::RotateMasterKey { finish: true, .. }) => {
                println!(
                    "{}",
                    push_service::maintenance::finish_master_key_rotation(&config).await?
                );
                Ok(())
            }
            Some(Command::Backup { out }) => {
                println!(
                    "{}",
                    push_service::maintenance::backup(&config, &out).await?
                );
                Ok(())
            }
            _ => serve(config).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "push-service stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints a command's output, or its error, and gives the exit code.
fn report(result: anyhow::Result<String>) -> std::process::ExitCode {
    match result {
        Ok(output) => {
            println!("{output}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("push-service: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: push_service::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        public_url = %config.public_url,
        data_dir = %config.data_dir.display(),
        "push-service starting"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    push_service::run(config, listener, shutdown).await
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn watch_signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("signal received");
    shutdown.cancel();
}
