//! A test certificate authority and an HTTP/2 (and HTTP/1.1) TLS server for the simulators.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A CA generated for one run, and a server certificate for 127.0.0.1/localhost it signed.
pub struct TestPki {
    /// The CA certificate, PEM: what clients must trust.
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    ca_cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestPki {
    /// Generates the CA and a server certificate for `127.0.0.1` and `localhost`.
    pub fn generate() -> anyhow::Result<Self> {
        Self::generate_for(&[])
    }

    /// Like [`TestPki::generate`], with extra host names (e.g. a compose service name).
    pub fn generate_for(extra_names: &[String]) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "push-service simulator CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        names.extend(extra_names.iter().cloned());
        let cert = CertificateParams::new(names)?.signed_by(&key, &ca, &ca_key)?;
        Ok(TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            cert_der: cert.der().to_vec(),
            ca_cert_der: ca.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// A rustls server configuration offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
        self.server_config_with_client_roots(alpn, &[])
    }

    /// [`TestPki::server_config`] that also asks for a client certificate and
    /// accepts one issued by `client_roots` (DER), as APNs does for
    /// certificate-based trust; a client without one is still served.
    pub fn server_config_with_client_roots(
        &self,
        alpn: &[&[u8]],
        client_roots: &[Vec<u8>],
    ) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if client_roots.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for root in client_roots {
                roots.add(root.clone().into())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder.with_single_cert(
            vec![
                self.cert_der.clone().into(),
                self.ca_cert_der.clone().into(),
            ],
            rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
        )?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// The client certificate (DER) the connection's TLS handshake verified, in
/// every request's extensions; `None` when the client presented none.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

/// How a simulator serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// HTTP/2 only (APNs) or HTTP/2 and HTTP/1.1 (FCM).
    pub http2_only: bool,
    pub max_concurrent_streams: u32,
    /// While this holds `true` the simulator is down: it stops listening (new
    /// connections are refused by the kernel; the port stays bound, so no other
    /// server takes it meanwhile) and open connections are cut.
    pub down: tokio::sync::watch::Receiver<bool>,
}

/// Binds `addr` without listening: the port is held, connections to it refused.
fn hold_port(addr: SocketAddr) -> Option<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(addr).ok()?;
    Some(socket)
}

/// Serves `make_router(connection index)` over TLS until `shutdown`; one router per
/// connection, so simulators can keep per-connection state (APNs binds a team to it).
pub async fn serve_tls(
    listener: TcpListener,
    config: rustls::ServerConfig,
    options: ServeOptions,
    make_router: impl Fn() -> Router + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let make_router = Arc::new(make_router);
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    // While down, the port stays ours: bound but not listening, so the kernel
    // refuses connections (ECONNREFUSED, as from a host that is down) and no
    // other server started meanwhile can take the port and answer in our place.
    let mut held: Option<tokio::net::TcpSocket> = None;
    let mut down = options.down.clone();
    loop {
        if *down.borrow_and_update() {
            if listener.take().is_some() || held.is_none() {
                held = hold_port(addr);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = down.changed() => continue,
            }
        }
        let Some(bound) = listener.as_ref() else {
            match held.take().map(|socket| socket.listen(1024)) {
                Some(Ok(l)) => listener = Some(l),
                _ => match TcpListener::bind(addr).await {
                    Ok(l) => listener = Some(l),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                },
            }
            continue;
        };
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = down.changed() => continue,
            accepted = bound.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let make_router = make_router.clone();
        let shutdown = shutdown.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let mut down = options.down.clone();
            let serve = async {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let router = make_router();
                let peer = PeerCertificate(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| Arc::new(leaf.to_vec())),
                );
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        use tower::ServiceExt;
                        request.extensions_mut().insert(peer.clone());
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let io = TokioIo::new(tls);
                if options.http2_only {
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder.max_concurrent_streams(options.max_concurrent_streams);
                    let connection = builder.serve_connection(io, service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = &mut connection => {}
                        _ = shutdown.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                } else {
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http2()
                        .max_concurrent_streams(options.max_concurrent_streams);
                    let _ = builder.serve_connection(io, service).await;
                }
            };
            // Going down cuts the connection where it stands (no GOAWAY).
            tokio::select! {
                _ = serve => {}
                _ = down.wait_for(|d| *d) => {}
            }
        });
    }
}

/// Binds 127.0.0.1:`port` (0 for any).
pub async fn bind(port: u16) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
