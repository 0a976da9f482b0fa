//! The JWE push-service seals content with (RFC 7516, compact serialization),
//! built on RustCrypto primitives.
//!
//! One content encryption, `A256GCM`, and two key managements, each chosen
//! by the recipient's key type:
//! - `RSA-OAEP-256` for an RSA key of at least 2048 bits (RFC 7518 §4.3);
//! - `ECDH-ES+A256KW` for a P-256 key or an X25519 key (RFC 7518 §4.6,
//!   RFC 8037 §3.2): an ephemeral key per message, the Concat KDF, AES key wrap.
//!
//! The service only ever seals ([`seal`]) and checks the shape of JWEs sealed
//! by others ([`inspect`]). The device opens ([`open`]) through a
//! [`Decrypter`]: the one operation that needs the private key (an RSA-OAEP
//! decryption or an ECDH agreement) is the decrypter's, so a platform keystore
//! can do it without the key ever leaving it; [`PrivateKey`] is the in-memory
//! implementation.

mod jwe;
mod jwk;
mod kdf;

pub use jwe::{inspect, open, seal, Decrypter, Header};
pub use jwk::{PrivateKey, PublicKey};

/// Content encryption: AES-256-GCM.
pub const ENC: &str = "A256GCM";
/// Key management for RSA keys.
pub const RSA_OAEP_256: &str = "RSA-OAEP-256";
/// Key management for P-256 and X25519 keys.
pub const ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 4096;

/// What went wrong; the text says what, never a key's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A JWK that is not an encryption key this module takes.
    #[error("{0}")]
    Key(String),
    /// A JWE whose shape or header is not one this module takes.
    #[error("{0}")]
    Malformed(String),
    /// The key does not open this JWE, or it was altered.
    #[error("the JWE cannot be decrypted with this key (another key's, or altered)")]
    Decrypt,
}
