//! Logs, metric names and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Every metric name the service exports, in one place.
pub mod names {
    /// Counter: HTTP requests by method, route and status.
    pub const HTTP_REQUESTS: &str = "push_http_requests_total";
    /// Histogram: HTTP request latency by method, route and status, in seconds.
    pub const HTTP_DURATION: &str = "push_http_request_duration_seconds";
    /// Gauge: 1 while the service is running, labelled by version and store backend.
    pub const BUILD_INFO: &str = "push_build_info";
    /// Counter: notifications accepted (202), by app.
    pub const NOTIFICATIONS_ACCEPTED: &str = "push_notifications_accepted_total";
    /// Counter: delivery attempts by app, provider and outcome
    /// (sent, held, retry, failed, expired, invalid).
    pub const DELIVERIES: &str = "push_deliveries_total";
    /// Histogram: seconds from acceptance to the provider's acceptance, by provider.
    pub const DISPATCH_LATENCY: &str = "push_dispatch_latency_seconds";
    /// Counter: queued deliveries closed as expired by the sweep.
    pub const DELIVERIES_EXPIRED_BY_SWEEP: &str = "push_sweep_expired_total";
    /// Counter: deliveries the sweep queued again (lost queue entries, dead nodes).
    pub const SWEEP_REDRIVEN: &str = "push_sweep_redriven_total";
    /// Gauge: deliveries waiting (queued in the store).
    pub const QUEUE_DEPTH: &str = "push_queue_depth";
    /// Gauge: age in seconds of the oldest waiting delivery.
    pub const QUEUE_OLDEST_AGE: &str = "push_queue_oldest_age_seconds";
    /// Counter: Redis queue entries taken over from a stalled consumer.
    pub const QUEUE_RECLAIMED: &str = "push_queue_reclaimed_total";
    /// Counter: Redis queue entries moved to the dead-letter stream.
    pub const QUEUE_DEAD_LETTERED: &str = "push_queue_dead_lettered_total";
    /// Gauge: open direct-channel streams on this node.
    pub const DIRECT_STREAMS: &str = "push_direct_streams";
    /// Gauge: 1 while an app's circuit for a provider is open.
    pub const CIRCUIT_OPEN: &str = "push_circuit_open";
    /// Gauge: seconds until a credential's certificate expires, by app and provider.
    pub const CREDENTIAL_EXPIRY: &str = "push_credential_expiry_seconds";
    /// Counter: provider auth tokens minted (APNs provider JWTs, FCM OAuth tokens).
    pub const PROVIDER_TOKENS: &str = "push_provider_tokens_total";
    /// Counter: provider outages seen by this node (failures in a row for an app), by provider.
    pub const PROVIDER_OUTAGES: &str = "push_provider_outages_total";
    /// Counter: Redis connections the readiness probe opened (one, unless Redis went away).
    pub const READINESS_CONNECTIONS: &str = "push_readiness_redis_connections_total";
    /// Counter: connections the node closed itself (slow headers, idle, over max_connections), by reason.
    pub const CONNECTIONS_CLOSED: &str = "push_connections_closed_total";
    /// Counter: events written to direct-channel streams.
    pub const DIRECT_EVENTS: &str = "push_direct_events_total";
    /// Counter: dispatch tasks that failed (store error) and were put back for later.
    pub const TASKS_RELEASED: &str = "push_dispatch_tasks_released_total";
    /// Counter: requests refused by a rate limit, by limit.
    pub const RATE_LIMITED: &str = "push_rate_limited_total";
    /// Counter: TLS certificates reloaded from disk.
    pub const TLS_RELOADS: &str = "push_tls_reloads_total";
    /// Counter: audit entries that could not be written.
    pub const AUDIT_WRITE_FAILURES: &str = "push_audit_write_failures_total";
    pub const NOTIFICATIONS_SHED: &str = "push_notifications_shed_total";
    /// Histogram: writes per group-commit transaction (`kind="writes"`), and
    /// registration lookups per grouped statement (`kind="lookups"`).
    pub const STORE_BATCH_SIZE: &str = "push_store_batch_size";
    /// Histogram: seconds one group took to be written, its commit included
    /// (`kind` as for [`STORE_BATCH_SIZE`]). Callers of a group wait this long
    /// plus the group before it; a rise is the store's commit latency.
    pub const STORE_GROUP_SECONDS: &str = "push_store_group_seconds";
    /// Counter: how deliveries were taken for an attempt, by `app` and `kind`: `born`
    /// (the first attempt of one this node just accepted: no claim written),
    /// `written` (a claim written first).
    pub const DELIVERY_CLAIMS: &str = "push_delivery_claims_total";
    /// Counter: rows deleted by retention, by kind (`notifications`, `direct_events`, `audit`).
    pub const RETENTION_DELETED: &str = "push_retention_deleted_total";
    /// Counter: retention's delete statements, by kind.
    pub const RETENTION_BATCHES: &str = "push_retention_batches_total";
    /// Gauge: how long the oldest notification due for deletion has been due
    /// (0 when retention keeps up), in seconds.
    pub const RETENTION_LAG: &str = "push_retention_lag_seconds";
    /// Gauge: age of the oldest notification kept, in seconds.
    pub const NOTIFICATIONS_OLDEST_AGE: &str = "push_notifications_oldest_age_seconds";
    /// Counter: partitions made and dropped by retention (PostgreSQL), by `change`.
    pub const PARTITIONS: &str = "push_partitions_total";
    /// Gauge: bytes on disk by table (PostgreSQL), or `all` and `free` (SQLite).
    pub const STORE_BYTES: &str = "push_store_bytes";
}

