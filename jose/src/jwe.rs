//! Compact JWEs (RFC 7516 §7.1): sealed to a public key, checked for shape,
//! opened through a [`Decrypter`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aes_kw::KekAes256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::kdf::concat_kdf;
use crate::{Error, PrivateKey, PublicKey, ECDH_ES_A256KW, ENC, RSA_OAEP_256};

const IV_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const CEK_BYTES: usize = 32;
/// An AES key wrap of a 256-bit key: the key and one 64-bit block.
const WRAPPED_CEK_BYTES: usize = CEK_BYTES + 8;

/// The one operation that needs the recipient's private key. A platform
/// keystore (Android Keystore, Secure Enclave) implements it without giving
/// the key out; [`PrivateKey`] implements it in memory.
pub trait Decrypter {
    /// RSA-OAEP with SHA-256 (and MGF1 with SHA-256) of `encrypted_key`: the
    /// content key.
    fn rsa_oaep_256(&self, encrypted_key: &[u8]) -> Result<Vec<u8>, Error>;
    /// The ECDH shared secret with the sender's ephemeral key: the x
    /// coordinate for P-256, the X25519 output.
    fn agree(&self, ephemeral: &PublicKey) -> Result<Vec<u8>, Error>;
}

/// What a JWE's protected header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `RSA-OAEP-256` or `ECDH-ES+A256KW`.
    pub alg: String,
    /// Always `A256GCM`.
    pub enc: String,
    /// The recipient key's thumbprint, when the sender named it.
    pub kid: Option<String>,
    /// The content type, when the sender named it.
    pub cty: Option<String>,
    /// The sender's ephemeral key (ECDH-ES only).
    pub epk: Option<PublicKey>,
    apu: Vec<u8>,
    apv: Vec<u8>,
}

/// A compact JWE, decoded and checked, not yet decrypted.
struct Parts<'a> {
    header: Header,
    /// The first segment as sent: the additional authenticated data.
    aad: &'a str,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn segment(value: &str, name: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| Error::Malformed(format!("the JWE's {name} is not base64url")))
}

/// Seals `plaintext` to `to` as a compact JWE: `A256GCM` content encryption,
/// the key management `to` takes, `kid` its thumbprint, `cty` when given.
pub fn seal(to: &PublicKey, plaintext: &[u8], cty: Option<&str>) -> Result<String, Error> {
    let mut rng = rand::rngs::OsRng;
    let mut cek = Zeroizing::new([0u8; CEK_BYTES]);
    rng.fill_bytes(cek.as_mut());
    let mut header = Map::new();
    header.insert("alg".into(), json!(to.alg()));
    header.insert("enc".into(), json!(ENC));
    header.insert("kid".into(), json!(to.thumbprint()));
    if let Some(cty) = cty {
        header.insert("cty".into(), json!(cty));
    }
    let (z, ephemeral) = match to {
        PublicKey::Rsa(key) => {
            let encrypted_key = key
                .encrypt(&mut rng, rsa::Oaep::new::<Sha256>(), cek.as_ref())
                .map_err(|e| Error::Key(format!("RSA-OAEP failed: {e}")))?;
            return finish(header, &encrypted_key, cek.as_ref(), plaintext);
        }
        PublicKey::P256(key) => {
            let secret = p256::ecdh::EphemeralSecret::random(&mut rng);
            let z = secret.diffie_hellman(key).raw_secret_bytes().to_vec();
            (z, PublicKey::P256(secret.public_key()))
        }
        PublicKey::X25519(key) => {
            let secret = x25519_dalek::EphemeralSecret::random_from_rng(rng);
            let public = x25519_dalek::PublicKey::from(&secret);
            let shared = secret.diffie_hellman(key);
            if !shared.was_contributory() {
                return Err(Error::Key("this X25519 key is of low order".into()));
            }
            (shared.as_bytes().to_vec(), PublicKey::X25519(public))
        }
    };
    let z = Zeroizing::new(z);
    header.insert("epk".into(), ephemeral.members());
    let kek = kek(&z, &[], &[])?;
    let encrypted_key = kek
        .wrap_vec(cek.as_ref())
        .map_err(|e| Error::Key(format!("AES key wrap failed: {e}")))?;
    finish(header, &encrypted_key, cek.as_ref(), plaintext)
}

fn kek(z: &[u8], apu: &[u8], apv: &[u8]) -> Result<KekAes256, Error> {
    let derived = Zeroizing::new(concat_kdf(z, ECDH_ES_A256KW, apu, apv, 256));
    KekAes256::try_from(derived.as_slice()).map_err(|_| Error::Decrypt)
}

fn finish(
    header: Map<String, Value>,
    encrypted_key: &[u8],
    cek: &[u8],
    plaintext: &[u8],
) -> Result<String, Error> {
    let protected = b64(Value::Object(header).to_string().as_bytes());
    let mut iv = [0u8; IV_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let cipher = Aes256Gcm::new_from_slice(cek).map_err(|_| Error::Decrypt)?;
    let mut sealed = cipher
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| Error::Key("AES-GCM refused the content (too long)".into()))?;
    let tag = sealed.split_off(sealed.len() - TAG_BYTES);
    Ok([
        protected,
        b64(encrypted_key),
        b64(&iv),
        b64(&sealed),
        b64(&tag),
    ]
    .join("."))
}

/// Decodes a compact JWE and checks it is one this module can open: the
/// header's algorithms, no compression, no critical extensions, the sizes of
/// the IV, the tag and a wrapped key. Nothing is decrypted.
pub fn inspect(compact: &str) -> Result<Header, Error> {
    parse(compact).map(|parts| parts.header)
}

