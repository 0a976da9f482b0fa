//! The device key: generated or loaded, signs DPoP proofs, has a public JWK and thumbprint.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};

use crate::Error;

/// Signature algorithm of an RSA device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaAlg {
    Rs256,
    Rs512,
}

/// A device key. RSA (RS256 or RS512, at least 2048 bits) or P-256 (ES256).
#[derive(Clone)]
pub enum DeviceKey {
    Rsa {
        key: Box<rsa::RsaPrivateKey>,
        alg: RsaAlg,
    },
    P256(p256::SecretKey),
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceKey({}, thumbprint {})",
            self.alg(),
            self.thumbprint()
        )
    }
}

impl DeviceKey {
    /// Generates an RSA key of `bits` (2048, 3072 or 4096) signing with RS256.
    pub fn generate_rsa(bits: usize) -> Result<Self, Error> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(Error::Key(format!(
                "RSA keys are 2048, 3072 or 4096 bits, not {bits}"
            )));
        }
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map_err(|e| Error::Key(e.to_string()))?;
        Ok(DeviceKey::Rsa {
            key: Box::new(key),
            alg: RsaAlg::Rs256,
        })
    }

    /// Generates a P-256 key (ES256).
    pub fn generate_p256() -> Self {
        DeviceKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// Wraps an existing RSA key (of any size; the server refuses weak ones).
    pub fn from_rsa(key: rsa::RsaPrivateKey, alg: RsaAlg) -> Self {
        DeviceKey::Rsa {
            key: Box::new(key),
            alg,
        }
    }

    /// For an RSA key, signs with RS512 instead of RS256.
    pub fn with_rs512(self) -> Self {
        match self {
            DeviceKey::Rsa { key, .. } => DeviceKey::Rsa {
                key,
                alg: RsaAlg::Rs512,
            },
            other => other,
        }
    }

    /// Loads a PKCS#8 PEM private key (RSA or P-256).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Error> {
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Ok(DeviceKey::Rsa {
                key: Box::new(key),
                alg: RsaAlg::Rs256,
            });
        }
        p256::SecretKey::from_pkcs8_pem(pem)
            .map(DeviceKey::P256)
            .map_err(|_| Error::Key("not a PKCS#8 PEM RSA or P-256 private key".into()))
    }

    /// The private key as PKCS#8 PEM, to keep in the platform's secure storage.
    pub fn to_pkcs8_pem(&self) -> Result<String, Error> {
        let pem = match self {
            DeviceKey::Rsa { key, .. } => key.to_pkcs8_pem(LineEnding::LF),
            DeviceKey::P256(key) => key.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string())
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// JOSE `alg` of the signatures this key makes.
    pub fn alg(&self) -> &'static str {
        match self {
            DeviceKey::Rsa {
                alg: RsaAlg::Rs256, ..
            } => "RS256",
            DeviceKey::Rsa {
                alg: RsaAlg::Rs512, ..
            } => "RS512",
            DeviceKey::P256(_) => "ES256",
        }
    }

    /// The public key as a JWK (no private members).
    pub fn public_jwk(&self) -> Value {
        match self {
            DeviceKey::Rsa { key, .. } => json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            }),
            DeviceKey::P256(key) => {
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &key.public_key(),
                    false,
                );
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed point has x")),
                    "y": URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed point has y")),
                })
            }
        }
    }

    /// RFC 7638 thumbprint of the public key: the id the server binds registrations to.
    pub fn thumbprint(&self) -> String {
        // This key's JWK always has the members a thumbprint takes.
        jwk_thumbprint(&self.public_jwk()).unwrap_or_default()
    }

    /// Signs `header` and `claims` as a compact JWS with this key.
    pub fn sign_jws(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Raw signature bytes over `message` (PKCS#1 v1.5 for RSA, R‖S for P-256).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{SignatureEncoding, Signer};
        match self {
            DeviceKey::Rsa {
                key,
                alg: RsaAlg::Rs256,
            } => rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa::RsaPrivateKey::clone(key))
                .sign(message)
                .to_vec(),
            DeviceKey::Rsa {
                key,
                alg: RsaAlg::Rs512,
            } => rsa::pkcs1v15::SigningKey::<Sha512>::new(rsa::RsaPrivateKey::clone(key))
                .sign(message)
                .to_vec(),
            DeviceKey::P256(key) => {
                let signature: p256::ecdsa::Signature =
                    p256::ecdsa::SigningKey::from(key).sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }

    /// A DPoP proof (RFC 9449) for one request: `htm` and `htu`, fresh `iat` and `jti`.
    pub fn dpop_proof(&self, method: &str, url: &str) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.public_jwk()});
        let claims = json!({
            "htm": method,
            "htu": url,
            "iat": unix_now(),
            "jti": random_id(),
        });
        self.sign_jws(&header, &claims)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// 128 random bits, base64url.
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// What signs for a device: the key's algorithm, its public JWK, and
/// signatures. The client builds DPoP proofs (RFC 9449) around it and needs
/// nothing else: the trait has no way to ask for the private key, so a key in
/// the Android Keystore or the Secure Enclave signs in place. [`DeviceKey`]
/// (a key in memory) is one implementation.
pub trait Signer: Send + Sync + 'static {
    /// `ES256`, `RS256` or `RS512`.
    fn alg(&self) -> String;
    /// The public key as a JWK, without private members.
    fn public_jwk(&self) -> Value;
    /// The signature over `message`: PKCS#1 v1.5 for RS256/RS512; for ES256
    /// either the JWS form (R‖S, 64 bytes) or DER, as platform keystores give it.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;
}

