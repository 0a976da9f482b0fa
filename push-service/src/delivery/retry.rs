//! The retry schedule, as data: exponential backoff with full jitter, `Retry-After` first.

use std::time::Duration;

/// When and how often a failed delivery is tried again. A provider that is
/// overloaded or unreachable is retried until the notification's TTL; an answer
/// nobody documents is retried at most `max_attempts` times in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included, for undocumented answers; then the delivery fails.
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
    /// No tries left (undocumented answers only).
    GiveUp,
    /// The next try would land after the notification's TTL.
    Expired,
}

impl RetryPolicy {
    /// Decides the next try after attempt number `attempts` (1-based) failed at `now`.
    /// `bounded`: the answer was not one the providers document, so `max_attempts`
    /// applies; otherwise only the TTL ends the retries.
    /// `retry_after` from the provider wins over the schedule; `jitter` is in [0, 1).
    pub fn next(
        &self,
        attempts: u32,
        bounded: bool,
        now: i64,
        expires_at: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> RetryDecision {
        if bounded && attempts >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let delay = match retry_after {
            Some(after) => after,
            None => {
                let ceiling = self
                    .base
                    .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
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
    fn the_schedule_as_a_table() {
        use RetryDecision::*;
        let far = i64::MAX;
        let s = Some(Duration::from_secs(30));
        let big = Some(Duration::from_secs(60));
        // (attempts, bounded, now, expires_at, Retry-After, jitter) → decision
        type Row = (u32, bool, i64, i64, Option<Duration>, f64, RetryDecision);
        let table: &[Row] = &[
            // Exponential within the jitter bounds: [ceiling/2, ceiling).
            (1, false, 0, far, None, 0.0, At(500)),
            (1, false, 0, far, None, 0.999_999, At(999)),
            (2, false, 0, far, None, 0.0, At(1000)),
            (3, false, 0, far, None, 0.0, At(2000)),
            (4, false, 0, far, None, 0.999_999, At(8000 - 1)),
            // Capped at `max`, however many attempts.
            (30, false, 0, far, None, 0.0, At(5000)),
            (10_000, false, 0, far, None, 0.999_999, At(10_000 - 1)),
            // Provider failures are never given up on: only the TTL ends them.
            (5, false, 0, far, None, 0.0, At(5000)),
            (500, false, 0, 20_000, None, 0.0, At(5000)),
            (500, false, 16_000, 20_000, None, 0.0, Expired),
            // Undocumented answers: at most `max_attempts` tries in all.
            (4, true, 0, far, None, 0.0, At(4000)),
            (5, true, 0, far, None, 0.0, GiveUp),
            (50, true, 0, far, None, 0.0, GiveUp),
            // Retry-After wins over the schedule.
            (1, false, 1000, far, s, 0.3, At(31_000)),
            (1, false, 0, 10_000, big, 0.0, Expired),
            // TTL bound; a zero TTL (expires at creation) is never retried.
            (1, false, 0, 400, None, 0.0, Expired),
            (1, false, 0, 0, None, 0.0, Expired),
            (1, true, 0, 0, None, 0.0, Expired),
        ];
        let p = policy();
        for (i, (attempts, bounded, now, expires, after, jitter, want)) in table.iter().enumerate()
        {
            assert_eq!(
                p.next(*attempts, *bounded, *now, *expires, *after, *jitter),
                *want,
                "row {i}"
            );
        }
    }
}
