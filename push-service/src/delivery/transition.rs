//! The delivery state machine, as two pure functions: [`before_send`] (may this
//! claimed delivery go now?) and [`after_answer`] (the provider answered: what
//! next?). The dispatcher applies what they return; nothing else decides a
//! delivery's next state.
//!
//! Attempts are counted when a delivery is claimed (the store adds one). A
//! delivery that waits for an open circuit gives its attempt back: waiting is
//! not trying.

use super::retry::{RetryDecision, RetryPolicy};
use super::DeliveryState;

/// The attempt a dispatcher holds: the clock, the TTL and the count so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempted {
    /// Milliseconds since the epoch.
    pub now: i64,
    /// When the notification's TTL ends (ms since the epoch).
    pub expires_at: i64,
    /// A zero TTL: its first attempt goes, nothing after it.
    pub now_or_never: bool,
    /// Attempts made before this one (the claim has just counted this one).
    pub attempts_before: u32,
}

impl Attempted {
    /// This attempt's number (1-based), as the claim recorded it.
    pub fn number(&self) -> u32 {
        self.attempts_before + 1
    }
}

/// The registration as the delivery found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Active,
    /// Invalidated (dead token, replaced, deleted by its device).
    Invalid,
    /// The row is gone.
    Deleted,
}

/// A provider's answer, classified (providers/outcome.rs), with the token
/// guard's verdict already asked where a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Sent,
    /// Kept on the direct channel for the device.
    Held,
    /// The token is dead: the registration is invalidated.
    TokenDead(String),
    /// A token refused while too many were at once: the guard opened the
    /// circuit instead (`guard` says why); the registration stays.
    TokenSuspicious {
        guard: String,
        reason: String,
    },
    /// The app's credential was refused: the circuit opened.
    Credential(String),
    /// Refused for this notification (payload): final.
    Refused(String),
    /// Overloaded or unreachable (429, 5xx, network): retried until the TTL.
    Overloaded {
        reason: String,
        after: Option<std::time::Duration>,
    },
    /// An answer nobody documents: retried, at most `retry_max_attempts` in all.
    Undocumented {
        reason: String,
        after: Option<std::time::Duration>,
    },
}

/// Why a delivery stays queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// After a failed attempt, per the retry policy.
    Retry,
    /// For an open circuit, its attempt given back.
    Deferred,
}

impl Waiting {
    /// The `outcome` label of `push_deliveries_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::Retry => "retry",
            Waiting::Deferred => "deferred",
        }
    }
}

/// What the dispatcher writes for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A final state, or `Held`.
    Finish {
        state: DeliveryState,
        reason: Option<String>,
        attempts: u32,
    },
    /// Stays queued; next try at `at` (ms since the epoch).
    Again {
        at: i64,
        reason: String,
        attempts: u32,
        waiting: Waiting,
    },
}

fn finish(state: DeliveryState, reason: Option<String>, attempts: u32) -> Transition {
    Transition::Finish {
        state,
        reason,
        attempts,
    }
}

/// Waits for an open circuit until `until`, giving the attempt back; expires
/// when the wait would outlast the TTL.
fn defer(at: &Attempted, until: i64, reason: String) -> Transition {
    if until >= at.expires_at {
        return finish(
            DeliveryState::Expired,
            Some(format!("ttl (waiting: {reason})")),
            at.attempts_before,
        );
    }
    Transition::Again {
        at: until,
        reason,
        attempts: at.attempts_before,
        waiting: Waiting::Deferred,
    }
}

/// A claimed delivery: `None` when it goes to its provider now, else what to
/// write instead. `circuit` is the app's open circuit for that provider
/// (until when, and why).
pub fn before_send(
    at: &Attempted,
    registration: Registration,
    circuit: Option<(i64, &str)>,
) -> Option<Transition> {
    let n = at.number();
    if at.now_or_never && at.attempts_before > 0 {
        let reason = "ttl 0: attempted once".to_owned();
        return Some(finish(DeliveryState::Expired, Some(reason), n));
    }
    if !at.now_or_never && at.now >= at.expires_at {
        return Some(finish(DeliveryState::Expired, Some("ttl".into()), n));
    }
    match registration {
        Registration::Active => {}
        Registration::Invalid => {
            let reason = "registration-invalid".to_owned();
            return Some(finish(DeliveryState::Invalid, Some(reason), n));
        }
        Registration::Deleted => {
            let reason = "registration-deleted".to_owned();
            return Some(finish(DeliveryState::Invalid, Some(reason), n));
        }
    }
    circuit.map(|(until, why)| defer(at, until, format!("circuit open: {why}")))
}