impl Signer for DeviceKey {
    fn alg(&self) -> String {
        DeviceKey::alg(self).to_owned()
    }

    fn public_jwk(&self) -> Value {
        DeviceKey::public_jwk(self)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(DeviceKey::sign(self, message))
    }
}

impl<S: Signer + ?Sized> Signer for std::sync::Arc<S> {
    fn alg(&self) -> String {
        (**self).alg()
    }

    fn public_jwk(&self) -> Value {
        (**self).public_jwk()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).sign(message)
    }
}

/// The RFC 7638 thumbprint of a public JWK (RSA or EC): the id the service
/// binds registrations to.
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, Error> {
    let s = |name: &str| {
        jwk[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Key(format!("the signer's JWK has no `{name}`")))
    };
    let canonical = match jwk["kty"].as_str() {
        Some("RSA") => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        _ => return Err(Error::Key("the signer's JWK is neither RSA nor EC".into())),
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// Checks what a signer says of itself before anything is sent: one of the
/// three algorithms, a JWK of the matching key type (P-256 for ES256, RSA of at
/// least 2,048 bits for RS256/RS512), and no private member in it — a DPoP proof
/// carries that JWK in the clear, so a signer that leaked its private key into
/// it would hand the key to every server and proxy on the way.
pub fn check_signer(alg: &str, jwk: &Value) -> Result<(), Error> {
    const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];
    if let Some(member) = PRIVATE.iter().find(|m| jwk.get(**m).is_some()) {
        return Err(Error::Key(format!(
            "the signer's public JWK holds the private member `{member}`; nothing was sent"
        )));
    }
    let kty = jwk["kty"].as_str().unwrap_or_default();
    match alg {
        "ES256" if kty == "EC" && jwk["crv"] == "P-256" => {}
        "ES256" => return Err(Error::Key("ES256 needs an EC P-256 JWK".into())),
        "RS256" | "RS512" if kty == "RSA" => {
            let bits = jwk["n"]
                .as_str()
                .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                .map(|n| {
                    let lead = n.iter().take_while(|b| **b == 0).count();
                    n.len().saturating_sub(lead) * 8
                })
                .unwrap_or(0);
            if bits < 2048 {
                return Err(Error::Key(format!(
                    "{alg} needs an RSA key of at least 2048 bits, the signer's has {bits}"
                )));
            }
        }
        "RS256" | "RS512" => return Err(Error::Key(format!("{alg} needs an RSA JWK"))),
        other => {
            return Err(Error::Key(format!(
                "the signer's algorithm `{other}` is not ES256, RS256 or RS512"
            )))
        }
    }
    jwk_thumbprint(jwk).map(|_| ())
}

/// A compact JWS over `header` and `claims`, signed by `signer`. An ES256
/// signature in DER (as keystores give it) is put in the JWS form (R‖S).
pub fn signed_jws(signer: &dyn Signer, header: &Value, claims: &Value) -> Result<String, Error> {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = signer.sign(input.as_bytes())?;
    if signer.alg() == "ES256" && signature.len() != 64 {
        signature = p256::ecdsa::Signature::from_der(&signature)
            .map_err(|_| Error::Key("the signer's ES256 signature is neither R‖S nor DER".into()))?
            .to_bytes()
            .to_vec();
    }
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// A DPoP proof (RFC 9449) by `signer` for one request.
pub fn signed_dpop_proof(signer: &dyn Signer, method: &str, url: &str) -> Result<String, Error> {
    let alg = signer.alg();
    if !matches!(alg.as_str(), "ES256" | "RS256" | "RS512") {
        return Err(Error::Key(format!(
            "the signer's algorithm `{alg}` is not ES256, RS256 or RS512"
        )));
    }
    let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": signer.public_jwk()});
    let claims = json!({"htm": method, "htu": url, "iat": unix_now(), "jti": random_id()});
    signed_jws(signer, &header, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signer_is_checked_before_anything_is_sent() {
        let p256 = DeviceKey::generate_p256();
        let rsa = DeviceKey::generate_rsa(2048).expect("rsa");
        let small_rsa = DeviceKey::from_rsa(
            rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).expect("rsa 1024"),
            RsaAlg::Rs256,
        );
        let with = |key: &DeviceKey, name: &str, value: &str| {
            let mut jwk = key.public_jwk();
            jwk[name] = json!(value);
            jwk
        };
        // (algorithm, JWK, the refusal's words; None: taken)
        let rows: Vec<(&str, Value, Option<&str>)> = vec![
            ("ES256", p256.public_jwk(), None),
            ("RS256", rsa.public_jwk(), None),
            ("RS512", rsa.public_jwk(), None),
            (
                "ES256",
                with(&p256, "d", "AAAA"),
                Some("private member `d`"),
            ),
            ("RS256", with(&rsa, "p", "AAAA"), Some("private member `p`")),
            (
                "RS256",
                with(&rsa, "qi", "AAAA"),
                Some("private member `qi`"),
            ),
            ("ES256", rsa.public_jwk(), Some("EC P-256")),
            ("ES256", with(&p256, "crv", "P-384"), Some("EC P-256")),
            ("RS256", p256.public_jwk(), Some("an RSA JWK")),
            ("RS256", small_rsa.public_jwk(), Some("has 1024")),
            ("PS256", rsa.public_jwk(), Some("not ES256, RS256 or RS512")),
            ("none", p256.public_jwk(), Some("not ES256, RS256 or RS512")),
            (
                "ES256",
                json!({"kty": "EC", "crv": "P-256"}),
                Some("no `x`"),
            ),
        ];
        for (alg, jwk, refusal) in rows {
            match (check_signer(alg, &jwk), refusal) {
                (Ok(()), None) => {}
                (Err(e), Some(words)) => assert!(
                    e.to_string().contains(words),
                    "{alg} {jwk}: `{e}` should say `{words}`"
                ),
                (answer, _) => panic!("{alg} {jwk}: {answer:?}, expected {refusal:?}"),
            }
        }
    }
}
