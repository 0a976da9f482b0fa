use super::*;

fn keys() -> Vec<PrivateKey> {
    vec![
        PrivateKey::generate_rsa(2048).expect("rsa"),
        PrivateKey::generate_p256(),
        PrivateKey::generate_x25519(),
    ]
}

#[test]
fn what_is_sealed_to_a_key_opens_with_it_and_names_it() {
    for key in keys() {
        for plaintext in [Vec::new(), b"x".to_vec(), vec![7u8; 1 << 20]] {
            let jwe = seal(&key.public(), &plaintext, Some("application/json")).expect("seal");
            let header = inspect(&jwe).expect("inspect");
            assert_eq!(header.alg, key.public().alg());
            assert_eq!(header.enc, "A256GCM");
            assert_eq!(
                header.kid.as_deref(),
                Some(key.public().thumbprint().as_str())
            );
            assert_eq!(header.cty.as_deref(), Some("application/json"));
            assert_eq!(header.epk.is_some(), header.alg == ECDH_ES_A256KW);
            assert_eq!(open(&jwe, &key).expect("open"), plaintext);
        }
    }
}

#[test]
fn sealing_twice_gives_two_different_jwes() {
    for key in keys() {
        let (a, b) = (
            seal(&key.public(), b"same", None).expect("a"),
            seal(&key.public(), b"same", None).expect("b"),
        );
        assert_ne!(a, b);
    }
}

#[test]
fn another_key_of_the_same_kind_or_another_kind_cannot_open() {
    let mine = keys();
    let others = keys();
    for key in &mine {
        let jwe = seal(&key.public(), b"secret", None).expect("seal");
        for other in &others {
            assert_eq!(open(&jwe, other), Err(Error::Decrypt), "{other:?}");
        }
    }
}

/// Flips one character of each segment in turn: never opens, never panics.
#[test]
fn an_altered_jwe_never_opens() {
    for key in keys() {
        let jwe = seal(&key.public(), b"an authentication request", None).expect("seal");
        let segments: Vec<&str> = jwe.split('.').collect();
        for i in 0..5 {
            for position in [
                0,
                segments[i].len() / 2,
                segments[i].len().saturating_sub(2),
            ] {
                let mut altered: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
                let bytes = flip(&altered[i], position);
                altered[i] = bytes;
                let result = open(&altered.join("."), &key);
                assert!(result.is_err(), "segment {i} at {position} still opened");
            }
        }
    }
}

/// The character at `position` replaced by another base64url character.
fn flip(segment: &str, position: usize) -> String {
    let mut chars: Vec<char> = segment.chars().collect();
    if chars.is_empty() {
        return "A".into();
    }
    chars[position] = if chars[position] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn jwes_this_module_does_not_take_are_refused_by_shape() {
    let key = PrivateKey::generate_p256();
    let jwe = seal(&key.public(), b"x", None).expect("seal");
    let segments: Vec<&str> = jwe.split('.').collect();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[0]).expect("b64")).expect("json");
    let with_header = |change: &dyn Fn(&mut Map<String, Value>)| {
        let mut h = header.as_object().expect("object").clone();
        change(&mut h);
        let mut s: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        s[0] = b64(Value::Object(h).to_string().as_bytes());
        s.join(".")
    };
    let cases: Vec<(String, &str)> = vec![
        (segments[..4].join("."), "5 segments"),
        (format!("{jwe}.x"), "5 segments"),
        (
            with_header(&|h| {
                h.insert("zip".into(), json!("DEF"));
            }),
            "`zip` is not taken",
        ),
        (
            with_header(&|h| {
                h.insert("crit".into(), json!(["exp"]));
            }),
            "`crit` is not taken",
        ),
        (
            with_header(&|h| {
                h.insert("alg".into(), json!("dir"));
            }),
            "`alg` `dir` is not taken",
        ),
        (
            with_header(&|h| {
                h.insert("alg".into(), json!("RSA1_5"));
            }),
            "`alg` `RSA1_5`",
        ),
        (
            with_header(&|h| {
                h.insert("alg".into(), json!("none"));
            }),
            "`alg` `none`",
        ),
        (
            with_header(&|h| {
                h.insert("enc".into(), json!("A128CBC-HS256"));
            }),
            "`enc` `A128CBC-HS256`",
        ),
        (
            with_header(&|h| {
                h.remove("epk");
            }),
            "carries `epk`",
        ),
        (
            with_header(&|h| {
                h.insert(
                    "epk".into(),
                    json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
                );
            }),
            "not on P-256",
        ),
        (
            with_header(&|h| {
                h.insert("apu".into(), json!(1));
            }),
            "`apu` is not a string",
        ),
        (
            format!("e30.{}", segments[1..].join(".")),
            "`alg` `` is not taken",
        ),
        (
            format!("!!.{}", segments[1..].join(".")),
            "protected header is not base64url",
        ),
        (
            [segments[0], segments[1], "AAAA", segments[3], segments[4]].join("."),
            "12-byte IV",
        ),
        (
            [segments[0], "AAAA", segments[2], segments[3], segments[4]].join("."),
            "40 bytes",
        ),
    ];
    for (jwe, expected) in cases {
        let err = inspect(&jwe).expect_err(expected).to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(open(&jwe, &key).is_err());
    }
}

/// An X25519 ephemeral key of low order gives an all-zero secret: refused.
#[test]
fn a_low_order_x25519_ephemeral_key_is_refused() {
    let key = PrivateKey::generate_x25519();
    let jwe = seal(&key.public(), b"x", None).expect("seal");
    let segments: Vec<&str> = jwe.split('.').collect();
    let mut header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[0]).expect("b64")).expect("json");
    header["epk"]["x"] = json!(b64(&[0u8; 32]));
    let forged = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        segments[1..].join(".")
    );
    assert_eq!(open(&forged, &key), Err(Error::Decrypt));
}

/// The seam: a decrypter that only answers the two operations (as a keystore
/// would) opens what the in-memory key opens, and is asked exactly once.
#[test]
fn a_decrypter_is_asked_for_one_operation_and_never_for_the_key() {
    struct Keystore {
        key: PrivateKey,
        asked: std::cell::Cell<u32>,
    }
    impl Decrypter for Keystore {
        fn rsa_oaep_256(&self, encrypted_key: &[u8]) -> Result<Vec<u8>, Error> {
            self.asked.set(self.asked.get() + 1);
            self.key.rsa_oaep_256(encrypted_key)
        }
        fn agree(&self, ephemeral: &PublicKey) -> Result<Vec<u8>, Error> {
            self.asked.set(self.asked.get() + 1);
            self.key.agree(ephemeral)
        }
    }
    for key in keys() {
        let jwe = seal(&key.public(), b"request", None).expect("seal");
        let keystore = Keystore {
            key,
            asked: Default::default(),
        };
        assert_eq!(open(&jwe, &keystore).expect("open"), b"request");
        assert_eq!(keystore.asked.get(), 1);
    }
}
