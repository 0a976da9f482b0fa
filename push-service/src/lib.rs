//! push-service: a self-hostable push notification service.
//!
//! The binary is thin; [`run`] starts the whole service on a listener, which is
//! what tests call with a `127.0.0.1:0` listener.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod delivery;
pub mod dispatch;
pub mod error;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod notification;
pub mod notify;
pub mod outbound;
pub mod providers;
pub mod registrations;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;

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
    pub limiter: limits::Limiter,
    /// Queued deliveries as the last sweep counted them (backpressure).
    /// Queued deliveries ready to go (not waiting for a retry or a circuit), as last counted.
    pub queue_depth: Arc<std::sync::atomic::AtomicU64>,
    /// Queued deliveries per app (waiting ones included), as last counted.
    pub app_queue_depths: Arc<std::sync::RwLock<std::collections::HashMap<String, u64>>>,
    /// Open direct-channel streams per device key on this node.
    pub open_streams: api::events::OpenStreams,
    /// `/readyz`'s cached verdict and pooled Redis connection.
    pub readiness: Arc<api::ops::ReadinessProbe>,
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
            config.database_ca_file.as_deref(),
        )
        .await?;
        store.migrate().await?;
        let redis = match (&config.redis_url, &config.redis_ca_file) {
            (Some(url), None) => Some(redis::Client::open(url.expose().as_str())?),
            (Some(url), Some(ca)) => Some(redis::Client::build_with_tls(
                url.expose().as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca)?),
                },
            )?),
            (None, _) => None,
        };
        let node = format!("node-{}", ids::random_token(6));
        let redis_conn = match &redis {
            Some(client) => {
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
                Some(
                    redis::aio::ConnectionManager::new_with_config(
                        client.clone(),
                        redis_manager_config(),
                    )
                    .await?,
                )
            }
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
        let jwks = auth::notifier::JwksCache::new(&config.fetch);
        Ok(AppState {
            sealer,
            config: Arc::new(config),
            store,
            redis,
            replay,
            jwks,
            queue,
            providers,
            hub,
            circuits: Arc::default(),
            limiter,
            queue_depth: Arc::default(),
            app_queue_depths: Arc::default(),
            readiness: Arc::default(),
            open_streams: Arc::default(),
            shutdown: CancellationToken::new(),
            node,
            metrics,
            openapi: Arc::new(api::ApiDoc::openapi().to_json()?),
        })
    }
}

/// How the shared Redis connection comes back after Redis restarts. redis-rs'
/// defaults wait 1 s, then about 100 s, between reconnection attempts (its factor
/// multiplies each delay), and while it waits every command waits: requests hung
/// for two minutes after a Redis restart in the fault harness. Here: an attempt
/// times out after 2 s, at most two retries 1 s apart, then commands fail (503)
/// and the next one starts a new attempt.
pub fn redis_manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(1000)
        .set_number_of_retries(2)
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(std::time::Duration::from_secs(5))
}

/// Timeouts for Redis connections made outside the manager (the queue's blocking
/// reads, the readiness probe): a dead server is noticed, never waited on.
pub fn redis_connection_config(response: std::time::Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(response)
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
    let tls = match &state.config.tls {
        Some(files) => {
            let tls = tls::Tls::load(&files.cert, &files.key)?;
            tls.spawn_reloader(files.reload_every, state.shutdown.clone());
            Some(tls)
        }
        None => None,
    };
    if let Some(client) = &state.redis {
        state
            .hub
            .spawn_listener(client.clone(), state.shutdown.clone());
    }
    let workers = dispatch::spawn(&state, state.shutdown.clone());
    let node_shutdown = state.shutdown.clone();
    let limits = ConnectionLimits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_connections,
    };
    let admin = match state.config.admin_listen {
        Some(addr) => {
            let admin_listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("configuration key `admin_listen`: {addr}: {e}"))?;
            tracing::info!(
                %addr,
                tls = state.config.admin_tls,
                "ops endpoints (/healthz, /readyz, /metrics) on admin_listen"
            );
            let admin_tls = tls.clone().filter(|_| state.config.admin_tls);
            Some(tokio::spawn(serve_connections(
                admin_listener,
                admin_tls,
                api::ops::admin_router(state.clone()),
                shutdown.clone(),
                limits,
            )))
        }
        None => None,
    };
    let app = api::router(state);
    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening");
    let drained = shutdown.clone();
    let server = tokio::spawn(serve_connections(listener, tls, app, drained, limits));
    shutdown.cancelled().await;
    // Streams and background work end now; in-flight requests and the tasks the
    // workers hold share the grace period. What is cut short is not lost: another
    // node takes the queue entries over, the sweep re-drives claimed deliveries.
    let deadline = tokio::time::Instant::now() + grace;
    node_shutdown.cancel();
    workers.close();
    let served = match tokio::time::timeout_at(deadline, server).await {
        Ok(joined) => joined?,
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "drain took too long; exiting"
            );
            Ok(())
        }
    };
    if let Some(admin) = admin {
        let _ = tokio::time::timeout_at(deadline, admin).await;
    }
    if tokio::time::timeout_at(deadline, workers.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = workers.len(),
            "dispatch tasks still running at the end of the grace period; others take them over"
        );
    }
    served
}

