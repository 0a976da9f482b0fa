//! Per app and provider: a circuit that opens on credential errors, the guard
//! that stops mass invalidation when most of an app's tokens fail at once, and
//! the outage tracker that tells when a provider stopped and started answering.

use crate::delivery::ProviderKind;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;
/// Provider failures in a row (no success between) that make an outage: one
/// device's 429 among successes is not one.
pub const OUTAGE_AFTER_FAILURES: u32 = 3;
/// Share of rejected tokens, among recent attempts, that trips the guard.
const GUARD_RATIO: f64 = 0.8;

#[derive(Default)]
struct State {
    open_until: i64,
    reason: Option<String>,
    /// Recent attempts: (time, token rejected?).
    window: VecDeque<(i64, bool)>,
    /// The credential was marked failing and should be cleared on the next success.
    failing: bool,
    /// Provider failures since the last success.
    provider_failures: u32,
    /// When the outage began (its first failure), once declared.
    outage_since: Option<i64>,
    /// When the last outage ended.
    recovered_at: Option<i64>,
}

/// For how long after an outage ends the sweep keeps bringing waiting deliveries
/// forward: an attempt in flight at the return that failed after the wake went
/// back to a long backoff, and is caught here.
pub const RECOVERY_WINDOW_MS: i64 = 30_000;

/// What the sweep does for an app and provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// In an outage: send one waiting delivery early.
    One,
    /// Just recovered: bring every waiting delivery forward.
    All,
}

/// What a success ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The credential had been marked failing.
    pub credential: bool,
    /// The provider had been out since this time (ms): its waiting deliveries can go now.
    pub outage_since: Option<i64>,
}

/// Circuits of one node (each node learns on its own; the credential status is shared in the store).
#[derive(Default)]
pub struct Circuits {
    states: Mutex<HashMap<(String, ProviderKind), State>>,
}

/// What the guard says about a rejected token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    /// Invalidate the registration.
    Invalidate,
    /// Too many at once: the circuit opened; keep the registration.
    Suspicious(String),
}

impl Circuits {
    fn with<T>(&self, app: &str, provider: ProviderKind, f: impl FnOnce(&mut State) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        f(states.entry((app.to_owned(), provider)).or_default())
    }

    /// When open: until when, and why.
    pub fn open_until(&self, app: &str, provider: ProviderKind, now: i64) -> Option<(i64, String)> {
        self.with(app, provider, |s| {
            (s.open_until > now).then(|| (s.open_until, s.reason.clone().unwrap_or_default()))
        })
    }

    /// Opens the circuit for `duration_ms`.
    pub fn open(
        &self,
        app: &str,
        provider: ProviderKind,
        reason: &str,
        now: i64,
        duration_ms: i64,
    ) {
        self.with(app, provider, |s| {
            s.open_until = now + duration_ms;
            s.reason = Some(reason.to_owned());
            s.failing = true;
        });
        metrics::gauge!(crate::telemetry::names::CIRCUIT_OPEN, "app" => app.to_owned(), "provider" => provider.as_str()).set(1.0);
    }

    /// Closes the circuit (the operator replaced the credential).
    pub fn reset(&self, app: &str, provider: ProviderKind) {
        self.with(app, provider, |s| {
            s.open_until = 0;
            s.window.clear();
        });
    }

    /// Records an accepted delivery, and what it ended.
    pub fn success(&self, app: &str, provider: ProviderKind, now: i64) -> Recovered {
        let recovered = self.with(app, provider, |s| {
            push(&mut s.window, now, false);
            s.provider_failures = 0;
            let outage_since = s.outage_since.take();
            if outage_since.is_some() {
                s.recovered_at = Some(now);
            }
            Recovered {
                credential: std::mem::take(&mut s.failing),
                outage_since,
            }
        });
        if recovered.credential {
            metrics::gauge!(crate::telemetry::names::CIRCUIT_OPEN, "app" => app.to_owned(), "provider" => provider.as_str()).set(0.0);
        }
        recovered
    }

    /// Records a provider failure (overloaded, unreachable); true when it starts an outage.
    pub fn provider_failed(&self, app: &str, provider: ProviderKind, now: i64) -> bool {
        self.with(app, provider, |s| {
            s.provider_failures = s.provider_failures.saturating_add(1);
            if s.outage_since.is_none() && s.provider_failures >= OUTAGE_AFTER_FAILURES {
                s.outage_since = Some(now);
                true
            } else {
                false
            }
        })
    }

