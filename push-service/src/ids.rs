//! Opaque, unguessable identifiers and random tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::{Rng, RngCore};

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

/// A notification id that carries its creation time: the kind prefix, then
/// 29 characters of an alphabet in ASCII order ([`SORTED`]): 7 of
/// `created_at` (milliseconds, most significant first) and 22 of 128 random
/// bits. The store partitions notifications by creation time and finds the
/// partition of an id from the id alone ([`created_of`]); and since the ids
/// sort as their times do (byte order, and PostgreSQL's `C` and `C.UTF-8`
/// collations), a day's new notifications and deliveries go to the right end
/// of their keys' indexes instead of anywhere in them (BENCHMARKS.md, "Ids
/// in time order"). The bits come from the thread's generator (ChaCha,
/// seeded and reseeded by the OS): as unguessable, without a system call per
/// notification.
///
/// Ids made before this carried their time as base64url of 6 bytes of time
/// and 16 random (30 characters); they are still read. A time outside
/// 7 characters (before 1970, after 2109) is written that way too.
pub fn new_timed_id(prefix: &str, created_at: i64) -> String {
    let random: u128 = rand::thread_rng().gen();
    if !(0..1 << (6 * TIME_CHARS)).contains(&created_at) {
        let mut buf = [0u8; TIMED_BYTES];
        buf[..6].copy_from_slice(&created_at.to_be_bytes()[2..]);
        buf[6..].copy_from_slice(&random.to_be_bytes());
        return format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(buf));
    }
    let mut id = String::with_capacity(prefix.len() + 1 + SORTED_LEN);
    id.push_str(prefix);
    id.push('_');
    for i in (0..TIME_CHARS).rev() {
        id.push(char::from(SORTED[((created_at >> (6 * i)) & 63) as usize]));
    }
    for i in 0..SORTED_LEN - TIME_CHARS {
        id.push(char::from(SORTED[((random >> (6 * i)) & 63) as usize]));
    }
    id
}

/// 64 characters safe in a URL, in ASCII order: what a timed id is written in.
const SORTED: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
/// Characters of a timed id's time, and of the whole id after its prefix.
const TIME_CHARS: usize = 7;
const SORTED_LEN: usize = TIME_CHARS + 22;

/// Bytes behind an earlier timed id: 6 of time, 16 random.
const TIMED_BYTES: usize = 22;

/// The value of one [`SORTED`] character.
fn sorted_value(c: u8) -> Option<i64> {
    let v = match c {
        b'-' => 0,
        b'0'..=b'9' => c - b'0' + 1,
        b'A'..=b'Z' => c - b'A' + 11,
        b'_' => 37,
        b'a'..=b'z' => c - b'a' + 38,
        _ => return None,
    };
    Some(i64::from(v))
}

/// The creation time a [`new_timed_id`] carries; `None` for any other id (an
/// id from before time was carried, or one that is not ours).
pub fn created_of(id: &str) -> Option<i64> {
    let (_, encoded) = id.split_once('_')?;
    match encoded.len() {
        SORTED_LEN => {
            let bytes = encoded.as_bytes();
            let mut time = 0;
            for &c in &bytes[..TIME_CHARS] {
                time = time << 6 | sorted_value(c)?;
            }
            bytes[TIME_CHARS..]
                .iter()
                .all(|&c| sorted_value(c).is_some())
                .then_some(time)
        }
        30 => {
            // Decoded on the stack: the store asks this for every row it writes.
            let mut bytes = [0u8; TIMED_BYTES + 2];
            let len = URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes).ok()?;
            if len != TIMED_BYTES {
                return None;
            }
            let mut time = [0u8; 8];
            time[2..].copy_from_slice(&bytes[..6]);
            Some(i64::from_be_bytes(time))
        }
        _ => None,
    }
}

