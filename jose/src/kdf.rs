//! The Concat KDF of NIST SP 800-56A as JWA uses it (RFC 7518 §4.6.2), with
//! SHA-256, for keys of at most 256 bits (one round).

use sha2::{Digest, Sha256};

/// Derives `bits` (a multiple of 8, at most 256) of key from the shared
/// secret `z` for algorithm `alg` (the `enc` value for direct ECDH-ES, the
/// `alg` value for the key-wrapping variants).
pub(crate) fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], bits: u32) -> Vec<u8> {
    debug_assert!(bits % 8 == 0 && bits <= 256);
    let mut hash = Sha256::new();
    hash.update(1u32.to_be_bytes());
    hash.update(z);
    for field in [alg.as_bytes(), apu, apv] {
        hash.update((field.len() as u32).to_be_bytes());
        hash.update(field);
    }
    hash.update(bits.to_be_bytes());
    let mut out = hash.finalize().to_vec();
    out.truncate(bits as usize / 8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    /// RFC 7518 Appendix C: ECDH-ES between Alice's ephemeral key and Bob's,
    /// `A128GCM`, apu "Alice", apv "Bob".
    #[test]
    fn derives_the_key_of_rfc_7518_appendix_c() {
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let key = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(URL_SAFE_NO_PAD.encode(key), "VqqN6vgjbSBcIijNcacQGg");
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = concat_kdf(b"secret", "ECDH-ES+A256KW", b"", b"", 256);
        assert_eq!(base.len(), 32);
        for other in [
            concat_kdf(b"secreT", "ECDH-ES+A256KW", b"", b"", 256),
            concat_kdf(b"secret", "ECDH-ES+A128KW", b"", b"", 256),
            // The length fields keep apu "a" apart from apv "a".
            concat_kdf(b"secret", "ECDH-ES+A256KW", b"a", b"", 256),
            concat_kdf(b"secret", "ECDH-ES+A256KW", b"", b"a", 256),
            // The key length is an input too, not only a truncation.
            concat_kdf(b"secret", "ECDH-ES+A256KW", b"", b"", 128),
        ] {
            assert_ne!(base[..other.len()], other[..]);
        }
    }
}