/// Bounds on what one connection may hold.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// Time to send a request's headers, and to start the next request on an
    /// idle keep-alive connection: a slow or silent client is closed after it.
    header_read_timeout: std::time::Duration,
    /// Open connections per node; past it, new ones are answered `503` at once.
    max_connections: usize,
}

/// The accept loop: plain HTTP or TLS (HTTP/2 or HTTP/1.1 as ALPN chose); each
/// connection's address and client certificate are attached to its requests.
/// Slow headers and idle keep-alive connections are closed after the header
/// timeout; past `max_connections` a new connection gets a `503` and is closed.
async fn serve_connections(
    listener: TcpListener,
    tls: Option<tls::Tls>,
    app: axum::Router,
    shutdown: CancellationToken,
    limits: ConnectionLimits,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let acceptor = tls
        .as_ref()
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.config.clone()));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_connection(tcp, remote, acceptor.is_none());
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let make_service = |peer: Option<tls::ClientCertificate>| {
                hyper::service::service_fn(
                    move |mut request: axum::http::Request<hyper::body::Incoming>| {
                        request
                            .extensions_mut()
                            .insert(axum::extract::ConnectInfo(remote));
                        if let Some(peer) = &peer {
                            request.extensions_mut().insert(peer.clone());
                        }
                        tower::ServiceExt::oneshot(app.clone(), request)
                    },
                )
            };
            let served = match acceptor {
                None => {
                    // A client that connects and sends nothing: the HTTP/1 header
                    // timeout only starts once the protocol is known, so wait for
                    // the first byte here.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(limits.header_read_timeout, tcp.peek(&mut first))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => {}
                        Ok(_) => return,
                        Err(_) => {
                            log_closed(remote, "nothing sent in time (idle client)");
                            return;
                        }
                    }
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), make_service(None))
                        .into_owned();
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %remote, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            log_closed(remote, "TLS handshake not finished in time");
                            return;
                        }
                    };
                    let peer = stream.get_ref().1.peer_certificates().map(|chain| {
                        tls::ClientCertificate(std::sync::Arc::new(
                            chain.iter().map(|c| c.clone().into_owned()).collect(),
                        ))
                    });
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), make_service(peer))
                        .into_owned();
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = served {
                let text = e.to_string();
                if text.contains("timeout") {
                    log_closed(remote, "headers not received in time (slow or idle client)");
                } else {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
            }
        });
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A node at `max_connections`: a plain connection gets a `503` with
/// `Retry-After` and is closed, a TLS one is closed; nothing waits.
fn refuse_connection(tcp: tokio::net::TcpStream, remote: std::net::SocketAddr, plain: bool) {
    log_closed(remote, "max_connections reached: connection refused");
    if plain {
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tcp;
            // Read the request head first (briefly), so the client sees an
            // answer to its request rather than a message before it.
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            let body = r#"{"type":"urn:push-service:problem:unavailable","title":"Service unavailable","status":503,"detail":"this node holds max_connections connections; retry"}"#;
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
                 retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                tcp.write_all(answer.as_bytes()),
            )
            .await;
        });
    }
}

/// A connection the node closed itself: counted, and logged (sampled).
fn log_closed(remote: std::net::SocketAddr, why: &'static str) {
    metrics::counter!(telemetry::names::CONNECTIONS_CLOSED, "reason" => why).increment(1);
    telemetry::warn_sampled(why, remote.ip(), "connection closed");
}
