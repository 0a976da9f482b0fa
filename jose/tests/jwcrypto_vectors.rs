//! JWEs sealed by an independent implementation (jwcrypto 1.6.1, written by
//! `jose/interop/jwcrypto_check.py --vectors`), opened here without Python.

use push_jose::{inspect, open, Error, PrivateKey};

#[test]
fn opens_what_jwcrypto_sealed_for_each_key_type_and_nothing_else() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("vectors.json")).expect("vectors.json");
    let vectors = file["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 4);
    let keys: Vec<PrivateKey> = vectors
        .iter()
        .map(|v| PrivateKey::from_jwk(&v["private_jwk"]).expect("jwcrypto's private JWK"))
        .collect();
    for (i, vector) in vectors.iter().enumerate() {
        let jwe = vector["jwe"].as_str().expect("jwe");
        let header = inspect(jwe).expect("header");
        assert_eq!(
            header.kid.as_deref(),
            Some(keys[i].public().thumbprint().as_str())
        );
        let plaintext = open(jwe, &keys[i]).unwrap_or_else(|e| panic!("{}: {e}", vector["key"]));
        assert_eq!(
            plaintext,
            vector["plaintext"].as_str().expect("text").as_bytes()
        );
        for (j, other) in keys.iter().enumerate() {
            if i != j {
                assert_eq!(open(jwe, other), Err(Error::Decrypt));
            }
        }
    }
}
