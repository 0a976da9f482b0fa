//! The `push-service` binary: parses the command line and configuration, then calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::DefaultConfig) = cli.command {
        print!("{}", push_service::config::DEFAULT_CONFIG);
        return std::process::ExitCode::SUCCESS;
    }
    let config = match push_service::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("push-service: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    push_service::telemetry::init_logging(&config);
    for path in &config.created_files {
        tracing::warn!(path = %path.display(), "generated a new secret file (mode 0600); keep it safe");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => {
                let store = push_service::store::connect(
                    config.database_url.expose(),
                    config.database_max_connections,
                )
                .await?;
                store.migrate().await?;
                tracing::info!(backend = store.backend(), "migrations applied");
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
