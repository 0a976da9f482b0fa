//! Opaque, unguessable identifiers and random tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

/// `bytes` random bytes from the OS generator, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new id: a short kind prefix and 128 random bits (`app_…`, `reg_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_token(16))
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Seconds since the Unix epoch (JWT claims).
pub fn now_seconds() -> i64 {
    now_millis() / 1000
}

/// RFC 3339 rendering of a store timestamp, for API bodies: UTC, always three
/// fraction digits, so that timestamps compare as strings in time order
/// (`…:00.500Z` after `…:00.000Z`, which a trimmed `…:00Z` would not be).
pub fn rfc3339(millis: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod rfc3339_tests {
    use super::rfc3339;

    #[test]
    fn fixed_width_and_ordered_as_strings() {
        assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01.000Z");
        assert_eq!(rfc3339(1_796_000_000_500), "2026-11-30T00:53:20.500Z");
        let times = [999, 1_000, 1_001, 1_010, 1_500, 2_000, 61_000];
        for pair in times.windows(2) {
            assert!(rfc3339(pair[0]) < rfc3339(pair[1]), "{pair:?}");
        }
    }
}