/// Logs `what` at WARN with the client address and request path, at most once a
/// second per kind of event on this node; the line counts the ones left out.
/// An attack must leave a trace, not flood the log.
pub fn warn_sampled(what: &'static str, client: std::net::IpAddr, detail: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: OnceLock<Mutex<HashMap<&'static str, (i64, u64)>>> = OnceLock::new();
    let now = crate::ids::now_millis();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (last, suppressed) = seen.entry(what).or_insert((0, 0));
    if now - *last >= 1000 {
        let left_out = std::mem::take(suppressed);
        *last = now;
        drop(seen);
        tracing::warn!(client = %client, detail, suppressed = left_out, "{what}");
    } else {
        *suppressed += 1;
    }
}

/// Publishes unlabelled series at zero from the start, so dashboards and alerts see
/// them before the first event (an absent series is not a zero).
pub fn register_zeroes() {
    for counter in [
        names::SWEEP_REDRIVEN,
        names::DELIVERIES_EXPIRED_BY_SWEEP,
        names::QUEUE_RECLAIMED,
        names::QUEUE_DEAD_LETTERED,
        names::DIRECT_EVENTS,
        names::TLS_RELOADS,
        names::AUDIT_WRITE_FAILURES,
        names::NOTIFICATIONS_SHED,
        names::TASKS_RELEASED,
        names::READINESS_CONNECTIONS,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for gauge in [
        names::QUEUE_DEPTH,
        names::QUEUE_OLDEST_AGE,
        names::DIRECT_STREAMS,
        names::RETENTION_LAG,
        names::NOTIFICATIONS_OLDEST_AGE,
    ] {
        metrics::gauge!(gauge).increment(0.0);
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the JSON (or text) log subscriber. Safe to call more than once.
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder (the `metrics` facade is global by design).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::HTTP_DURATION.into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::DISPATCH_LATENCY.into()),
                        &[
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                            60.0, 300.0, 900.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::STORE_BATCH_SIZE.into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::STORE_GROUP_SECONDS.into()),
                        &[
                            0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
                            0.128, 0.256, 1.0,
                        ],
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program);
            // then this handle renders only what it saw, which is acceptable.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
