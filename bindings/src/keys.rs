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
/// are asked once, checked, and kept; only `sign` crosses again.
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
        sdk_client::check_signer(&alg, &jwk)?;
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
