//! Encryption of stored credentials under the master key (AES-256-GCM).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;
/// Version byte in front of every sealed blob, so the format can change later.
const FORMAT_V1: u8 = 1;

/// Seals and opens credential blobs. The associated data binds a blob to its row
/// (app and provider), so a ciphertext copied to another row does not open.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

/// A sealed blob failed to open: wrong master key, or tampered data.
#[derive(Debug, thiserror::Error)]
#[error("stored credential cannot be decrypted (wrong master key or corrupted data)")]
pub struct OpenError;

impl Sealer {
    /// A sealer keyed by the 32-byte master key.
    pub fn new(master_key: &[u8; 32]) -> Self {
        Sealer {
            cipher: Aes256Gcm::new(master_key.into()),
        }
    }

    /// Encrypts `plaintext`; output is version ‖ nonce ‖ ciphertext+tag.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a blob made by [`Sealer::seal`] with the same associated data.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| OpenError)
    }
}

/// `sha256:<hex>` of some bytes (a public key or certificate), shown to operators.
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_aad() {
        let sealer = Sealer::new(&[7u8; 32]);
        let blob = sealer.seal(b"secret key", "app_1/apns");
        assert!(!blob.windows(10).any(|w| w == b"secret key"));
        assert_eq!(
            sealer.open(&blob, "app_1/apns").expect("opens"),
            b"secret key"
        );
        assert!(sealer.open(&blob, "app_2/apns").is_err());
        assert!(Sealer::new(&[8u8; 32]).open(&blob, "app_1/apns").is_err());
    }
}
