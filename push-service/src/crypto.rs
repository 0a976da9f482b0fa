//! Encryption at rest under the master key ring (AES-256-GCM): provider
//! credentials, and sealed inbox content.
//!
//! A node holds a ring: its current master key and, during a key rotation, the
//! previous one. A blob is sealed once under every key of the sealing node's
//! ring, each copy tagged with its key's id, so any node whose ring shares one
//! key with the blob opens it (`docs/OPERATIONS.md`, "Rotating the master key").

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 8;
/// Version byte of a blob sealed under one unnamed key (written before key rings).
const FORMAT_V1: u8 = 1;
/// Version byte of a blob sealed under one or more keys, each copy with its key id:
/// `2 ‖ count ‖ (key id ‖ nonce ‖ length (u16, big-endian) ‖ ciphertext+tag)*`.
const FORMAT_V2: u8 = 2;
/// Version byte of a blob too large for a V2 copy (inbox content): a random
/// data key sealed as a V2 blob, then the plaintext under the data key:
/// `3 ‖ length of the V2 blob (u16, big-endian) ‖ V2 blob ‖ nonce ‖ ciphertext+tag`.
const FORMAT_V3: u8 = 3;
/// Largest plaintext a V2 copy holds (its length field is 16 bits).
const MAX_V2_PLAINTEXT: usize = u16::MAX as usize - 16;
/// At most this many keys in a ring (current + previous ones).
pub const MAX_KEYS: usize = 4;

/// A master key's public name: the first 8 bytes of a SHA-256 over a label and
/// the key (says which key sealed a copy; reveals nothing of the key).
pub fn key_id(master_key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(b"push-service master key id\0")
        .chain_update(master_key)
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

#[derive(Clone)]
struct RingKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

/// Seals and opens credential blobs. The associated data binds a blob to its row
/// (app and provider), so a ciphertext copied to another row does not open.
#[derive(Clone)]
pub struct Sealer {
    /// The current key first, then the previous ones.
    keys: Vec<RingKey>,
}

/// A sealed blob failed to open: no key of the ring sealed it, or tampered data.
#[derive(Debug, thiserror::Error)]
#[error("stored credential cannot be decrypted (no key of this node's master key ring sealed it, or the data is corrupted)")]
pub struct OpenError;

impl Sealer {
    /// A sealer keyed by one 32-byte master key.
    pub fn new(master_key: &[u8; 32]) -> Self {
        Self::ring(master_key, &[])
    }

    /// A ring: seals under `current` and every `previous` key, opens with any.
    pub fn ring(current: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        let keys = std::iter::once(current)
            .chain(previous.iter().filter(|key| *key != current))
            .take(MAX_KEYS)
            .map(|key| RingKey {
                id: key_id(key),
                cipher: Aes256Gcm::new(key.into()),
            })
            .collect();
        Sealer { keys }
    }

    /// The ids of the ring's keys, current first.
    pub fn key_ids(&self) -> Vec<[u8; KEY_ID_LEN]> {
        self.keys.iter().map(|key| key.id).collect()
    }

    /// Encrypts `plaintext` under every key of the ring: a V2 blob, or for a
    /// plaintext larger than a V2 copy holds, a V3 blob (a data key sealed
    /// under every key, the plaintext once under the data key).
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        if plaintext.len() <= MAX_V2_PLAINTEXT {
            return self.seal_v2(plaintext, aad);
        }
        let mut data_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut data_key);
        let wrapped = self.seal_v2(&data_key, aad);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = Aes256Gcm::new(&data_key.into())
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(3 + wrapped.len() + NONCE_LEN + ciphertext.len());
        out.push(FORMAT_V3);
        // A ring of at most MAX_KEYS copies of a 48-byte ciphertext.
        out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    fn seal_v2(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut out = vec![FORMAT_V2, self.keys.len() as u8];
        for key in &self.keys {
            let mut nonce = [0u8; NONCE_LEN];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let ciphertext = key
                .cipher
                .encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: plaintext,
                        aad: aad.as_bytes(),
                    },
                )
                .expect("AES-GCM encryption of an in-memory buffer cannot fail");
            let len = u16::try_from(ciphertext.len())
                .expect("a V2 copy holds at most MAX_V2_PLAINTEXT bytes (seal checks)");
            out.extend_from_slice(&key.id);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&ciphertext);
        }
        out
    }

    /// Decrypts a blob made by [`Sealer::seal`] (or a V1 blob) with the same
    /// associated data, using whichever key of the ring sealed a copy.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, OpenError> {
        let decrypt = |key: &RingKey, nonce: &[u8], ciphertext: &[u8]| {
            let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
            key.cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| OpenError)
        };
        match sealed.first() {
            Some(&FORMAT_V1) if sealed.len() > NONCE_LEN => {
                let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
                self.keys
                    .iter()
                    .find_map(|key| decrypt(key, nonce, ciphertext).ok())
                    .ok_or(OpenError)
            }
            Some(&FORMAT_V2) => {
                for (id, nonce, ciphertext) in copies(sealed).ok_or(OpenError)? {
                    if let Some(key) = self.keys.iter().find(|key| key.id == id) {
                        return decrypt(key, nonce, ciphertext);
                    }
                }
                Err(OpenError)
            }
            Some(&FORMAT_V3) => {
                let (wrapped, rest) = envelope(sealed).ok_or(OpenError)?;
                let data_key: [u8; 32] =
                    self.open(wrapped, aad)?.try_into().map_err(|_| OpenError)?;
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
                Aes256Gcm::new(&data_key.into())
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: aad.as_bytes(),
                        },
                    )
                    .map_err(|_| OpenError)
            }
            _ => Err(OpenError),
        }
    }

    /// Whether `sealed` holds exactly one copy per key of this ring (V2), so
    /// resealing it would change nothing but its nonces.
    pub fn sealed_as_ring(&self, sealed: &[u8]) -> bool {
        if sealed.first() == Some(&FORMAT_V3) {
            return envelope(sealed).is_some_and(|(wrapped, _)| self.sealed_as_ring(wrapped));
        }
        sealed.first() == Some(&FORMAT_V2)
            && copies(sealed).is_some_and(|copies| {
                copies.iter().map(|(id, _, _)| *id).collect::<Vec<_>>() == self.key_ids()
            })
    }
}

