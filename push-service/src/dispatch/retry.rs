//! The retry schedule, as data: exponential backoff with full jitter, `Retry-After` first.

use std::time::Duration;

/// When and how often a failed delivery is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; then the delivery fails.
    pub max_attempts: u32,
    /// Delay ceiling before the first retry; doubles each time.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at this time (ms since the epoch).
    At(i64),
    /// No tries left.
    GiveUp,
    /// The next try would land after the notification's TTL.
    Expired,
}

impl RetryPolicy {
    /// Decides the next try after attempt number `attempts` (1-based) failed at `now`.
    /// `retry_after` from the provider wins over the schedule; `jitter` is in [0, 1).
    pub fn next(
        &self,
        attempts: u32,
        now: i64,
        expires_at: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> RetryDecision {
        if attempts >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let delay = match retry_after {
            Some(after) => after,
            None => {
                let ceiling = self
                    .base
                    .saturating_mul(1u32 << (attempts - 1).min(20))
                    .min(self.max);
                // Full jitter, but never less than half the ceiling, so retries still back off.
                ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
            }
        };
        let at = now.saturating_add(delay.as_millis() as i64);
        if at >= expires_at {
            RetryDecision::Expired
        } else {
            RetryDecision::At(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn backs_off_exponentially_within_jitter_bounds() {
        let p = policy();
        let far = i64::MAX;
        assert_eq!(p.next(1, 0, far, None, 0.0), RetryDecision::At(500));
        assert_eq!(p.next(1, 0, far, None, 0.999_999), RetryDecision::At(999));
        assert_eq!(p.next(2, 0, far, None, 0.0), RetryDecision::At(1000));
        assert_eq!(p.next(3, 0, far, None, 0.0), RetryDecision::At(2000));
        // Capped at max.
        assert_eq!(
            p.next(4, 0, far, None, 0.999_999),
            RetryDecision::At(8000 - 1)
        );
        let capped = RetryPolicy {
            max_attempts: 50,
            ..p.clone()
        };
        assert_eq!(capped.next(30, 0, far, None, 0.0), RetryDecision::At(5000));
    }

    #[test]
    fn retry_after_wins_attempts_and_ttl_bound() {
        let p = policy();
        assert_eq!(
            p.next(1, 1000, i64::MAX, Some(Duration::from_secs(30)), 0.3),
            RetryDecision::At(31_000)
        );
        assert_eq!(p.next(5, 0, i64::MAX, None, 0.0), RetryDecision::GiveUp);
        assert_eq!(p.next(1, 0, 400, None, 0.0), RetryDecision::Expired);
        assert_eq!(
            p.next(1, 0, 10_000, Some(Duration::from_secs(60)), 0.0),
            RetryDecision::Expired
        );
    }
}
