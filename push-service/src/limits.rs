//! Rate limits: GCRA token buckets, in Redis (shared by every node) when
//! configured, in-process otherwise.
//!
//! A check names one or more buckets; it passes only if every bucket has room,
//! and only then is every bucket charged (so a refused request costs nothing).
//! Limits per notifier and per app come from the configuration, overridden per
//! app by the operator (`PUT /v1/apps/{app}/limits`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::{Store, StoreError};

/// A limit refused the request, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over a limit: answered 429 with `Retry-After` and `RateLimit-*`.
    #[error("{detail}")]
    Exceeded { detail: String, verdict: Verdict },
    #[error("the rate limiter is unreachable; retry later")]
    Unreachable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Limits of one app (requests or notifications per second; 0 = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppLimits {
    /// API requests per second of each notifier.
    pub notifier_requests_per_second: f64,
    /// Notification targets per second of each notifier.
    pub notifier_notifications_per_second: f64,
    /// Notification targets per second of all notifiers of the app together.
    pub app_notifications_per_second: f64,
}

/// Node-wide limit settings (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    pub defaults: AppLimits,
    /// Requests per minute of each device key (registration calls, streams).
    pub device_requests_per_minute: f64,
    /// Requests per second of each source address without a bearer token, and failed authentications.
    pub address_requests_per_second: f64,
    /// Burst: this many seconds' worth of a rate may come at once (at least 10 requests).
    pub burst_seconds: f64,
}

/// One bucket of a check.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// What is limited, e.g. `notifier:<id>` (also the Redis key suffix).
    pub key: String,
    pub per_second: f64,
    pub cost: f64,
}

/// The answer of a check, for `RateLimit-*` and `Retry-After`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// Burst size of the tightest bucket.
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the tightest bucket is full again.
    pub reset_seconds: u64,
    /// Milliseconds until the refused request would pass.
    pub retry_after_ms: u64,
}

impl Verdict {
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF httpapi draft).
    pub fn headers(&self) -> [(&'static str, u64); 3] {
        [
            ("ratelimit-limit", self.limit),
            ("ratelimit-remaining", self.remaining),
            ("ratelimit-reset", self.reset_seconds),
        ]
    }
}

