//! TLS termination: the service's certificate (reloaded from disk when it
//! changes), HTTP/2 and HTTP/1.1 by ALPN, and the optional client certificate
//! that binds a notifier's tokens to a TLS key (RFC 8705 in spirit).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// The certificate chain a client presented on its TLS connection (leaf first).
/// Only its possession is proven by the handshake; what it may do is decided per
/// notifier (`auth::notifier`).
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Arc<Vec<CertificateDer<'static>>>);

impl ClientCertificate {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.0[0]
    }

    /// SHA-256 of the leaf certificate (the `x5t#S256` confirmation of RFC 8705).
    pub fn thumbprint(&self) -> [u8; 32] {
        Sha256::digest(self.leaf().as_ref()).into()
    }

    /// SHA-256 of the leaf's SubjectPublicKeyInfo (the same pin HPKP and our sdk-client use).
    pub fn spki_sha256(&self) -> Option<[u8; 32]> {
        spki_sha256(self.leaf().as_ref())
    }
}

/// SHA-256 of a DER certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM chain and private key into a signing-ready certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("tls_cert {}: no certificate in the file", cert.display());
    }
    // The key's own errors name the file only: a PEM parser error could echo key bytes.
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| anyhow::anyhow!("tls_key {}: no readable private key", key.display()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| anyhow::anyhow!("the TLS key does not fit the certificate: {e}"))?;
    Ok(certified)
}

/// Serves the current certificate; [`spawn_reloader`] swaps it when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Accepts any client certificate whose handshake signature is valid, and none at all:
/// the certificate is then matched per notifier, after the JWT names the notifier.
#[derive(Debug)]
struct OptionalClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server's TLS: files, the live certificate and the rustls configuration.
/// Clones share the certificate, so a reload reaches every listener.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    cert: Arc<ReloadingCert>,
    paths: (PathBuf, PathBuf),
}

impl Tls {
    /// TLS 1.2 and 1.3 with rustls' modern suites only (AEAD, forward secrecy),
    /// `h2` then `http/1.1` by ALPN, optional client certificates.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let first = load_certified_key(cert, key)?;
        let resolver = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(first)),
        });
        let provider = provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(Arc::new(OptionalClientCert(provider)))
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            cert: resolver,
            paths: (cert.to_owned(), key.to_owned()),
        })
    }

    /// Re-reads the files every `every` and swaps the certificate when they
    /// changed and load; a broken pair is logged and the old one kept.
    pub fn spawn_reloader(&self, every: Duration, shutdown: CancellationToken) {
        let cert = self.cert.clone();
        let (cert_path, key_path) = self.paths.clone();
        tokio::spawn(async move {
            let mut seen = fingerprint(&cert_path, &key_path).await;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = fingerprint(&cert_path, &key_path).await;
                if now == seen {
                    continue;
                }
                match load_certified_key(&cert_path, &key_path) {
                    Ok(next) => {
                        *cert.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                        seen = now;
                        metrics::counter!(crate::telemetry::names::TLS_RELOADS).increment(1);
                        tracing::info!(cert = %cert_path.display(), "TLS certificate reloaded");
                    }
                    // Files are often written one after the other: try again next tick.
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load yet; keeping the current certificate")
                    }
                }
            }
        });
    }
}

/// A digest of both files' contents (symlink swaps, as Kubernetes does, change it too).
async fn fingerprint(cert: &Path, key: &Path) -> Option<[u8; 32]> {
    let mut hash = Sha256::new();
    hash.update(tokio::fs::read(cert).await.ok()?);
    hash.update(tokio::fs::read(key).await.ok()?);
    Some(hash.finalize().into())
}