/// The provider answered attempt `at`: the delivery's next state. `open_ms` is
/// how long a circuit stays open; `jitter` in [0, 1) spreads retries.
pub fn after_answer(
    answer: Answer,
    at: &Attempted,
    policy: &RetryPolicy,
    open_ms: i64,
    jitter: f64,
) -> Transition {
    let n = at.number();
    let retry = |reason: String, after, bounded| match policy.next(
        n,
        bounded,
        at.now,
        at.expires_at,
        after,
        jitter,
    ) {
        RetryDecision::At(time) => Transition::Again {
            at: time,
            reason,
            attempts: n,
            waiting: Waiting::Retry,
        },
        RetryDecision::Expired => finish(
            DeliveryState::Expired,
            Some(format!("ttl (last error: {reason})")),
            n,
        ),
        RetryDecision::GiveUp => finish(
            DeliveryState::Failed,
            Some(format!("gave up after {n} attempts: {reason}")),
            n,
        ),
    };
    match answer {
        Answer::Sent => finish(DeliveryState::Sent, None, n),
        Answer::Held => finish(DeliveryState::Held, None, n),
        Answer::TokenDead(reason) => finish(DeliveryState::Invalid, Some(reason), n),
        Answer::Refused(reason) => finish(DeliveryState::Failed, Some(reason), n),
        Answer::TokenSuspicious { guard, reason } => {
            defer(at, at.now + open_ms, format!("{guard} (last: {reason})"))
        }
        Answer::Credential(reason) => {
            defer(at, at.now + open_ms, format!("circuit open: {reason}"))
        }
        Answer::Overloaded { reason, after } => retry(reason, after, false),
        Answer::Undocumented { reason, after } => retry(reason, after, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: i64 = 1_000_000;
    const OPEN_MS: i64 = 30_000;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }

    fn answers() -> Vec<(&'static str, Answer)> {
        let r = || "r".to_owned();
        vec![
            ("sent", Answer::Sent),
            ("held", Answer::Held),
            ("token-dead", Answer::TokenDead(r())),
            (
                "token-suspicious",
                Answer::TokenSuspicious {
                    guard: "g".into(),
                    reason: r(),
                },
            ),
            ("credential", Answer::Credential(r())),
            ("refused", Answer::Refused(r())),
            (
                "overloaded",
                Answer::Overloaded {
                    reason: r(),
                    after: None,
                },
            ),
            (
                "undocumented",
                Answer::Undocumented {
                    reason: r(),
                    after: None,
                },
            ),
        ]
    }

    /// What one combination must come to, in words: `finish <state>`, `again retry`,
    /// `again deferred`.
    fn short(t: &Transition) -> String {
        match t {
            Transition::Finish { state, .. } => format!("finish {state}"),
            Transition::Again { waiting, .. } => format!("again {}", waiting.as_str()),
        }
    }

    /// Every (answer class × retries left or not × TTL left or not × circuit open
    /// or closed). "TTL left": an hour; "no TTL left": the attempt goes (1 ms
    /// remains) but nothing after it fits. "Retries left": first attempt; "none":
    /// the attempt is the last `max_attempts` allows. An open circuit stops the
    /// attempt before any answer.
    #[test]
    fn the_state_machine_as_a_table() {
        // (answer, retries left, TTL left, circuit open) → outcome
        #[rustfmt::skip]
        let table: &[(&str, bool, bool, bool, &str)] = &[
            ("sent",             true,  true,  false, "finish sent"),
            ("sent",             true,  false, false, "finish sent"),
            ("sent",             false, true,  false, "finish sent"),
            ("sent",             false, false, false, "finish sent"),
            ("held",             true,  true,  false, "finish held"),
            ("held",             true,  false, false, "finish held"),
            ("held",             false, true,  false, "finish held"),
            ("held",             false, false, false, "finish held"),
            ("token-dead",       true,  true,  false, "finish invalid"),
            ("token-dead",       true,  false, false, "finish invalid"),
            ("token-dead",       false, true,  false, "finish invalid"),
            ("token-dead",       false, false, false, "finish invalid"),
            ("token-suspicious", true,  true,  false, "again deferred"),
            ("token-suspicious", true,  false, false, "finish expired"),
            ("token-suspicious", false, true,  false, "again deferred"),
            ("token-suspicious", false, false, false, "finish expired"),
            ("credential",       true,  true,  false, "again deferred"),
            ("credential",       true,  false, false, "finish expired"),
            ("credential",       false, true,  false, "again deferred"),
            ("credential",       false, false, false, "finish expired"),
            ("refused",          true,  true,  false, "finish failed"),
            ("refused",          true,  false, false, "finish failed"),
            ("refused",          false, true,  false, "finish failed"),
            ("refused",          false, false, false, "finish failed"),
            // Documented overload: only the TTL ends the retries.
            ("overloaded",       true,  true,  false, "again retry"),
            ("overloaded",       true,  false, false, "finish expired"),
            ("overloaded",       false, true,  false, "again retry"),
            ("overloaded",       false, false, false, "finish expired"),
            // Undocumented: bounded by max_attempts too.
            ("undocumented",     true,  true,  false, "again retry"),
            ("undocumented",     true,  false, false, "finish expired"),
            ("undocumented",     false, true,  false, "finish failed"),
            ("undocumented",     false, false, false, "finish failed"),
        ];
        let mut covered = 0;
        for (name, answer) in answers() {
            for retries_left in [true, false] {
                for ttl_left in [true, false] {
                    for circuit_open in [false, true] {
                        let at = Attempted {
                            now: NOW,
                            expires_at: if ttl_left { NOW + 3_600_000 } else { NOW + 1 },
                            now_or_never: false,
                            attempts_before: if retries_left {
                                0
                            } else {
                                policy().max_attempts - 1
                            },
                        };
                        let circuit = circuit_open.then_some((NOW + OPEN_MS, "down"));
                        let got = match before_send(&at, Registration::Active, circuit) {
                            Some(t) => t,
                            None => after_answer(answer.clone(), &at, &policy(), OPEN_MS, 0.5),
                        };
                        let expected = if circuit_open {
                            // Never sent: waits for the circuit, or expires first.
                            if ttl_left {
                                "again deferred"
                            } else {
                                "finish expired"
                            }
                        } else {
                            table
                                .iter()
                                .find(|row| (row.0, row.1, row.2) == (name, retries_left, ttl_left))
                                .map(|row| row.4)
                                .unwrap_or_else(|| panic!("no row for {name}"))
                        };
                        assert_eq!(
                            short(&got),
                            expected,
                            "{name}, retries left {retries_left}, TTL left {ttl_left}, circuit open {circuit_open}"
                        );
                        covered += 1;
                    }
                }
            }
        }
        assert_eq!(covered, 8 * 2 * 2 * 2);
        assert_eq!(table.len(), 8 * 2 * 2);
    }

    #[test]
    fn waiting_gives_the_attempt_back_and_trying_spends_it() {
        let at = Attempted {
            now: NOW,
            expires_at: NOW + 3_600_000,
            now_or_never: false,
            attempts_before: 2,
        };
        let deferred = after_answer(Answer::Credential("c".into()), &at, &policy(), OPEN_MS, 0.0);
        assert_eq!(
            deferred,
            Transition::Again {
                at: NOW + OPEN_MS,
                reason: "circuit open: c".into(),
                attempts: 2,
                waiting: Waiting::Deferred
            }
        );
        let retried = after_answer(
            Answer::Overloaded {
                reason: "503".into(),
                after: Some(Duration::from_secs(7)),
            },
            &at,
            &policy(),
            OPEN_MS,
            0.0,
        );
        // Retry-After wins over the schedule; the attempt is spent.
        assert_eq!(
            retried,
            Transition::Again {
                at: NOW + 7_000,
                reason: "503".into(),
                attempts: 3,
                waiting: Waiting::Retry
            }
        );
        match after_answer(
            Answer::Undocumented {
                reason: "418".into(),
                after: None,
            },
            &at,
            &policy(),
            OPEN_MS,
            0.0,
        ) {
            Transition::Finish {
                state,
                reason,
                attempts,
            } => {
                assert_eq!((state, attempts), (DeliveryState::Failed, 3));
                assert_eq!(reason.as_deref(), Some("gave up after 3 attempts: 418"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn before_sending_ttl_zero_and_registrations_decide() {
        let fresh = Attempted {
            now: NOW,
            expires_at: NOW,
            now_or_never: true,
            attempts_before: 0,
        };
        // A zero TTL goes once, even at its expiry instant ...
        assert_eq!(before_send(&fresh, Registration::Active, None), None);
        // ... and never again.
        let again = Attempted {
            attempts_before: 1,
            ..fresh
        };
        assert_eq!(
            before_send(&again, Registration::Active, None),
            Some(finish(
                DeliveryState::Expired,
                Some("ttl 0: attempted once".into()),
                2
            ))
        );
        let late = Attempted {
            now: NOW + 5,
            expires_at: NOW,
            now_or_never: false,
            attempts_before: 0,
        };
        assert_eq!(
            before_send(&late, Registration::Active, None),
            Some(finish(DeliveryState::Expired, Some("ttl".into()), 1))
        );
        let live = Attempted {
            now: NOW,
            expires_at: NOW + 60_000,
            now_or_never: false,
            attempts_before: 0,
        };
        for (registration, reason) in [
            (Registration::Invalid, "registration-invalid"),
            (Registration::Deleted, "registration-deleted"),
        ] {
            assert_eq!(
                before_send(&live, registration, None),
                Some(finish(DeliveryState::Invalid, Some(reason.into()), 1))
            );
        }
        assert_eq!(before_send(&live, Registration::Active, None), None);
    }
}
