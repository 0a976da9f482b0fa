//! Key and certificate material generated per test run.

use base64::Engine;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};

/// A fresh APNs `.p8` key: PEM PKCS#8 P-256.
pub fn apns_p8() -> String {
    p256::SecretKey::random(&mut rand::rngs::OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encode")
        .to_string()
}

/// A `.p12` (base64) holding a self-signed certificate valid between the offsets
/// (days from now), and its private key DER, locked with `password`.
pub fn apns_p12(password: &str, not_before_days: i64, not_after_days: i64) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["push.example".to_owned()]).expect("params");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Apple Push Services: com.acme.auth",
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(not_before_days);
    params.not_after = now + time::Duration::days(not_after_days);
    let cert = params.self_signed(&key).expect("sign");
    (p12_of(&key, cert.der(), password), key.serialize_der())
}

/// A `.p12` (base64) holding `key` and its certificate, under `password`.
pub fn p12_of(key: &rcgen::KeyPair, cert_der: &[u8], password: &str) -> String {
    let chain = p12_keystore::PrivateKeyChain::new(
        "apns",
        p12_keystore::PrivateKey::from_der(&key.serialize_der()).expect("key der"),
        [p12_keystore::Certificate::from_der(cert_der).expect("cert der")],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("apns", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let der = store.writer(password).write().expect("p12");
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// A Google service-account JSON with a fresh RSA key; also returns the key PEM.
pub fn service_account(project: &str) -> (Value, String) {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa");
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let sa = json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": format!("push@{project}.iam.gserviceaccount.com"),
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    (sa, pem)
}

/// The base64 body lines of a PEM, joined: what a leak of the key would contain.
pub fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// A public RSA JWK with `bits` modulus and the given kid.
pub fn rsa_public_jwk(bits: usize, kid: &str) -> Value {
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).expect("rsa");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "n": b64.encode(key.n().to_bytes_be()),
        "e": b64.encode(key.e().to_bytes_be()),
    })
}
