//! Certificate pinning in the sdk-client, through a TLS front in front of the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sdk_client::{Client, DeviceKey, NewRegistration, Pin};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{spawn_app_with, Backend};

struct TlsFront {
    url: String,
    ca_der: Vec<u8>,
    leaf_der: Vec<u8>,
    /// Bytes that reached the server through the front.
    forwarded: Arc<AtomicU64>,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
}

/// A test CA, a certificate for 127.0.0.1 signed by it, and a listener for the front.
async fn tls_front() -> TlsFront {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "push-service test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    TlsFront {
        url: format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        ),
        ca_der: ca.der().to_vec(),
        leaf_der: leaf.der().to_vec(),
        forwarded: Arc::default(),
        listener,
        config: Arc::new(config),
    }
}

/// Terminates TLS and copies bytes to `upstream`, counting what the server receives.
fn run_front(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    upstream: String,
    forwarded: Arc<AtomicU64>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            let forwarded = forwarded.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                if let Ok((to_server, _)) =
                    tokio::io::copy_bidirectional(&mut tls, &mut server).await
                {
                    forwarded.fetch_add(to_server, Ordering::SeqCst);
                }
            });
        }
    });
}

#[tokio::test]
async fn pin_mismatch_fails_before_any_request() {
    let front = tls_front().await;
    let app = spawn_app_with(Backend::Sqlite, Some(&front.url)).await;
    let app_id = app.create_app("Acme").await;
    let upstream = app.base.trim_start_matches("http://").to_owned();
    let forwarded = front.forwarded.clone();
    run_front(front.listener, front.config, upstream, forwarded.clone());

    let wrong_pin = {
        let other = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&other)
            .expect("cert");
        Pin::of_certificate(cert.der()).expect("pin")
    };
    let key = DeviceKey::generate_p256();
    let pinned_wrong = Client::builder(&front.url, key.clone())
        .add_root_certificate(front.ca_der.clone().into())
        .pin(wrong_pin)
        .build()
        .expect("client");
    let err = pinned_wrong
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect_err("pin mismatch");
    assert!(matches!(err, sdk_client::Error::PinMismatch), "{err:?}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        forwarded.load(Ordering::SeqCst),
        0,
        "the server received bytes"
    );

    // The right pin (the leaf's key, or the CA's) goes through the same front.
    for pin_source in [&front.leaf_der, &front.ca_der] {
        let client = Client::builder(&front.url, key.clone())
            .add_root_certificate(front.ca_der.clone().into())
            .pin(Pin::of_certificate(pin_source).expect("pin"))
            .build()
            .expect("client");
        let registration = client
            .register(&app_id, &NewRegistration::direct("linux"))
            .await
            .expect("pinned registration");
        assert_eq!(
            client
                .status(&registration.id)
                .await
                .expect("status")
                .status,
            "active"
        );
    }
    assert!(forwarded.load(Ordering::SeqCst) > 0);

    // Without the CA as a root, validation fails even with the right pin.
    let untrusted = Client::builder(&front.url, key)
        .pin(Pin::of_certificate(&front.leaf_der).expect("pin"))
        .build()
        .expect("client");
    let err = untrusted
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect_err("unknown issuer");
    assert!(matches!(err, sdk_client::Error::Transport(_)), "{err:?}");
}