/// One sealed copy of a V2 blob: (key id, nonce, ciphertext).
type SealedCopy<'a> = ([u8; KEY_ID_LEN], &'a [u8], &'a [u8]);

/// The copies of a V2 blob; `None` when malformed.
fn copies(sealed: &[u8]) -> Option<Vec<SealedCopy<'_>>> {
    let (&count, mut rest) = sealed.get(1..)?.split_first()?;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id: [u8; KEY_ID_LEN] = rest.get(..KEY_ID_LEN)?.try_into().ok()?;
        let nonce = rest.get(KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN)?;
        let at = KEY_ID_LEN + NONCE_LEN;
        let len = u16::from_be_bytes(rest.get(at..at + 2)?.try_into().ok()?) as usize;
        let ciphertext = rest.get(at + 2..at + 2 + len)?;
        out.push((id, nonce, ciphertext));
        rest = &rest[at + 2 + len..];
    }
    rest.is_empty().then_some(out)
}

/// The parts of a V3 blob: the sealed data key (a V2 blob), then nonce and
/// ciphertext; `None` when malformed.
fn envelope(sealed: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes(sealed.get(1..3)?.try_into().ok()?) as usize;
    let wrapped = sealed.get(3..3 + len)?;
    let rest = sealed.get(3 + len..)?;
    (wrapped.first() == Some(&FORMAT_V2) && rest.len() > NONCE_LEN).then_some((wrapped, rest))
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

    /// Beyond what a V2 copy holds: an envelope, opened by any key of the
    /// ring, bound to its associated data, refused when cut or altered.
    #[test]
    fn large_plaintexts_are_sealed_in_an_envelope() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let ring = Sealer::ring(&b, &[a]);
        for size in [MAX_V2_PLAINTEXT, MAX_V2_PLAINTEXT + 1, 1 << 20] {
            let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let blob = ring.seal(&plaintext, "inbox/r/n");
            assert_eq!(
                blob[0],
                if size > MAX_V2_PLAINTEXT {
                    FORMAT_V3
                } else {
                    FORMAT_V2
                }
            );
            assert!(ring.sealed_as_ring(&blob));
            for opener in [Sealer::new(&a), Sealer::new(&b)] {
                assert_eq!(opener.open(&blob, "inbox/r/n").expect("opens"), plaintext);
            }
            assert!(ring.open(&blob, "inbox/r/m").is_err());
            assert!(Sealer::new(&[3u8; 32]).open(&blob, "inbox/r/n").is_err());
            if size > MAX_V2_PLAINTEXT {
                // The content's ciphertext is the end of an envelope.
                let mut altered = blob.clone();
                let last = altered.len() - 1;
                altered[last] ^= 1;
                assert!(ring.open(&altered, "inbox/r/n").is_err());
            }
            assert!(ring.open(&blob[..blob.len() / 2], "inbox/r/n").is_err());
            assert!(ring.open(&blob[..4], "inbox/r/n").is_err());
        }
    }

    #[test]
    fn a_ring_opens_what_any_of_its_keys_sealed() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let only_a = Sealer::new(&a);
        let b_then_a = Sealer::ring(&b, &[a]);
        let only_b = Sealer::new(&b);
        let sealed_by_a = only_a.seal(b"k", "x");
        let sealed_by_ring = b_then_a.seal(b"k", "x");
        // (sealer, blob, opens?)
        let cases = [
            (&only_a, &sealed_by_a, true),
            (&b_then_a, &sealed_by_a, true),
            (&only_b, &sealed_by_a, false),
            (&only_a, &sealed_by_ring, true),
            (&only_b, &sealed_by_ring, true),
            (&b_then_a, &sealed_by_ring, true),
            (&Sealer::new(&c), &sealed_by_ring, false),
        ];
        for (i, (sealer, blob, opens)) in cases.into_iter().enumerate() {
            assert_eq!(sealer.open(blob, "x").is_ok(), opens, "case {i}");
        }
        assert!(b_then_a.sealed_as_ring(&sealed_by_ring));
        assert!(!only_b.sealed_as_ring(&sealed_by_ring));
        assert!(only_b.sealed_as_ring(&only_b.seal(b"k", "x")));
    }

    #[test]
    fn version_one_blobs_still_open() {
        // A blob as the single-key format wrote it: 1 ‖ nonce ‖ ciphertext+tag.
        let key = [9u8; 32];
        let nonce = [4u8; NONCE_LEN];
        let ciphertext = Aes256Gcm::new((&key).into())
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: b"old".as_slice(),
                    aad: b"app/fcm".as_slice(),
                },
            )
            .unwrap();
        let blob = [&[FORMAT_V1][..], &nonce, &ciphertext].concat();
        assert_eq!(
            Sealer::ring(&[5u8; 32], &[key])
                .open(&blob, "app/fcm")
                .unwrap(),
            b"old"
        );
        assert!(Sealer::new(&[5u8; 32]).open(&blob, "app/fcm").is_err());
    }

    #[test]
    fn malformed_blobs_are_refused_not_panicked_on() {
        let sealer = Sealer::new(&[7u8; 32]);
        let good = sealer.seal(b"secret", "a");
        for cut in 0..good.len() {
            assert!(sealer.open(&good[..cut], "a").is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(sealer.open(&longer, "a").is_err());
        assert!(sealer.open(&[2, 200], "a").is_err());
    }
}
