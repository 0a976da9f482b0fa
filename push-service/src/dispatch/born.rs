//! Deliveries born claimed: the first attempt of a delivery this node has
//! just accepted needs no claim write.
//!
//! Acceptance writes each delivery `queued` with its re-drive time
//! (`redrive_after` from now): until then the sweep leaves it alone, so the
//! row is already a lease held by the accepting node. The node's own worker
//! may send it at once, as long as the lease has (almost) all of its time
//! left — a second, at most, went by since acceptance, and `redrive_after`
//! exceeds the provider timeout — and nothing this node did since makes the
//! registration worth reading again. Otherwise the worker claims it first,
//! guarded by the registration acceptance read, as every other task does.

use std::collections::HashMap;
use std::sync::Mutex;

/// How long after acceptance a carried delivery may go without a claim: the
/// registration it carries is the one acceptance read, at most this old.
pub const FRESH_MS: i64 = 1_000;

/// Whether a carried delivery's attempt may go without a claim write: its
/// first attempt (`attempts` 0), taken at `now` at most [`FRESH_MS`] after the
/// notification was accepted (`created_at`), with its lease (`due`, the
/// re-drive time written at acceptance) at least `redrive_after_ms − FRESH_MS`
/// away, so the sweep cannot take it while the attempt runs.
pub fn first_attempt_unclaimed(
    now: i64,
    created_at: i64,
    due: Option<i64>,
    attempts: i32,
    redrive_after_ms: i64,
) -> bool {
    let Some(due) = due else { return false };
    attempts == 0
        && now >= created_at
        && now - created_at <= FRESH_MS
        && due - now >= redrive_after_ms - FRESH_MS
}

/// Longest an unclaimed attempt waits for its outcome to be written.
const PATIENCE_MS: i64 = 30_000;

/// Until when (ms) an unclaimed attempt taken at `now` tries its outcome
/// write again: never past its lease (`due`) less a second, and never longer
/// than [`PATIENCE_MS`], so a stopping node is not held for long.
pub fn patience_until(now: i64, due: Option<i64>) -> i64 {
    let lease_end = due.map_or(now, |due| due - FRESH_MS);
    lease_end.min(now + PATIENCE_MS)
}

/// Registrations this node found dead (a provider said their token is gone)
/// within the last few seconds: a carried delivery to one of them is claimed
/// (and so read again) instead of sent on what acceptance read.
#[derive(Default)]
pub struct Invalidated {
    recent: Mutex<HashMap<String, i64>>,
}

/// How long an invalidation is remembered: past it, no carried delivery is
/// fresh enough to go without a claim.
const REMEMBERED_MS: i64 = 2 * FRESH_MS;

impl Invalidated {
    pub fn record(&self, registration: &str, now: i64) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, at| now - *at <= REMEMBERED_MS);
        recent.insert(registration.to_owned(), now);
    }

    pub fn contains(&self, registration: &str, now: i64) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(registration)
            .is_some_and(|at| now - *at <= REMEMBERED_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_attempts_go_without_a_claim() {
        let redrive = 90_000;
        let created = 1_000_000;
        let born_due = Some(created + redrive);
        // (now, due, attempts, unclaimed?, why)
        let cases = [
            (created, born_due, 0, true, "at once"),
            (created + 999, born_due, 0, true, "within the second"),
            (created + FRESH_MS, born_due, 0, true, "at the second"),
            (created + FRESH_MS + 1, born_due, 0, false, "later: claimed"),
            (created, born_due, 1, false, "not the first attempt"),
            (created, None, 0, false, "no lease known"),
            (
                created,
                Some(created + FRESH_MS),
                0,
                false,
                "a lease about to end (a task the sweep made)",
            ),
            (created - 1, born_due, 0, false, "clock before acceptance"),
        ];
        for (now, due, attempts, expected, why) in cases {
            assert_eq!(
                first_attempt_unclaimed(now, created, due, attempts, redrive),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn patience_ends_before_the_lease_and_within_thirty_seconds() {
        let now = 5_000_000;
        // (due, until, why)
        let cases = [
            (
                Some(now + 90_000),
                now + PATIENCE_MS,
                "a long lease: capped",
            ),
            (
                Some(now + 15_000),
                now + 14_000,
                "a short lease: a second before it ends",
            ),
            (None, now, "no lease known: none"),
        ];
        for (due, until, why) in cases {
            assert_eq!(patience_until(now, due), until, "{why}");
        }
    }

    #[test]
    fn invalidations_are_remembered_for_two_seconds() {
        let seen = Invalidated::default();
        seen.record("reg-1", 10_000);
        assert!(seen.contains("reg-1", 10_000));
        assert!(seen.contains("reg-1", 10_000 + REMEMBERED_MS));
        assert!(!seen.contains("reg-1", 10_001 + REMEMBERED_MS));
        assert!(!seen.contains("reg-2", 10_000));
        // Old entries are dropped as new ones come.
        seen.record("reg-2", 20_000);
        assert_eq!(seen.recent.lock().unwrap().len(), 1);
    }
}
