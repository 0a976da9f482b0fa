//! Notifier JWT parsing: any bytes as a bearer token never panic; what parses
//! has its algorithm, numeric claims and any embedded JWK examined as the
//! service does before looking up a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_service::auth::{accepted_alg, jwk_thumbprint, numeric_claim, parse_jwt};
use push_service::keys::ALLOWED_ALGS;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwt) = parse_jwt(token) {
        let _ = accepted_alg(&jwt.header, ALLOWED_ALGS);
        for claim in ["exp", "iat", "nbf"] {
            let _ = numeric_claim(&jwt.claims, claim);
        }
        if let Some(jwk) = jwt.header.get("jwk") {
            let _ = jwk_thumbprint(jwk);
        }
    }
});