/// The span of creation times `ids` may have been created in: exact for timed
/// ids, everything when one of them is not timed. Statements bound by it read
/// only the partitions that can hold those ids.
pub fn created_span<'a>(ids: impl IntoIterator<Item = &'a str>) -> (i64, i64) {
    let mut span: Option<(i64, i64)> = None;
    for id in ids {
        let Some(t) = created_of(id) else {
            return (i64::MIN, i64::MAX);
        };
        span = Some(match span {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }
    span.unwrap_or((i64::MIN, i64::MAX))
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
mod timed_id_tests {
    use super::{created_of, created_span, new_id, new_timed_id, sorted_value, SORTED};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    #[test]
    fn a_timed_id_gives_back_its_time_and_nothing_else_does() {
        // Both forms: in time order up to 2^42 ms (the year 2109), base64url beyond.
        for (t, len) in [
            (0, 33),
            (1, 33),
            (1_796_000_000_500, 33),
            ((1 << 42) - 1, 33),
            (1 << 42, 34),
            ((1 << 47) - 1, 34),
        ] {
            let id = new_timed_id("ntf", t);
            assert_eq!(created_of(&id), Some(t), "{id}");
            assert!(id.starts_with("ntf_") && id.len() == len, "{id}");
        }
        assert_ne!(new_timed_id("ntf", 5), new_timed_id("ntf", 5));
        for other in [
            new_id("ntf"),
            "ntf_1".to_owned(),
            "ntf".to_owned(),
            "ntf_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!".to_owned(),
            // The length of an ordered id, a character outside its alphabet.
            format!("ntf_{}+", "P".repeat(28)),
            format!("ntf_P.{}", "0".repeat(27)),
            String::new(),
        ] {
            assert_eq!(created_of(&other), None, "{other}");
        }
    }

    #[test]
    fn ids_made_before_their_time_was_ordered_are_still_read() {
        // As earlier versions wrote them: base64url of 6 bytes of time, 16 random.
        let t: i64 = 1_796_000_000_500;
        let mut bytes = [7u8; 22];
        bytes[..6].copy_from_slice(&t.to_be_bytes()[2..]);
        let id = format!("ntf_{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(id.len(), 34);
        assert_eq!(created_of(&id), Some(t));
    }

    #[test]
    fn ids_sort_as_their_times() {
        // Across every place of the time's characters, and within a millisecond.
        let mut times: Vec<i64> = (0..7).map(|i| (1i64 << (6 * i)) - 1).collect();
        times.extend((0..7).map(|i| 1i64 << (6 * i)));
        times.extend([
            1_796_000_000_000,
            1_796_000_000_001,
            1_796_000_086_400,
            (1 << 42) - 1,
        ]);
        times.sort_unstable();
        let ids: Vec<String> = times.iter().map(|&t| new_timed_id("ntf", t)).collect();
        for (pair, t) in ids.windows(2).zip(times.windows(2)) {
            if t[0] < t[1] {
                assert!(
                    pair[0] < pair[1],
                    "{} ({}) < {} ({})",
                    pair[0],
                    t[0],
                    pair[1],
                    t[1]
                );
            }
        }
        assert!(
            SORTED.windows(2).all(|w| w[0] < w[1]),
            "the alphabet in ASCII order"
        );
        for (i, &c) in SORTED.iter().enumerate() {
            assert_eq!(sorted_value(c), Some(i as i64), "{}", char::from(c));
        }
    }

    #[test]
    fn a_span_is_exact_for_timed_ids_and_everything_otherwise() {
        let (a, b) = (new_timed_id("ntf", 100), new_timed_id("ntf", 300));
        let legacy = new_id("ntf");
        let cases: [(&[&str], (i64, i64)); 5] = [
            (&[&a], (100, 100)),
            (&[&b, &a], (100, 300)),
            (&[&a, &legacy], (i64::MIN, i64::MAX)),
            (&[&legacy], (i64::MIN, i64::MAX)),
            (&[], (i64::MIN, i64::MAX)),
        ];
        for (ids, span) in cases {
            assert_eq!(created_span(ids.iter().copied()), span, "{ids:?}");
        }
    }
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
