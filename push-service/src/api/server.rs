//! The listeners: the accept loop (plain or TLS), connection limits, and the
//! node's start and orderly shutdown around it.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::{dispatch, telemetry, tls, Config};

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
    let workers = dispatch::spawn(&state.dispatcher, state.shutdown.clone());
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
                super::ops::admin_router(state.clone()),
                shutdown.clone(),
                limits,
            )))
        }
        None => None,
    };
    let app = super::router(state);
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
    let stream_setups =
        std::sync::Arc::new(tokio::sync::Semaphore::new(super::stream_conn::SETUPS));
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
        let stream_setups = stream_setups.clone();
        tokio::spawn(async move {
            let stream_app = app.clone();
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
                    // A direct-channel stream: served without hyper's buffers, in a
                    // task of its own (this one is sized for a hyper connection).
                    let mut start = [0u8; 128];
                    if matches!(tcp.peek(&mut start).await, Ok(n) if super::stream_conn::is_stream_request(&start[..n]))
                    {
                        let timeout = limits.header_read_timeout;
                        tokio::spawn(async move {
                            let _slot = slot;
                            super::stream_conn::serve(
                                tcp,
                                stream_app,
                                remote,
                                timeout,
                                stream_setups,
                            )
                            .await
                        });
                        return;
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
pub(super) fn log_closed(remote: std::net::SocketAddr, why: &'static str) {
    metrics::counter!(telemetry::names::CONNECTIONS_CLOSED, "reason" => why).increment(1);
    telemetry::warn_sampled(why, remote.ip(), "connection closed");
}
