//! The state the HTTP layer serves from: the node's components, built once
//! from the configuration. Handlers and extractors take what they need of it;
//! the authenticators and the limiter are sub-states (`FromRef`), so an
//! extractor depends on its component, not on the whole node.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::auth::dpop::DeviceVerifier;
use crate::auth::notifier::{NotifierVerifier, TokenRules};
use crate::dispatch::Dispatcher;
use crate::notify::{AcceptSettings, Acceptor};
use crate::store::Store;
use crate::{auth, crypto, dispatch, ids, limits, providers, store, telemetry, Config};

/// Shared state of one node: one allocation whose clone is a reference
/// count (axum clones the state for every request and extractor; as a
/// struct of 20 fields, some of them strings, that was ~4 % of the
/// service's CPU on the notify path, BENCHMARKS.md "Where the CPU goes").
#[derive(Clone)]
pub struct AppState(Arc<NodeState>);

impl std::ops::Deref for AppState {
    type Target = NodeState;

    fn deref(&self) -> &NodeState {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct NodeState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub sealer: crypto::Sealer,
    pub redis: Option<redis::Client>,
    pub hub: providers::direct::DirectHub,
    pub circuits: Arc<providers::circuit::Circuits>,
    pub limiter: limits::Limiter,
    /// Accepts notifications (notify API).
    pub acceptor: Acceptor,
    /// Drives deliveries (the node's workers and sweep).
    pub dispatcher: Dispatcher,
    /// Authenticates notifiers (bearer JWTs).
    pub notifiers: Arc<NotifierVerifier>,
    /// Authenticates devices (DPoP proofs).
    pub devices: Arc<DeviceVerifier>,
    /// Open direct-channel streams per device key on this node.
    pub open_streams: super::events::OpenStreams,
    /// Records what the node's streams wrote.
    pub streamed: super::events::Recorder,
    /// `/readyz`'s cached verdict and pooled Redis connection.
    pub readiness: Arc<super::ops::ReadinessProbe>,
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
        // The store's schema (a first start's DDL on PostgreSQL) and Redis'
        // connections are made at the same time: neither needs the other.
        let (store, redis) = tokio::try_join!(
            async {
                let store = store::connect(
                    config.database_url.expose(),
                    config.database_max_connections,
                    config.sqlite_full_sync,
                    config.database_ca_file.as_deref(),
                )
                .await?;
                store.migrate().await?;
                anyhow::Ok(store)
            },
            connect_redis(&config),
        )?;
        let (redis, redis_conn) = redis.unzip();
        let node = format!("node-{}", ids::random_token(6));
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
        let limiter = limits::Limiter::new(
            config.limits,
            store.clone(),
            redis_conn
                .clone()
                .map(|conn| (conn, config.redis_key_prefix.clone())),
        );
        let hub = providers::direct::DirectHub::new(
            redis_conn.map(|conn| (conn, config.redis_key_prefix.clone())),
        );
        let sealer = config.sealer();
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
        let circuits: Arc<providers::circuit::Circuits> = Arc::default();
        let depths = dispatch::QueueDepths::default();
        // The local fast path: with a shared (Redis) queue and workers of its
        // own, a node works the deliveries it accepted from memory.
        let local: Option<Arc<dyn dispatch::Queue>> = (queue.kind() != "local"
            && config.dispatch_workers > 0)
            .then(|| Arc::new(dispatch::LocalQueue::default()) as Arc<dyn dispatch::Queue>);
        let handoff = local.clone().unwrap_or_else(|| queue.clone());
        let dispatcher = Dispatcher {
            store: store.clone(),
            queue: queue.clone(),
            local,
            providers,
            circuits: circuits.clone(),
            settings: Arc::new(dispatch::DispatchSettings::from_config(&config)),
            depths: depths.clone(),
            invalidated: Arc::default(),
            fanouts: Arc::default(),
        };
        let acceptor = Acceptor {
            store: store.clone(),
            queue,
            handoff,
            limiter: limiter.clone(),
            depths,
            settings: AcceptSettings {
                redrive_after: config.redrive_after,
                max_queue_depth: config.max_queue_depth,
                // Four tasks per worker may wait for them.
                handoff_limit: config.dispatch_workers * HANDOFF_PER_WORKER,
                max_content_bytes: config.max_content_bytes,
            },
            sealer: config.sealer(),
        };
        let notifiers = NotifierVerifier::new(
            store.clone(),
            auth::notifier::JwksCache::new(&config.fetch),
            replay.clone(),
            TokenRules {
                audience: config.notifier_audience.clone(),
                clock_skew: config.clock_skew,
                max_lifetime: config.notifier_max_lifetime,
            },
        );
        let devices = DeviceVerifier {
            public_url: config.public_url.clone(),
            window: config.dpop_window,
            replay,
        };
        let shutdown = CancellationToken::new();
        let streamed = super::events::Recorder::spawn(store.clone(), shutdown.clone());
        Ok(AppState(Arc::new(NodeState {
            sealer,
            config: Arc::new(config),
            store,
            redis,
            hub,
            circuits,
            limiter,
            acceptor,
            dispatcher,
            notifiers: Arc::new(notifiers),
            devices: Arc::new(devices),
            readiness: Arc::default(),
            open_streams: Arc::default(),
            streamed,
            shutdown,
            node,
            metrics,
            openapi: Arc::new(super::ApiDoc::openapi().to_json()?),
        })))
    }
}

/// Tasks per dispatch worker that may wait in the node's own queue before
/// acceptance waits for room.
const HANDOFF_PER_WORKER: usize = 4;

impl FromRef<AppState> for Arc<NotifierVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.notifiers.clone()
    }
}

impl FromRef<AppState> for Arc<DeviceVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.devices.clone()
    }
}

impl FromRef<AppState> for limits::Limiter {
    fn from_ref(state: &AppState) -> Self {
        state.limiter.clone()
    }
}

/// The Redis client and its managed connection, when `redis_url` is set.
async fn connect_redis(
    config: &Config,
) -> anyhow::Result<Option<(redis::Client, redis::aio::ConnectionManager)>> {
    let client = match (&config.redis_url, &config.redis_ca_file) {
        (Some(url), None) => redis::Client::open(url.expose().as_str())?,
        (Some(url), Some(ca)) => redis::Client::build_with_tls(
            url.expose().as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca)?),
            },
        )?,
        (None, _) => return Ok(None),
    };
    // One connection first, so a wrong address or an untrusted certificate
    // stops the start with its reason (the manager would retry forever).
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("redis_url: no connection within 10 s"))?
    .map_err(|e| anyhow::anyhow!("redis_url: cannot connect: {e}"))?;
    drop(probe);
    let conn = redis::aio::ConnectionManager::new_with_config(
        client.clone(),
        crate::redis_manager_config(),
    )
    .await?;
    Ok(Some((client, conn)))
}