    /// The (app, provider) pairs in an outage or just out of one, for the sweep.
    pub fn probes(&self, now: i64) -> Vec<(String, ProviderKind, Probe)> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states
            .iter()
            .filter_map(|((app, provider), s)| {
                let probe = if s.outage_since.is_some() {
                    Probe::One
                } else if s
                    .recovered_at
                    .is_some_and(|at| now - at < RECOVERY_WINDOW_MS)
                {
                    Probe::All
                } else {
                    return None;
                };
                Some((app.clone(), *provider, probe))
            })
            .collect()
    }

    /// Records a rejected token and decides whether to believe it.
    pub fn rejected_token(
        &self,
        app: &str,
        provider: ProviderKind,
        now: i64,
        guard_min: usize,
        open_ms: i64,
    ) -> TokenVerdict {
        let verdict = self.with(app, provider, |s| {
            push(&mut s.window, now, true);
            let rejected = s.window.iter().filter(|(_, r)| *r).count();
            let share = rejected as f64 / s.window.len() as f64;
            if rejected >= guard_min && share >= GUARD_RATIO {
                let reason = format!(
                    "invalidation guard: {rejected} of {} recent tokens rejected at once; check the credential's environment and topic",
                    s.window.len()
                );
                s.open_until = now + open_ms;
                s.reason = Some(reason.clone());
                s.failing = true;
                TokenVerdict::Suspicious(reason)
            } else {
                TokenVerdict::Invalidate
            }
        });
        if let TokenVerdict::Suspicious(_) = verdict {
            metrics::gauge!(crate::telemetry::names::CIRCUIT_OPEN, "app" => app.to_owned(), "provider" => provider.as_str()).set(1.0);
        }
        verdict
    }
}

fn push(window: &mut VecDeque<(i64, bool)>, now: i64, rejected: bool) {
    window.push_back((now, rejected));
    while window.front().is_some_and(|(t, _)| *t < now - WINDOW_MS) || window.len() > 10_000 {
        window.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_trips_only_when_most_tokens_fail_together() {
        let circuits = Circuits::default();
        for i in 0..10 {
            circuits.success("a", ProviderKind::Apns, i);
        }
        // 4 rejections among 14 attempts: ordinary dead tokens.
        for i in 0..4 {
            assert_eq!(
                circuits.rejected_token("a", ProviderKind::Apns, 100 + i, 3, 1000),
                TokenVerdict::Invalidate
            );
        }
        // Another app, all rejected: the guard trips at the minimum.
        assert_eq!(
            circuits.rejected_token("b", ProviderKind::Fcm, 0, 3, 1000),
            TokenVerdict::Invalidate
        );
        assert_eq!(
            circuits.rejected_token("b", ProviderKind::Fcm, 1, 3, 1000),
            TokenVerdict::Invalidate
        );
        assert!(matches!(
            circuits.rejected_token("b", ProviderKind::Fcm, 2, 3, 1000),
            TokenVerdict::Suspicious(_)
        ));
        assert!(circuits.open_until("b", ProviderKind::Fcm, 3).is_some());
        assert!(circuits.open_until("b", ProviderKind::Fcm, 2000).is_none());
        assert!(circuits.open_until("a", ProviderKind::Apns, 3).is_none());
        assert!(
            circuits.success("b", ProviderKind::Fcm, 2001).credential,
            "recovery is reported once"
        );
        assert!(!circuits.success("b", ProviderKind::Fcm, 2002).credential);
    }

    #[test]
    fn an_outage_is_failures_in_a_row_and_ends_with_a_success() {
        let c = Circuits::default();
        // One device's failures between successes: no outage.
        for t in 0..10 {
            assert!(!c.provider_failed("a", ProviderKind::Apns, t * 10));
            assert_eq!(
                c.success("a", ProviderKind::Apns, t * 10 + 1).outage_since,
                None
            );
        }
        assert!(!c.provider_failed("a", ProviderKind::Apns, 200));
        assert!(!c.provider_failed("a", ProviderKind::Apns, 201));
        assert!(
            c.provider_failed("a", ProviderKind::Apns, 202),
            "the third in a row"
        );
        assert!(
            !c.provider_failed("a", ProviderKind::Apns, 203),
            "declared once"
        );
        assert_eq!(
            c.probes(250),
            vec![("a".to_owned(), ProviderKind::Apns, Probe::One)]
        );
        let recovered = c.success("a", ProviderKind::Apns, 300);
        assert_eq!(recovered.outage_since, Some(202));
        assert!(!recovered.credential);
        assert_eq!(
            c.success("a", ProviderKind::Apns, 301),
            Recovered::default()
        );
        // For a while after, the sweep brings every waiting delivery forward.
        assert_eq!(
            c.probes(301),
            vec![("a".to_owned(), ProviderKind::Apns, Probe::All)]
        );
        assert_eq!(
            c.probes(300 + RECOVERY_WINDOW_MS - 1),
            vec![("a".to_owned(), ProviderKind::Apns, Probe::All)]
        );
        assert!(c.probes(300 + RECOVERY_WINDOW_MS).is_empty());
    }
}