/// GCRA over several buckets, evaluated and charged atomically. A cost of 0
/// peeks: refused when there is no room for one, never charged.
/// KEYS: bucket keys. ARGV: per key, interval (ms per unit), tolerance (ms), cost.
/// Returns {allowed, retry_ms, limit, remaining, reset_ms} for the tightest bucket.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowed = 1
local retry = 0
local new = {}
local best_remaining, best_limit, best_reset = -1, 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[(i - 1) * 3 + 1])
  local tolerance = tonumber(ARGV[(i - 1) * 3 + 2])
  local cost = tonumber(ARGV[(i - 1) * 3 + 3])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local need = cost
  if need == 0 then need = 1 end
  local next_tat = tat + interval * need
  local wait = next_tat - tolerance - now
  if wait > 0 then
    allowed = 0
    if wait > retry then retry = wait end
  end
  if wait > 0 or cost == 0 then next_tat = tat end
  new[i] = next_tat
  local remaining = math.floor((tolerance - (next_tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  if best_remaining < 0 or remaining < best_remaining then
    best_remaining = remaining
    best_limit = math.floor(tolerance / interval)
    best_reset = next_tat - now
  end
end
if allowed == 1 then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, new[i], 'PX', math.ceil(new[i] - now) + 1000)
  end
end
return {allowed, math.ceil(retry), best_limit, best_remaining, math.ceil(best_reset)}
"#;

enum Backend {
    Local(Mutex<HashMap<String, f64>>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
        script: redis::Script,
    },
}

/// The node's limiter; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    backend: Arc<Backend>,
    pub settings: LimitSettings,
    store: Arc<dyn Store>,
    app_limits: Arc<Mutex<HashMap<String, (Instant, AppLimits)>>>,
    started: Instant,
}

/// How long a node uses an app's limits before reading them again.
/// An app's limits are read again after this: a change made through another
/// node applies here within a second.
const APP_LIMITS_TTL: Duration = Duration::from_secs(1);

impl Limiter {
    pub fn new(
        settings: LimitSettings,
        store: Arc<dyn Store>,
        redis: Option<(redis::aio::ConnectionManager, String)>,
    ) -> Self {
        let backend = match redis {
            Some((conn, prefix)) => Backend::Redis {
                conn,
                prefix,
                script: redis::Script::new(GCRA_LUA),
            },
            None => Backend::Local(Mutex::default()),
        };
        Limiter {
            backend: Arc::new(backend),
            settings,
            store,
            app_limits: Arc::default(),
            started: Instant::now(),
        }
    }

    /// A bucket for `per_second` (none when unlimited).
    pub fn bucket(key: String, per_second: f64, cost: f64) -> Option<Bucket> {
        (per_second > 0.0).then_some(Bucket {
            key,
            per_second,
            cost,
        })
    }

    fn tolerance_ms(&self, bucket: &Bucket) -> f64 {
        let burst = (bucket.per_second * self.settings.burst_seconds).max(10.0);
        burst * 1000.0 / bucket.per_second
    }

    /// Checks (and, when all have room, charges) `buckets`.
    pub async fn check(&self, buckets: &[Bucket]) -> Result<Verdict, LimitError> {
        if buckets.is_empty() {
            return Ok(Verdict {
                allowed: true,
                ..Verdict::default()
            });
        }
        match &*self.backend {
            Backend::Local(tats) => {
                let now = self.started.elapsed().as_secs_f64() * 1000.0;
                let mut tats = tats.lock().unwrap_or_else(|p| p.into_inner());
                if tats.len() > 100_000 {
                    tats.retain(|_, tat| *tat > now);
                }
                let mut verdict = Verdict {
                    allowed: true,
                    ..Verdict::default()
                };
                let mut best: Option<u64> = None;
                let mut next = Vec::with_capacity(buckets.len());
                for b in buckets {
                    let interval = 1000.0 / b.per_second;
                    let tolerance = self.tolerance_ms(b);
                    let tat = tats.get(&b.key).copied().unwrap_or(now).max(now);
                    let need = if b.cost == 0.0 { 1.0 } else { b.cost };
                    let mut next_tat = tat + interval * need;
                    let wait = next_tat - tolerance - now;
                    if wait > 0.0 {
                        verdict.allowed = false;
                        verdict.retry_after_ms = verdict.retry_after_ms.max(wait.ceil() as u64);
                    }
                    if wait > 0.0 || b.cost == 0.0 {
                        next_tat = tat;
                    }
                    next.push(next_tat);
                    let remaining =
                        ((tolerance - (next_tat - now)) / interval).floor().max(0.0) as u64;
                    if best.is_none_or(|r| remaining < r) {
                        best = Some(remaining);
                        verdict.remaining = remaining;
                        verdict.limit = (tolerance / interval).floor() as u64;
                        verdict.reset_seconds = ((next_tat - now) / 1000.0).ceil() as u64;
                    }
                }
                if verdict.allowed {
                    for (b, tat) in buckets.iter().zip(next) {
                        tats.insert(b.key.clone(), tat);
                    }
                }
                Ok(verdict)
            }
            Backend::Redis {
                conn,
                prefix,
                script,
            } => {
                let mut invocation = script.prepare_invoke();
                for b in buckets {
                    invocation
                        .key(format!("{prefix}rl:{}", b.key))
                        .arg(1000.0 / b.per_second)
                        .arg(self.tolerance_ms(b))
                        .arg(b.cost);
                }
                let mut conn = conn.clone();
                let (allowed, retry, limit, remaining, reset): (i64, i64, i64, i64, i64) =
                    invocation.invoke_async(&mut conn).await.map_err(|e| {
                        tracing::warn!(error = %e, "redis unavailable for rate limits");
                        LimitError::Unreachable
                    })?;
                Ok(Verdict {
                    allowed: allowed == 1,
                    limit: limit.max(0) as u64,
                    remaining: remaining.max(0) as u64,
                    reset_seconds: (reset.max(0) as u64).div_ceil(1000),
                    retry_after_ms: retry.max(0) as u64,
                })
            }
        }
    }

    /// Checks `buckets` and turns a refusal into a 429 naming `what`.
    pub async fn enforce(&self, buckets: &[Bucket], what: &str) -> Result<Verdict, LimitError> {
        let verdict = self.check(buckets).await?;
        if verdict.allowed {
            Ok(verdict)
        } else {
            metrics::counter!(crate::telemetry::names::RATE_LIMITED, "limit" => what.to_owned())
                .increment(1);
            Err(LimitError::Exceeded {
                detail: format!(
                    "{what} rate limit exceeded; retry in {} s",
                    verdict.retry_after_seconds()
                ),
                verdict,
            })
        }
    }

    /// The limits of `app_id`: the operator's override, or the defaults.
    pub async fn app_limits(&self, app_id: &str) -> Result<AppLimits, LimitError> {
        if let Some((at, limits)) = self
            .app_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app_id)
        {
            if at.elapsed() < APP_LIMITS_TTL {
                return Ok(*limits);
            }
        }
        let limits = match self.store.get_app_limits(app_id).await? {
            Some(json) => serde_json::from_str(&json).unwrap_or(self.settings.defaults),
            None => self.settings.defaults,
        };
        let mut cache = self.app_limits.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(app_id.to_owned(), (Instant::now(), limits));
        Ok(limits)
    }

    /// Forgets a cached app's limits (after the operator changed them on this node).
    pub fn forget_app(&self, app_id: &str) {
        self.app_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app_id);
    }
}
