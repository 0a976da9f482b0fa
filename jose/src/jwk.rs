//! Encryption keys as JWKs (RFC 7517): the public key a device registers, its
//! RFC 7638 thumbprint, and the private key that stays on the device.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::BigUint;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::{Error, ECDH_ES_A256KW, MAX_RSA_BITS, MIN_RSA_BITS, RSA_OAEP_256};

const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A member of a JWK, base64url-decoded; the error names it.
fn bytes(obj: &Map<String, Value>, name: &str, kty: &str) -> Result<Vec<u8>, Error> {
    obj.get(name)
        .and_then(Value::as_str)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .ok_or_else(|| Error::Key(format!("{kty} JWK needs base64url `{name}`")))
}

fn fixed<const N: usize>(
    obj: &Map<String, Value>,
    name: &str,
    kty: &str,
) -> Result<[u8; N], Error> {
    bytes(obj, name, kty)?
        .try_into()
        .map_err(|_| Error::Key(format!("{kty} JWK `{name}` must be {N} bytes")))
}

/// A recipient's public encryption key: RSA (2048 to 4096 bits), P-256 or X25519.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(Box<rsa::RsaPublicKey>),
    P256(p256::PublicKey),
    X25519(x25519_dalek::PublicKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, {})", self.alg(), self.thumbprint())
    }
}

impl PublicKey {
    /// Reads a public JWK meant for encryption: `use`, when given, is `enc`;
    /// `alg`, when given, is the one this key type takes; no private members.
    pub fn from_jwk(jwk: &Value) -> Result<Self, Error> {
        let obj = jwk
            .as_object()
            .ok_or_else(|| Error::Key("a JWK is a JSON object".into()))?;
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(Error::Key(format!(
                "the JWK holds private key material (`{member}`); give the public key only"
            )));
        }
        let key = Self::from_members(obj)?;
        match obj.get("use").map(|u| u.as_str()) {
            None | Some(Some("enc")) => {}
            Some(_) => return Err(Error::Key("`use` of an encryption key is `enc`".into())),
        }
        match obj.get("alg").map(|a| a.as_str()) {
            None => {}
            Some(Some(alg)) if alg == key.alg() => {}
            Some(_) => {
                return Err(Error::Key(format!(
                    "`alg` of this key type is `{}` (the only one taken)",
                    key.alg()
                )))
            }
        }
        Ok(key)
    }

    fn from_members(obj: &Map<String, Value>) -> Result<Self, Error> {
        let crv = obj.get("crv").and_then(Value::as_str);
        match obj.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                let n = BigUint::from_bytes_be(&bytes(obj, "n", "RSA")?);
                let e = BigUint::from_bytes_be(&bytes(obj, "e", "RSA")?);
                let bits = n.bits();
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(Error::Key(format!(
                        "an RSA key of {bits} bits is not taken ({MIN_RSA_BITS} to {MAX_RSA_BITS})"
                    )));
                }
                let key = rsa::RsaPublicKey::new(n, e)
                    .map_err(|e| Error::Key(format!("not a usable RSA public key: {e}")))?;
                Ok(PublicKey::Rsa(Box::new(key)))
            }
            Some("EC") if crv == Some("P-256") => {
                let mut sec1 = vec![4u8];
                sec1.extend_from_slice(&fixed::<32>(obj, "x", "EC")?);
                sec1.extend_from_slice(&fixed::<32>(obj, "y", "EC")?);
                p256::PublicKey::from_sec1_bytes(&sec1)
                    .map(PublicKey::P256)
                    .map_err(|_| Error::Key("the EC JWK's point is not on P-256".into()))
            }
            Some("EC") => Err(Error::Key("an EC encryption key uses curve P-256".into())),
            Some("OKP") if crv == Some("X25519") => Ok(PublicKey::X25519(
                x25519_dalek::PublicKey::from(fixed::<32>(obj, "x", "OKP")?),
            )),
            Some("OKP") => Err(Error::Key("an OKP encryption key uses curve X25519".into())),
            Some(other) => Err(Error::Key(format!(
                "key type `{other}` is not taken (RSA, EC P-256, OKP X25519)"
            ))),
            None => Err(Error::Key("the JWK has no `kty`".into())),
        }
    }

    /// The key management algorithm for this key.
    pub fn alg(&self) -> &'static str {
        match self {
            PublicKey::Rsa(_) => RSA_OAEP_256,
            PublicKey::P256(_) | PublicKey::X25519(_) => ECDH_ES_A256KW,
        }
    }

    /// The required members only, in RFC 7638's order.
    fn required(&self) -> Vec<(&'static str, String)> {
        match self {
            PublicKey::Rsa(k) => vec![
                ("e", b64(&k.e().to_bytes_be())),
                ("kty", "RSA".into()),
                ("n", b64(&k.n().to_bytes_be())),
            ],
            PublicKey::P256(k) => {
                let point = p256::EncodedPoint::from(k);
                vec![
                    ("crv", "P-256".into()),
                    ("kty", "EC".into()),
                    ("x", b64(point.x().map(|x| &x[..]).unwrap_or_default())),
                    ("y", b64(point.y().map(|y| &y[..]).unwrap_or_default())),
                ]
            }
            PublicKey::X25519(k) => vec![
                ("crv", "X25519".into()),
                ("kty", "OKP".into()),
                ("x", b64(k.as_bytes())),
            ],
        }
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): the key's `kid`.
    pub fn thumbprint(&self) -> String {
        let members: Vec<String> = self
            .required()
            .into_iter()
            .map(|(name, value)| format!("\"{name}\":\"{value}\""))
            .collect();
        b64(&Sha256::digest(format!("{{{}}}", members.join(","))))
    }

    /// The required members alone (an `epk`).
    pub(crate) fn members(&self) -> Value {
        Value::Object(
            self.required()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), Value::String(value)))
                .collect(),
        )
    }

    /// The public JWK, with `use`, `alg` and `kid` (the thumbprint).
    pub fn to_jwk(&self) -> Value {
        let mut obj = match self.members() {
            Value::Object(obj) => obj,
            _ => Map::new(),
        };
        obj.insert("use".into(), json!("enc"));
        obj.insert("alg".into(), json!(self.alg()));
        obj.insert("kid".into(), json!(self.thumbprint()));
        Value::Object(obj)
    }
}

