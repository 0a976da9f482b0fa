//! The client with a foreign signer (a platform keystore): the key signs in
//! place, the client builds every proof around it and never needs the key's
//! bytes — the `Signer` trait has no way to ask for them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sdk_client::{Client, NewRegistration, RetryPolicy, Signer};
use serde_json::{json, Value};

use crate::actors::TestNotifier;
use crate::both_backends;
use crate::helpers::TestApp;
use crate::notify::{next_within, send};

/// A keystore as Android's behaves: the private key is a field nothing reads
/// but `sign`, ES256 signatures come in DER, and every use is counted.
struct Keystore {
    key: Secret,
    signatures: AtomicU32,
}

enum Secret {
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>, Value),
}

impl Keystore {
    fn p256() -> Arc<Self> {
        Arc::new(Keystore {
            key: Secret::P256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng)),
            signatures: AtomicU32::new(0),
        })
    }

    fn rsa() -> Arc<Self> {
        use base64::Engine;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa");
        let b64 = |n: &rsa::BigUint| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.to_bytes_be())
        };
        let jwk = json!({"kty": "RSA", "n": b64(private.n()), "e": b64(private.e())});
        Arc::new(Keystore {
            key: Secret::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(private)), jwk),
            signatures: AtomicU32::new(0),
        })
    }
}

impl Signer for Keystore {
    fn alg(&self) -> String {
        match self.key {
            Secret::P256(_) => "ES256".into(),
            Secret::Rsa(..) => "RS256".into(),
        }
    }

    fn public_jwk(&self) -> Value {
        match &self.key {
            Secret::P256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                use base64::Engine;
                let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                json!({"kty": "EC", "crv": "P-256",
                    "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))})
            }
            Secret::Rsa(_, jwk) => jwk.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, sdk_client::Error> {
        use rsa::signature::{SignatureEncoding, Signer as _};
        self.signatures.fetch_add(1, Ordering::Relaxed);
        Ok(match &self.key {
            Secret::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_der().as_bytes().to_vec()
            }
            Secret::Rsa(key, _) => key.sign(message).to_vec(),
        })
    }
}

fn client(app: &TestApp, signer: Arc<Keystore>) -> Client<Arc<Keystore>> {
    Client::builder_with_signer(&app.base, signer)
        .retry(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .expect("client")
}

async fn a_foreign_signer_does_everything(app: TestApp) {
    let app_id = app.create_app("Acme").await;
    let notifier = TestNotifier::create(&app, &app_id, &["notify"]).await;
    for keystore in [Keystore::p256(), Keystore::rsa()] {
        let device = client(&app, keystore.clone());
        let fcm = device
            .register(
                &app_id,
                &NewRegistration::fcm(&crate::actors::fcm_token(), "android"),
            )
            .await
            .expect("register fcm");
        let direct = device
            .register(&app_id, &NewRegistration::direct("linux"))
            .await
            .expect("register direct");
        assert_eq!(
            device.status(&fcm.id).await.expect("status").status,
            "active"
        );
        let rotated = device
            .rotate(&fcm.id, &crate::actors::fcm_token())
            .await
            .expect("rotate");
        assert_eq!(rotated.status, "active");
        let mut listener = device.listen(&direct.id);
        assert!(next_within(&mut listener, Duration::from_millis(300))
            .await
            .is_none());
        send(
            &app,
            &notifier,
            json!({"targets": {"registrations": [direct.id]}, "notification": {"title": "hello"}}),
        )
        .await;
        let event = next_within(&mut listener, Duration::from_secs(5))
            .await
            .expect("event");
        assert_eq!(event.notification["title"], "hello");
        // Another key acting on this registration: a typed problem.
        let stranger = client(&app, Keystore::p256());
        let err = stranger.delete(&fcm.id).await.expect_err("another key");
        assert_eq!(err.problem_kind(), Some("forbidden"), "{err}");
        device.delete(&fcm.id).await.expect("delete");
        device.delete(&direct.id).await.expect("delete");
        // Every call was signed in the keystore, and the service bound the
        // registrations to the keystore's key.
        assert!(keystore.signatures.load(Ordering::Relaxed) >= 7);
    }
}
both_backends!(
    a_keystore_signer_registers_rotates_listens_and_deletes,
    super::a_foreign_signer_does_everything
);