fn parse(compact: &str) -> Result<Parts<'_>, Error> {
    let segments: Vec<&str> = compact.split('.').collect();
    let [protected, encrypted_key, iv, ciphertext, tag] = segments[..] else {
        return Err(Error::Malformed(format!(
            "a compact JWE has 5 segments separated by `.`, not {}",
            segments.len()
        )));
    };
    let header: Value = serde_json::from_slice(&segment(protected, "protected header")?)
        .map_err(|_| Error::Malformed("the JWE's protected header is not JSON".into()))?;
    let header = header.as_object().ok_or_else(|| {
        Error::Malformed("the JWE's protected header is not a JSON object".into())
    })?;
    let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_owned);
    for refused in ["zip", "crit", "jku", "x5u"] {
        if header.contains_key(refused) {
            return Err(Error::Malformed(format!(
                "a JWE with `{refused}` is not taken"
            )));
        }
    }
    let alg = text("alg").unwrap_or_default();
    if alg != RSA_OAEP_256 && alg != ECDH_ES_A256KW {
        return Err(Error::Malformed(format!(
            "`alg` `{alg}` is not taken ({RSA_OAEP_256} or {ECDH_ES_A256KW})"
        )));
    }
    let enc = text("enc").unwrap_or_default();
    if enc != ENC {
        return Err(Error::Malformed(format!(
            "`enc` `{enc}` is not taken ({ENC})"
        )));
    }
    let optional_bytes = |name: &str| match header.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(v)) => segment(v, name),
        Some(_) => Err(Error::Malformed(format!(
            "the JWE's `{name}` is not a string"
        ))),
    };
    let (apu, apv) = (optional_bytes("apu")?, optional_bytes("apv")?);
    let encrypted_key = segment(encrypted_key, "encrypted key")?;
    let epk = if alg == ECDH_ES_A256KW {
        let epk = header
            .get("epk")
            .ok_or_else(|| Error::Malformed("an ECDH-ES JWE carries `epk`".into()))
            .and_then(|epk| {
                PublicKey::from_jwk(epk).map_err(|e| Error::Malformed(format!("`epk`: {e}")))
            })?;
        if matches!(epk, PublicKey::Rsa(_)) {
            return Err(Error::Malformed("`epk` is an EC or OKP key".into()));
        }
        if encrypted_key.len() != WRAPPED_CEK_BYTES {
            return Err(Error::Malformed(format!(
                "an ECDH-ES+A256KW encrypted key is {WRAPPED_CEK_BYTES} bytes"
            )));
        }
        Some(epk)
    } else {
        if encrypted_key.is_empty() {
            return Err(Error::Malformed("the JWE has no encrypted key".into()));
        }
        None
    };
    let parts = Parts {
        header: Header {
            alg,
            enc,
            kid: text("kid"),
            cty: text("cty"),
            epk,
            apu,
            apv,
        },
        aad: protected,
        encrypted_key,
        iv: segment(iv, "initialization vector")?,
        ciphertext: segment(ciphertext, "ciphertext")?,
        tag: segment(tag, "authentication tag")?,
    };
    if parts.iv.len() != IV_BYTES || parts.tag.len() != TAG_BYTES {
        return Err(Error::Malformed(format!(
            "an A256GCM JWE has a {IV_BYTES}-byte IV and a {TAG_BYTES}-byte tag"
        )));
    }
    Ok(parts)
}

/// Opens a compact JWE: the decrypter recovers the content key (RSA-OAEP) or
/// the shared secret (ECDH-ES), the rest happens here.
pub fn open(compact: &str, decrypter: &dyn Decrypter) -> Result<Vec<u8>, Error> {
    let parts = parse(compact)?;
    let cek = match &parts.header.epk {
        None => Zeroizing::new(decrypter.rsa_oaep_256(&parts.encrypted_key)?),
        Some(epk) => {
            let z = Zeroizing::new(decrypter.agree(epk)?);
            let kek = kek(&z, &parts.header.apu, &parts.header.apv)?;
            Zeroizing::new(
                kek.unwrap_vec(&parts.encrypted_key)
                    .map_err(|_| Error::Decrypt)?,
            )
        }
    };
    let cipher = Aes256Gcm::new_from_slice(&cek).map_err(|_| Error::Decrypt)?;
    let iv: [u8; IV_BYTES] = parts.iv.try_into().map_err(|_| Error::Decrypt)?;
    let mut sealed = parts.ciphertext;
    sealed.extend_from_slice(&parts.tag);
    cipher
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: &sealed,
                aad: parts.aad.as_bytes(),
            },
        )
        .map_err(|_| Error::Decrypt)
}

impl Decrypter for PrivateKey {
    fn rsa_oaep_256(&self, encrypted_key: &[u8]) -> Result<Vec<u8>, Error> {
        match self {
            PrivateKey::Rsa(key) => key
                .decrypt(rsa::Oaep::new::<Sha256>(), encrypted_key)
                .map_err(|_| Error::Decrypt),
            _ => Err(Error::Decrypt),
        }
    }

    fn agree(&self, ephemeral: &PublicKey) -> Result<Vec<u8>, Error> {
        match (self, ephemeral) {
            (PrivateKey::P256(key), PublicKey::P256(epk)) => Ok(p256::ecdh::diffie_hellman(
                key.to_nonzero_scalar(),
                epk.as_affine(),
            )
            .raw_secret_bytes()
            .to_vec()),
            (PrivateKey::X25519(key), PublicKey::X25519(epk)) => {
                let shared = key.diffie_hellman(epk);
                if !shared.was_contributory() {
                    return Err(Error::Decrypt);
                }
                Ok(shared.as_bytes().to_vec())
            }
            _ => Err(Error::Decrypt),
        }
    }
}

#[cfg(test)]
#[path = "jwe_tests.rs"]
mod tests;