/// A private encryption key held in memory (a file on a desktop, a test).
/// A platform keystore implements [`crate::Decrypter`] itself instead.
#[derive(Clone)]
pub enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
    X25519(x25519_dalek::StaticSecret),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({:?})", self.public())
    }
}

impl PrivateKey {
    /// A new RSA key of `bits` (2048, 3072 or 4096).
    pub fn generate_rsa(bits: usize) -> Result<Self, Error> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(Error::Key(format!(
                "RSA keys are 2048, 3072 or 4096 bits, not {bits}"
            )));
        }
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// A new P-256 key.
    pub fn generate_p256() -> Self {
        PrivateKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// A new X25519 key.
    pub fn generate_x25519() -> Self {
        PrivateKey::X25519(x25519_dalek::StaticSecret::random_from_rng(
            rand::rngs::OsRng,
        ))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa(k) => PublicKey::Rsa(Box::new(k.to_public_key())),
            PrivateKey::P256(k) => PublicKey::P256(k.public_key()),
            PrivateKey::X25519(k) => PublicKey::X25519(x25519_dalek::PublicKey::from(k)),
        }
    }

    /// Reads a private JWK (RSA with its two primes, EC P-256, OKP X25519).
    pub fn from_jwk(jwk: &Value) -> Result<Self, Error> {
        let obj = jwk
            .as_object()
            .ok_or_else(|| Error::Key("a JWK is a JSON object".into()))?;
        let public = PublicKey::from_members(obj)?;
        let key =
            match &public {
                PublicKey::Rsa(k) => {
                    let d = BigUint::from_bytes_be(&bytes(obj, "d", "RSA")?);
                    let p = BigUint::from_bytes_be(&bytes(obj, "p", "RSA")?);
                    let q = BigUint::from_bytes_be(&bytes(obj, "q", "RSA")?);
                    let mut key = rsa::RsaPrivateKey::from_components(
                        k.n().clone(),
                        k.e().clone(),
                        d,
                        vec![p, q],
                    )
                    .map_err(|e| Error::Key(format!("not a usable RSA private key: {e}")))?;
                    key.validate()
                        .and_then(|()| key.precompute())
                        .map_err(|e| Error::Key(format!("not a usable RSA private key: {e}")))?;
                    PrivateKey::Rsa(Box::new(key))
                }
                PublicKey::P256(_) => PrivateKey::P256(
                    p256::SecretKey::from_slice(&fixed::<32>(obj, "d", "EC")?)
                        .map_err(|_| Error::Key("the EC JWK's `d` is not a P-256 scalar".into()))?,
                ),
                PublicKey::X25519(_) => PrivateKey::X25519(x25519_dalek::StaticSecret::from(
                    fixed::<32>(obj, "d", "OKP")?,
                )),
            };
        if key.public() != public {
            return Err(Error::Key(
                "the JWK's private and public members do not match".into(),
            ));
        }
        Ok(key)
    }

    /// The private JWK: the public members, `use`, `alg`, `kid` and the private
    /// ones. Whoever holds it can read what is sealed to the key.
    pub fn to_jwk(&self) -> Value {
        let mut jwk = self.public().to_jwk();
        let private: Vec<(&str, Vec<u8>)> = match self {
            PrivateKey::Rsa(k) => {
                let (p, q) = (&k.primes()[0], &k.primes()[1]);
                let one = BigUint::from(1u8);
                vec![
                    ("d", k.d().to_bytes_be()),
                    ("p", p.to_bytes_be()),
                    ("q", q.to_bytes_be()),
                    ("dp", (k.d() % (p - &one)).to_bytes_be()),
                    ("dq", (k.d() % (q - &one)).to_bytes_be()),
                    ("qi", k.crt_coefficient().unwrap_or_default().to_bytes_be()),
                ]
            }
            PrivateKey::P256(k) => vec![("d", k.to_bytes().to_vec())],
            PrivateKey::X25519(k) => vec![("d", k.to_bytes().to_vec())],
        };
        if let Some(obj) = jwk.as_object_mut() {
            for (name, value) in private {
                obj.insert(name.into(), json!(b64(&value)));
            }
        }
        jwk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1's example key and its thumbprint.
    #[test]
    fn thumbprint_of_rfc_7638_example() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RSA-OAEP-256",
            "kid": "2011-04-29"
        });
        let key = PublicKey::from_jwk(&jwk).expect("key");
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// RFC 8037 Appendix A.6: Bob's X25519 public key.
    #[test]
    fn reads_the_x25519_key_of_rfc_8037() {
        let jwk = json!({"kty": "OKP", "crv": "X25519", "x": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08"});
        let key = PublicKey::from_jwk(&jwk).expect("key");
        assert_eq!(key.alg(), ECDH_ES_A256KW);
        assert_eq!(PublicKey::from_jwk(&key.to_jwk()).expect("again"), key);
    }

    #[test]
    fn refuses_what_is_not_an_encryption_key_it_takes() {
        let p256 = PrivateKey::generate_p256().public().to_jwk();
        let with = |name: &str, value: Value| {
            let mut jwk = p256.clone();
            jwk[name] = value;
            jwk
        };
        let cases = [
            (json!("a string"), "a JWK is a JSON object"),
            (with("d", json!("AAAA")), "private key material (`d`)"),
            (
                with("use", json!("sig")),
                "`use` of an encryption key is `enc`",
            ),
            (
                with("alg", json!("ES256")),
                "`alg` of this key type is `ECDH-ES+A256KW`",
            ),
            (with("crv", json!("P-384")), "uses curve P-256"),
            (with("x", json!("AAAA")), "`x` must be 32 bytes"),
            (with("y", json!(b64(&[7u8; 32]))), "not on P-256"),
            (with("kty", json!("oct")), "key type `oct` is not taken"),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1u8; 32])}),
                "curve X25519",
            ),
            (
                json!({"kty": "RSA", "n": b64(&[0xffu8; 128]), "e": "AQAB"}),
                "1024 bits is not taken",
            ),
            (json!({"kty": "RSA", "e": "AQAB"}), "needs base64url `n`"),
        ];
        for (jwk, expected) in cases {
            let err = PublicKey::from_jwk(&jwk).expect_err(expected).to_string();
            assert!(err.contains(expected), "{jwk}: {err}");
        }
    }

    #[test]
    fn private_jwks_round_trip_and_their_public_halves_match() {
        for key in [
            PrivateKey::generate_rsa(2048).expect("rsa"),
            PrivateKey::generate_p256(),
            PrivateKey::generate_x25519(),
        ] {
            let again = PrivateKey::from_jwk(&key.to_jwk()).expect("read back");
            assert_eq!(again.public(), key.public());
            // The public JWK carries no private member, and names its thumbprint.
            let public = key.public().to_jwk();
            assert!(PRIVATE_MEMBERS.iter().all(|m| public.get(m).is_none()));
            assert_eq!(public["kid"], json!(key.public().thumbprint()));
            // Mismatched halves are refused.
            let mut other = PrivateKey::generate_p256().to_jwk();
            if let (Some(o), Some(k)) = (other.as_object_mut(), key.to_jwk().as_object()) {
                if k["kty"] == "EC" {
                    o.insert("x".into(), k["x"].clone());
                    o.insert("y".into(), k["y"].clone());
                    assert!(PrivateKey::from_jwk(&other).is_err());
                }
            }
        }
    }
}
