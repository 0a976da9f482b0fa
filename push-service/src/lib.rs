//! push-service: a self-hostable push notification service.
//!
//! The binary is thin; [`run`] starts the whole service on a listener, which is
//! what tests call with a `127.0.0.1:0` listener.

pub mod api;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod dispatch;
pub mod error;
pub mod ids;
pub mod keys;
pub mod notify;
pub mod providers;
pub mod registrations;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tokens;

use std::future::IntoFuture;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use config::Config;
use store::Store;

/// Shared state of one node, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub sealer: crypto::Sealer,
    pub redis: Option<redis::Client>,
    pub replay: auth::replay::ReplayCache,
    pub jwks: auth::notifier::JwksCache,
    pub queue: Arc<dyn dispatch::Queue>,
    pub providers: providers::Providers,
    pub hub: providers::direct::DirectHub,
    pub circuits: Arc<providers::circuit::Circuits>,
    /// Cancelled when the node shuts down: ends streams and background work.
    pub shutdown: CancellationToken,
    /// This node's name (Redis consumer name, logs).
    pub node: String,
    pub metrics: PrometheusHandle,
    pub openapi: Arc<String>,
}

impl AppState {
    /// Connects the store (applying migrations) and Redis client from the configuration.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let store = store::connect(
            config.database_url.expose(),
            config.database_max_connections,
            config.sqlite_full_sync,
        )
        .await?;
        store.migrate().await?;
        let redis = match &config.redis_url {
            Some(url) => Some(redis::Client::open(url.expose().as_str())?),
            None => None,
        };
        let node = format!("node-{}", ids::random_token(6));
        let redis_conn = match &redis {
            Some(client) => Some(redis::aio::ConnectionManager::new(client.clone()).await?),
            None => None,
        };
        let replay = match &redis_conn {
            Some(conn) => auth::replay::ReplayCache::Redis {
                conn: conn.clone(),
                prefix: config.redis_key_prefix.clone(),
            },
            None => auth::replay::ReplayCache::Store(store.clone()),
        };
        let queue: Arc<dyn dispatch::Queue> = match (&redis, &redis_conn) {
            (Some(client), Some(conn)) => Arc::new(
                dispatch::redis_queue::RedisQueue::new(
                    client.clone(),
                    conn.clone(),
                    &config.redis_key_prefix,
                    node.clone(),
                    config.queue_visibility,
                )
                .await?,
            ),
            _ => Arc::new(dispatch::LocalQueue::default()),
        };
        let hub = providers::direct::DirectHub::new(
            redis_conn.map(|conn| (conn, config.redis_key_prefix.clone())),
        );
        let sealer = crypto::Sealer::new(config.master_key.expose());
        let source = providers::http::CredentialSource {
            store: store.clone(),
            sealer: sealer.clone(),
        };
        let providers = providers::Providers {
            apns: Arc::new(providers::apns::ApnsProvider::new(
                config.providers.clone(),
                source.clone(),
            )),
            fcm: Arc::new(providers::fcm::FcmProvider::new(
                config.providers.clone(),
                source,
            )),
            direct: Arc::new(providers::direct::DirectProvider {
                store: store.clone(),
                hub: hub.clone(),
            }),
        };
        let metrics = telemetry::metrics_handle();
        telemetry::register_zeroes();
        metrics::gauge!(
            telemetry::names::BUILD_INFO,
            "version" => env!("CARGO_PKG_VERSION"),
            "store" => store.backend()
        )
        .set(1.0);
        Ok(AppState {
            sealer,
            config: Arc::new(config),
            store,
            redis,
            replay,
            jwks: auth::notifier::JwksCache::default(),
            queue,
            providers,
            hub,
            circuits: Arc::default(),
            shutdown: CancellationToken::new(),
            node,
            metrics,
            openapi: Arc::new(api::ApiDoc::openapi().to_json()?),
        })
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState::new(config).await?;
    serve(state, listener, shutdown).await
}

/// Serves an already built state (lets callers keep a handle on it).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grace = state.config.shutdown_grace;
    if let Some(client) = &state.redis {
        state
            .hub
            .spawn_listener(client.clone(), state.shutdown.clone());
    }
    dispatch::spawn(&state, state.shutdown.clone());
    let node_shutdown = state.shutdown.clone();
    let app = api::router(state);
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let drained = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        drained.cancelled().await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
    });
    let server = tokio::spawn(server.into_future());
    shutdown.cancelled().await;
    // Streams and background work end now; in-flight requests get the grace period.
    node_shutdown.cancel();
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "drain took too long; exiting"
        ),
    }
    Ok(())
}
