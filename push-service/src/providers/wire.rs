//! One HTTP/2 connection to a provider, on the `h2` crate directly: a request
//! is one HEADERS and one DATA frame on a connection kept open, with no
//! connection pool, no per-request middleware and no task per request between
//! the caller and the connection. TLS offers only `h2` by ALPN (`http://`
//! addresses speak HTTP/2 with prior knowledge, as APNs' simulators on loopback
//! may); PINGs every minute find a connection the network dropped; a connection
//! that fails or is told to go away is replaced on the next request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::SetupError;
use crate::egress::EgressProxy;

/// How long a TCP connect and TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A PING is sent this often; a connection whose PONG does not come within the
/// request timeout is closed.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// The most of an answer's body kept: providers answer errors in a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// A TLS client certificate and its key (APNs certificate auth).
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// TLS settings for provider connections: the Mozilla roots plus `ca_pem`,
/// the client certificate when there is one, and `alpn` offered (`h2` first;
/// a server that picks another is answered [`WireError::no_http2`]).
pub fn tls_config(
    ca_pem: Option<&str>,
    identity: Option<Identity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("provider_ca_file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("provider_ca_file: {e}"))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(|e| format!("the client certificate is unusable: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Why an exchange did not bring an answer, in words that name no address,
/// token or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

const NO_HTTP2: &str = "the provider did not agree to HTTP/2 (ALPN h2)";

impl WireError {
    /// The server answered TLS but chose another protocol than HTTP/2: the
    /// caller may go on over HTTP/1.1 (FCM), or not at all (APNs).
    pub fn no_http2(&self) -> bool {
        self.0 == NO_HTTP2
    }

    fn io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let words = match error.kind() {
            K::NotFound | K::AddrNotAvailable => "the provider's address does not resolve",
            kind => crate::outbound::io_cause(kind),
        };
        WireError(words.into())
    }

    fn h2(error: &h2::Error) -> Self {
        if let Some(io) = error.get_io() {
            return Self::io(io);
        }
        match error.reason() {
            Some(reason) if error.is_go_away() => {
                WireError(format!("the provider closed the connection ({reason:?})"))
            }
            Some(reason) => WireError(format!("HTTP/2 stream reset ({reason:?})")),
            None => WireError("HTTP/2 protocol error".into()),
        }
    }
}

/// Where a connection goes, read once from the provider's address.
struct Target {
    scheme: Scheme,
    authority: Authority,
    /// `host:port` for a proxy's `CONNECT` (the port always written).
    tunnel_to: String,
    /// The egress proxy, when one is configured and `NO_PROXY` does not name the host.
    proxy: Option<EgressProxy>,
    /// Host for the connect (an IPv6 address without brackets) and its port.
    host: String,
    port: u16,
    /// `None` for `http://` (HTTP/2 with prior knowledge).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// An open connection: a handle to start streams on, and its number, so that a
/// failure seen on one connection never drops the one that replaced it.
#[derive(Clone)]
struct Live {
    number: u64,
    send: h2::client::SendRequest<Bytes>,
}

#[derive(Default)]
struct Slot {
    live: Option<Live>,
    opened: u64,
}

/// A provider's answer: status, headers and (up to 64 KiB of) body.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One HTTP/2 connection to one provider host, opened on first use and
/// replaced when it fails. Requests share it as streams.
pub struct Wire {
    target: Target,
    timeout: Duration,
    slot: Arc<Mutex<Slot>>,
    /// One dial at a time: requests that find no connection wait for it.
    dialing: tokio::sync::Mutex<()>,
}

impl Wire {
    /// A connection to `base`'s host (`https://` with `tls`, or `http://`).
    /// Nothing is dialled until the first request.
    pub fn new(
        base: &url::Url,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        proxy: Option<&EgressProxy>,
    ) -> Result<Wire, SetupError> {
        let host = base.host().ok_or("a provider address needs a host")?;
        let (connect_host, server_name) = match &host {
            url::Host::Domain(d) => (d.to_string(), ServerName::try_from(d.to_string())),
            url::Host::Ipv4(ip) => (
                ip.to_string(),
                Ok(ServerName::from(std::net::IpAddr::V4(*ip))),
            ),
            url::Host::Ipv6(ip) => (
                ip.to_string(),
                Ok(ServerName::from(std::net::IpAddr::V6(*ip))),
            ),
        };
        let port = base
            .port_or_known_default()
            .ok_or("a provider address needs a port")?;
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let (scheme, tls) = match base.scheme() {
            "https" => {
                let name = server_name.map_err(|e| format!("provider host: {e}"))?;
                (Scheme::HTTPS, Some((tls, name)))
            }
            "http" => (Scheme::HTTP, None),
            other => return Err(format!("provider address: scheme {other} is not http(s)").into()),
        };
        let proxy = proxy.filter(|p| p.applies_to(&connect_host)).cloned();
        Ok(Wire {
            target: Target {
                tunnel_to: format!("{host}:{port}"),
                proxy,
                scheme,
                authority: authority
                    .parse()
                    .map_err(|e| format!("provider address: {e}"))?,
                host: connect_host,
                port,
                tls,
            },
            timeout,
            slot: Arc::default(),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    /// `POST path` with `headers` and `body`; the whole exchange (a dial
    /// included) within the provider timeout.
    pub async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, WireError> {
        match tokio::time::timeout(self.timeout, self.exchange(path, headers, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(WireError("timeout".into())),
        }
    }

    async fn exchange(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, WireError> {
        let uri = http::Uri::builder()
            .scheme(self.target.scheme.clone())
            .authority(self.target.authority.clone())
            .path_and_query(
                PathAndQuery::try_from(path)
                    .map_err(|_| WireError("the request path is not valid".into()))?,
            )
            .build()
            .map_err(|_| WireError("the request address is not valid".into()))?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        // HTTP/2 does not need it, but a server may check it against the DATA
        // it receives (hyper and reqwest send it for a body of known size).
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let live = self.connection().await?;
        let number = live.number;
        let fail = |e: h2::Error| {
            if !e.is_reset() || e.is_go_away() {
                self.forget(number);
            }
            WireError::h2(&e)
        };
        let mut send = live.send.ready().await.map_err(fail)?;
        let (response, mut stream) = send.send_request(request, body.is_empty()).map_err(fail)?;
        if !body.is_empty() {
            stream.send_data(body, true).map_err(fail)?;
        }
        let response = response.await.map_err(fail)?;
        let (parts, mut received) = response.into_parts();
        let mut body = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(fail)?;
            let _ = received.flow_control().release_capacity(chunk.len());
            if body.len() + chunk.len() <= MAX_BODY {
                body.extend_from_slice(&chunk);
            }
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.freeze(),
        })
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Live, WireError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let send = tokio::time::timeout(CONNECT_TIMEOUT, self.dial())
            .await
            .map_err(|_| WireError("timeout".into()))??;
        Ok(send)
    }

    fn current(&self) -> Option<Live> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.live.clone()
    }

    /// Drops connection `number` if it is still the current one.
    fn forget(&self, number: u64) {
        forget(&self.slot, number);
    }

    async fn dial(&self) -> Result<Live, WireError> {
        let (host, port) = match &self.target.proxy {
            Some(proxy) => (proxy.host.as_str(), proxy.port),
            None => (self.target.host.as_str(), self.target.port),
        };
        let mut tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| WireError::io(&e))?;
        let _ = tcp.set_nodelay(true);
        if let Some(proxy) = &self.target.proxy {
            tunnel(&mut tcp, &self.target.tunnel_to, proxy).await?;
        }
        match &self.target.tls {
            None => self.handshake(tcp).await,
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| WireError::io(&e))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(WireError(NO_HTTP2.into()));
                }
                self.handshake(tls).await
            }
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<Live, WireError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .handshake::<T, Bytes>(io)
            .await
            .map_err(|e| WireError::h2(&e))?;
        let live = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.opened += 1;
            let live = Live {
                number: slot.opened,
                send,
            };
            slot.live = Some(live.clone());
            live
        };
        let number = live.number;
        let slot = self.slot.clone();
        let pings = connection.ping_pong();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let keep_alive = async move {
                let Some(mut pings) = pings else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(KEEP_ALIVE).await;
                    let pong = tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque()));
                    if !matches!(pong.await, Ok(Ok(_))) {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = connection => {}
                _ = keep_alive => {}
            }
            forget(&slot, number);
        });
        Ok(live)
    }
}

