//! Unit tests of `wire`: addresses, headers, error words, a refused dial.

use super::*;

fn tls() -> Arc<rustls::ClientConfig> {
    tls_config(None, None, &[b"h2"]).expect("the roots load")
}

#[test]
fn addresses_become_a_target() {
    // (base address, authority sent, host dialled, port, TLS)
    let table = [
        (
            "https://api.push.apple.com",
            "api.push.apple.com",
            "api.push.apple.com",
            443,
            true,
        ),
        (
            "https://api.sandbox.push.apple.com:2197/",
            "api.sandbox.push.apple.com:2197",
            "api.sandbox.push.apple.com",
            2197,
            true,
        ),
        (
            "http://127.0.0.1:8080",
            "127.0.0.1:8080",
            "127.0.0.1",
            8080,
            false,
        ),
        ("https://[::1]:9443", "[::1]:9443", "::1", 9443, true),
    ];
    for (base, authority, host, port, with_tls) in table {
        let wire = Wire::new(
            &url::Url::parse(base).unwrap(),
            tls(),
            Duration::from_secs(1),
            None,
        )
        .unwrap_or_else(|e| panic!("{base}: {e}"));
        assert_eq!(wire.target.authority.as_str(), authority, "{base}");
        assert_eq!(wire.target.host, host, "{base}");
        assert_eq!(wire.target.port, port, "{base}");
        assert_eq!(wire.target.tls.is_some(), with_tls, "{base}");
    }
    let refused = Wire::new(
        &url::Url::parse("ftp://h/").unwrap(),
        tls(),
        Duration::from_secs(1),
        None,
    );
    assert!(refused.is_err());
}

#[test]
fn io_errors_are_told_in_words() {
    use std::io::ErrorKind as K;
    let table = [
        (K::ConnectionRefused, "connection refused"),
        (K::UnexpectedEof, "connection closed"),
        (
            K::InvalidData,
            "TLS: the provider's certificate or handshake was refused",
        ),
        (K::Other, "i/o error"),
    ];
    for (kind, words) in table {
        assert_eq!(WireError::io(&std::io::Error::from(kind)).0, words);
    }
}

#[tokio::test]
async fn nothing_listening_is_connection_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let base = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let wire = Wire::new(&base, tls(), Duration::from_secs(5), None).unwrap();
    let err = wire
        .post("/3/device/ab", HeaderMap::new(), Bytes::from_static(b"{}"))
        .await
        .err()
        .expect("nothing listens");
    assert_eq!(err.0, "connection refused");
}

#[test]
fn the_authorization_is_sensitive_and_checked() {
    let value = bearer("abc").expect("valid");
    assert_eq!(value, "Bearer abc");
    assert!(value.is_sensitive());
    let headers = json_with_authorization(value);
    assert_eq!(headers[http::header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[http::header::AUTHORIZATION], "Bearer abc");
    assert!(headers[http::header::AUTHORIZATION].is_sensitive());
    assert_eq!(headers.len(), 2);
    assert!(bearer("a\nb").is_err());
}
