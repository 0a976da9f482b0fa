//! The two foreign traits: the app's keystore signs and decrypts in place.

use std::sync::Arc;

use serde_json::Value;

use crate::{KeystoreError, PushClientError};

/// The device key, implemented by the app over its platform keystore. There is
/// no method that gives key bytes out: the client needs none.
#[uniffi::export(foreign)]
pub trait Signer: Send + Sync {
    /// `ES256` (P-256), `RS256` or `RS512` (RSA ≥ 2048 bits).
    fn algorithm(&self) -> Result<String, KeystoreError>;
    /// The public key as a JWK (JSON text), without private members.
    fn public_jwk(&self) -> Result<String, KeystoreError>;
    /// The signature over `message`: PKCS#1 v1.5 for RS256/RS512; for ES256
    /// DER (as `java.security.Signature` and CryptoKit's `derRepresentation`
    /// give it) or the raw R‖S form.
    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, KeystoreError>;
}

/// The encryption key content is sealed to, implemented over the platform
/// keystore: only the key-agreement or key-unwrapping step needs the private
/// key; the client does the rest (key wrap, AES-GCM).
#[uniffi::export(foreign)]
pub trait Decrypter: Send + Sync {
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 of `encrypted_key` (the JWE's
    /// wrapped content key): the 32-byte content key.
    fn rsa_oaep_256(&self, encrypted_key: Vec<u8>) -> Result<Vec<u8>, KeystoreError>;
    /// ECDH with the sender's ephemeral public key (a JWK, JSON text): the
    /// shared secret (P-256: the 32-byte x coordinate; X25519: the output).
    fn agree(&self, ephemeral_public_jwk: String) -> Result<Vec<u8>, KeystoreError>;
}

/// A foreign [`Signer`] as sdk-client's signer. Its algorithm and public JWK
/// are asked once and kept; only `sign` crosses again.
#[derive(Clone)]
pub(crate) struct PlatformSigner {
    alg: String,
    jwk: Value,
    inner: Arc<dyn Signer>,
}

fn keystore(error: KeystoreError) -> PushClientError {
    PushClientError::Key {
        detail: format!("the platform keystore: {error}"),
    }
}

impl PlatformSigner {
    pub(crate) fn new(inner: Arc<dyn Signer>) -> Result<Self, PushClientError> {
        let alg = inner.algorithm().map_err(keystore)?;
        let jwk: Value =
            serde_json::from_str(&inner.public_jwk().map_err(keystore)?).map_err(|e| {
                PushClientError::Key {
                    detail: format!("the signer's public JWK is not JSON: {e}"),
                }
            })?;
        // What it says of itself is checked where every client is built
        // (`sdk_client::ClientBuilder::build`).
        Ok(PlatformSigner { alg, jwk, inner })
    }
}

impl sdk_client::Signer for PlatformSigner {
    fn alg(&self) -> String {
        self.alg.clone()
    }

    fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, sdk_client::Error> {
        self.inner
            .sign(message.to_vec())
            .map_err(|e| sdk_client::Error::Key(format!("the platform signer: {e}")))
    }
}

/// A foreign [`Decrypter`] as push-jose's.
pub(crate) struct PlatformDecrypter(pub(crate) Arc<dyn Decrypter>);

impl push_jose::Decrypter for PlatformDecrypter {
    fn rsa_oaep_256(&self, encrypted_key: &[u8]) -> Result<Vec<u8>, push_jose::Error> {
        self.0
            .rsa_oaep_256(encrypted_key.to_vec())
            .map_err(|e| push_jose::Error::Key(format!("the platform decrypter: {e}")))
    }

    fn agree(&self, ephemeral: &push_jose::PublicKey) -> Result<Vec<u8>, push_jose::Error> {
        self.0
            .agree(ephemeral.to_jwk().to_string())
            .map_err(|e| push_jose::Error::Key(format!("the platform decrypter: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sdk_client::Signer as _;

    use super::*;

    /// A keystore as the app would write it: the key stays inside; every call
    /// the client makes is recorded.
    struct Recording {
        key: sdk_client::DeviceKey,
        jwk: String,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Recording {
        fn new(key: sdk_client::DeviceKey, jwk: Option<String>) -> Arc<Self> {
            let jwk = jwk.unwrap_or_else(|| key.public_jwk().to_string());
            Arc::new(Recording {
                key,
                jwk,
                calls: Mutex::new(Vec::new()),
            })
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
        fn record(&self, call: &'static str) {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(call);
            }
        }
    }

    impl Signer for Recording {
        fn algorithm(&self) -> Result<String, KeystoreError> {
            self.record("algorithm");
            Ok(self.key.alg().to_owned())
        }
        fn public_jwk(&self) -> Result<String, KeystoreError> {
            self.record("public_jwk");
            Ok(self.jwk.clone())
        }
        fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, KeystoreError> {
            self.record("sign");
            Ok(self.key.sign(&message))
        }
    }

    #[test]
    fn a_foreign_signer_is_asked_once_for_what_it_is_then_only_to_sign() {
        let p256 = sdk_client::DeviceKey::generate_p256();
        let leaky = {
            let mut jwk = p256.public_jwk();
            jwk["d"] = serde_json::json!("c2VjcmV0");
            jwk.to_string()
        };
        // (JWK given, refusal words; None: taken)
        let rows: Vec<(Option<String>, Option<&str>)> = vec![
            (None, None),
            (Some(leaky), Some("private member `d`")),
            (Some("not json".into()), Some("not JSON")),
        ];
        for (jwk, refusal) in rows {
            let keystore = Recording::new(p256.clone(), jwk.clone());
            // As `PushClient::new` makes it: wrapped, then checked by the builder.
            let made = PlatformSigner::new(keystore.clone()).and_then(|signer| {
                sdk_client::Client::builder_with_signer("http://127.0.0.1:9", signer.clone())
                    .build()
                    .map(|_| signer)
                    .map_err(PushClientError::from)
            });
            match (made, refusal) {
                (Ok(signer), None) => {
                    for _ in 0..3 {
                        let proof = sdk_client::signed_dpop_proof(&signer, "GET", "https://x/y")
                            .expect("proof");
                        assert_eq!(proof.split('.').count(), 3);
                    }
                    assert_eq!(signer.alg(), "ES256");
                    assert_eq!(
                        keystore.calls(),
                        ["algorithm", "public_jwk", "sign", "sign", "sign"]
                    );
                }
                (Err(e), Some(words)) => {
                    assert!(e.to_string().contains(words), "{jwk:?}: `{e}`");
                    assert!(
                        !keystore.calls().contains(&"sign"),
                        "refused before signing"
                    );
                }
                (answer, _) => panic!("{jwk:?}: {:?}", answer.err()),
            }
        }
    }

    #[test]
    fn a_keystore_failure_is_a_key_error_naming_the_keystore() {
        struct Locked;
        impl Signer for Locked {
            fn algorithm(&self) -> Result<String, KeystoreError> {
                Err(KeystoreError::Failed {
                    detail: "user not authenticated".into(),
                })
            }
            fn public_jwk(&self) -> Result<String, KeystoreError> {
                Ok("{}".into())
            }
            fn sign(&self, _: Vec<u8>) -> Result<Vec<u8>, KeystoreError> {
                Ok(Vec::new())
            }
        }
        match PlatformSigner::new(Arc::new(Locked)) {
            Err(PushClientError::Key { detail }) => {
                assert!(detail.contains("user not authenticated"), "{detail}")
            }
            other => panic!("{:?}", other.err()),
        }
    }
}