/// Asks the proxy for a tunnel to `to` (`CONNECT`) and reads its answer's
/// head; nothing else is read, since the provider says nothing before the
/// TLS handshake this side starts.
async fn tunnel(
    tcp: &mut tokio::net::TcpStream,
    to: &str,
    proxy: &EgressProxy,
) -> Result<(), WireError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n");
    if let Some(authorization) = proxy.authorization() {
        head.push_str("Proxy-Authorization: ");
        head.push_str(authorization);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| WireError::io(&e))?;
    let mut answer = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= 8192 {
            return Err(WireError(
                "the proxy's answer to CONNECT is too long".into(),
            ));
        }
        match tcp.read(&mut byte).await.map_err(|e| WireError::io(&e))? {
            0 => return Err(WireError("the proxy closed the connection".into())),
            _ => answer.push(byte[0]),
        }
    }
    let status = std::str::from_utf8(&answer)
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .unwrap_or("");
    if status != "200" {
        return Err(WireError(format!(
            "the proxy refused the tunnel ({})",
            if status.len() == 3 {
                status
            } else {
                "no status"
            }
        )));
    }
    Ok(())
}

fn forget(slot: &Mutex<Slot>, number: u64) {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if slot.live.as_ref().is_some_and(|l| l.number == number) {
        slot.live = None;
    }
}

/// `authorization: Bearer <token>`, marked sensitive so that HPACK never
/// keeps it in its table (made once per access token, then shared by sends).
pub fn bearer(token: &str) -> Result<HeaderValue, WireError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| WireError("the authorization is not a header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The headers of a JSON send with a bearer credential.
pub fn json_with_authorization(authorization: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::AUTHORIZATION, authorization);
    headers
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
