//! DPoP proofs: any bytes as a `DPoP` header never panic, and nothing that is
//! not signed by the key in its own header is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_service::auth::dpop::{verify_proof, Expected};

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let expected = Expected {
        method: "POST",
        url: "https://push.example.com/v1/apps/app_1/registrations",
        now: 1_800_000_000,
        window_seconds: 60,
    };
    // A valid signature cannot be produced by mutation; acceptance would be a bug.
    assert!(verify_proof(proof, &expected).is_err());
});
