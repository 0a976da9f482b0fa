//! The configuration keys as read from the layers, and their validation into
//! a [`Config`]: every refusal names its key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, Config, ConfigError, LogFormat, ProviderSettings, TlsFiles};
use crate::secret::Secret;

/// More worker threads than this is a mistake, not a tuning.
const MAX_WORKER_THREADS: usize = 1024;

/// Raw settings as read from the layers, before validation.
#[derive(Deserialize)]
pub(super) struct RawConfig {
    listen: String,
    public_url: String,
    pub(super) data_dir: PathBuf,
    database_url: String,
    database_max_connections: u32,
    sqlite_synchronous: String,
    redis_url: String,
    redis_key_prefix: String,
    dpop_window_seconds: u64,
    notifier_audience: String,
    notifier_max_lifetime_seconds: u64,
    clock_skew_seconds: u64,
    dispatch_workers: usize,
    queue_visibility_seconds: u64,
    redrive_after_seconds: u64,
    sweep_interval_seconds: u64,
    max_queue_depth: u64,
    retry_max_attempts: u32,
    retry_base_ms: u64,
    retry_max_ms: u64,
    direct_heartbeat_seconds: u64,
    apns_production_url: String,
    apns_sandbox_url: String,
    fcm_url: String,
    provider_ca_file: String,
    provider_proxy: String,
    apns_connections: usize,
    provider_timeout_seconds: u64,
    circuit_open_seconds: u64,
    invalidation_guard_min: usize,
    pub(super) admin_token: String,
    pub(super) admin_token_file: String,
    pub(super) master_key: String,
    pub(super) master_key_file: String,
    pub(super) master_key_previous: String,
    pub(super) master_key_previous_file: String,
    pub(super) admin_token_previous: String,
    max_body_bytes: usize,
    max_content_bytes: usize,
    request_timeout_seconds: u64,
    shutdown_grace_seconds: u64,
    log_format: String,
    log_level: String,
    tls_cert: String,
    tls_key: String,
    tls_reload_seconds: u64,
    database_ca_file: String,
    redis_ca_file: String,
    rate_limit_notifier_requests_per_second: f64,
    rate_limit_notifier_notifications_per_second: f64,
    rate_limit_app_notifications_per_second: f64,
    rate_limit_device_requests_per_minute: f64,
    rate_limit_address_requests_per_second: f64,
    rate_limit_burst_seconds: f64,
    audit_retention_days: u64,
    notification_retention_days: u64,
    retention_batch: u32,
    trusted_proxies: String,
    allow_private_fetch: bool,
    fcm_token_uri_allow: String,
    max_registrations_per_key: u32,
    header_read_timeout_seconds: u64,
    max_connections: usize,
    worker_threads: usize,
    max_streams_per_key: usize,
    admin_listen: String,
    operator_api_on_admin_listen: bool,
    admin_tls: bool,
    max_unattested_registrations_per_app: u64,
}

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
        let raw = self;
        let listen: SocketAddr = raw
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("`{}` is not host:port ({e})", raw.listen)))?;
        if raw.public_url.trim().is_empty() && listen.ip().is_unspecified() {
            // `http://0.0.0.0:8080` is no URL a client can use: every DPoP proof and
            // every notifier JWT would be refused. Say so at the start instead.
            return Err(invalid(
                "public_url",
                format!(
                    "set it (PUSH_PUBLIC_URL) to the URL clients use: the service listens on \
                     the wildcard address {listen}, which is no URL a client can name"
                ),
            ));
        }
        let public_url = if raw.public_url.trim().is_empty() {
            format!("http://{listen}")
        } else {
            raw.public_url.trim().to_owned()
        };
        let public_url = url::Url::parse(&public_url)
            .map_err(|e| invalid("public_url", format!("`{public_url}` is not a URL ({e})")))?;
        if !matches!(public_url.scheme(), "http" | "https") || public_url.host().is_none() {
            return Err(invalid(
                "public_url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        let database_url = if raw.database_url.trim().is_empty() {
            format!("sqlite://{}", raw.data_dir.join("push.db").display())
        } else {
            raw.database_url.trim().to_owned()
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        let sqlite_full_sync = match raw.sqlite_synchronous.as_str() {
            "full" => true,
            "normal" => false,
            other => {
                return Err(invalid(
                    "sqlite_synchronous",
                    format!("`{other}` is not full or normal"),
                ))
            }
        };
        if raw.database_max_connections == 0 {
            return Err(invalid("database_max_connections", "must be at least 1"));
        }
        let redis_url = match raw.redis_url.trim() {
            "" => None,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Some(Secret::new(url.to_owned()))
            }
            _ => {
                return Err(invalid(
                    "redis_url",
                    "must start with redis:// or rediss://",
                ))
            }
        };
        if raw.dpop_window_seconds == 0 || raw.dpop_window_seconds > 600 {
            return Err(invalid("dpop_window_seconds", "must be between 1 and 600"));
        }
        if raw.notifier_max_lifetime_seconds == 0 || raw.notifier_max_lifetime_seconds > 3600 {
            return Err(invalid(
                "notifier_max_lifetime_seconds",
                "must be between 1 and 3600",
            ));
        }
        if raw.clock_skew_seconds > 300 {
            return Err(invalid("clock_skew_seconds", "must be at most 300"));
        }
        let notifier_audience = match raw.notifier_audience.trim() {
            "" => public_url.as_str().trim_end_matches('/').to_owned(),
            aud => aud.to_owned(),
        };
        if raw.redrive_after_seconds <= raw.queue_visibility_seconds {
            return Err(invalid(
                "redrive_after_seconds",
                "must be greater than queue_visibility_seconds",
            ));
        }
        if raw.queue_visibility_seconds == 0 || raw.sweep_interval_seconds == 0 {
            return Err(invalid(
                "queue_visibility_seconds",
                "queue_visibility_seconds and sweep_interval_seconds must be at least 1",
            ));
        }
        if raw.retry_max_attempts == 0
            || raw.retry_base_ms == 0
            || raw.retry_max_ms < raw.retry_base_ms
        {
            return Err(invalid(
                "retry_max_attempts",
                "retry_max_attempts and retry_base_ms must be at least 1, retry_max_ms at least retry_base_ms",
            ));
        }
        if raw.direct_heartbeat_seconds == 0 {
            return Err(invalid("direct_heartbeat_seconds", "must be at least 1"));
        }
        // Parsed here once; each provider request adds its path to them.
        let [apns_production_url, apns_sandbox_url, fcm_url] = [
            ("apns_production_url", &raw.apns_production_url),
            ("apns_sandbox_url", &raw.apns_sandbox_url),
            ("fcm_url", &raw.fcm_url),
        ]
        .map(|(key, value)| {
            url::Url::parse(value)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .ok_or_else(|| invalid(key, format!("`{value}` is not an http(s) URL")))
        });
        let (apns_production_url, apns_sandbox_url, fcm_url) =
            (apns_production_url?, apns_sandbox_url?, fcm_url?);
        // One file or several (comma-separated), each one or more PEM certificates.
        let mut ca_pem = None::<String>;
        for path in raw
            .provider_ca_file
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let pem = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                key: "provider_ca_file",
                path: PathBuf::from(path),
                source,
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "provider_ca_file",
                    format!("{path} holds no PEM certificate"),
                ));
            }
            let all = ca_pem.get_or_insert_with(String::new);
            all.push_str(&pem);
            all.push('\n');
        }
        if raw.apns_connections == 0 || raw.apns_connections > 64 {
            return Err(invalid("apns_connections", "must be between 1 and 64"));
        }
        if raw.provider_timeout_seconds == 0 {
            return Err(invalid("provider_timeout_seconds", "must be at least 1"));
        }
        if raw.provider_timeout_seconds >= raw.queue_visibility_seconds {
            return Err(invalid(
                "queue_visibility_seconds",
                "must be longer than provider_timeout_seconds",
            ));
        }
        if raw.max_content_bytes > 16 << 20 {
            return Err(invalid(
                "max_content_bytes",
                "must be at most 16777216 (16 MiB)",
            ));
        }
        if raw.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if raw.request_timeout_seconds == 0 {
            return Err(invalid("request_timeout_seconds", "must be at least 1"));
        }
        let admin_listen = match raw.admin_listen.trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|e| {
                invalid("admin_listen", format!("`{text}` is not host:port ({e})"))
            })?),
        };
        if raw.operator_api_on_admin_listen && admin_listen.is_none() {
            return Err(invalid(
                "operator_api_on_admin_listen",
                "needs admin_listen (the address to serve it on)",
            ));
        }
        if admin_listen.is_some_and(|a| a == listen) {
            return Err(invalid("admin_listen", "must differ from listen"));
        }
        if raw.header_read_timeout_seconds == 0 {
            return Err(invalid("header_read_timeout_seconds", "must be at least 1"));
        }
        if raw.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if raw.worker_threads > MAX_WORKER_THREADS {
            return Err(invalid(
                "worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0: one per CPU)"),
            ));
        }
        let log_format = match raw.log_format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(invalid(
                    "log_format",
                    format!("`{other}` is not json or text"),
                ))
            }
        };

        let tls = match (raw.tls_cert.trim(), raw.tls_key.trim()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                return Err(invalid(
                    "tls_cert",
                    "set both tls_cert and tls_key, or neither",
                ))
            }
            (cert, key) => {
                for (k, path) in [("tls_cert", cert), ("tls_key", key)] {
                    std::fs::metadata(path).map_err(|source| ConfigError::Io {
                        key: k,
                        path: PathBuf::from(path),
                        source,
                    })?;
                }
                if raw.tls_reload_seconds == 0 {
                    return Err(invalid("tls_reload_seconds", "must be at least 1"));
                }
                Some(TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                    reload_every: std::time::Duration::from_secs(raw.tls_reload_seconds),
                })
            }
        };
        if raw.admin_tls && (admin_listen.is_none() || tls.is_none()) {
            return Err(invalid(
                "admin_tls",
                "needs admin_listen and the service's own TLS (tls_cert, tls_key)",
            ));
        }
        let optional_file =
            |key: &'static str, value: &str| -> Result<Option<PathBuf>, ConfigError> {
                match value.trim() {
                    "" => Ok(None),
                    path => {
                        std::fs::metadata(path).map_err(|source| ConfigError::Io {
                            key,
                            path: PathBuf::from(path),
                            source,
                        })?;
                        Ok(Some(PathBuf::from(path)))
                    }
                }
            };
        let database_ca_file = optional_file("database_ca_file", &raw.database_ca_file)?;
        let redis_ca_file = optional_file("redis_ca_file", &raw.redis_ca_file)?;
        for (key, value) in [
            (
                "rate_limit_notifier_requests_per_second",
                raw.rate_limit_notifier_requests_per_second,
            ),
            (
                "rate_limit_notifier_notifications_per_second",
                raw.rate_limit_notifier_notifications_per_second,
            ),
            (
                "rate_limit_app_notifications_per_second",
                raw.rate_limit_app_notifications_per_second,
            ),
            (
                "rate_limit_device_requests_per_minute",
                raw.rate_limit_device_requests_per_minute,
            ),
            (
                "rate_limit_address_requests_per_second",
                raw.rate_limit_address_requests_per_second,
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(key, "must be a number >= 0 (0: no limit)"));
            }
        }
        if !(raw.rate_limit_burst_seconds.is_finite() && raw.rate_limit_burst_seconds > 0.0) {
            return Err(invalid("rate_limit_burst_seconds", "must be > 0"));
        }
        let trusted_proxies = raw
            .trusted_proxies
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(crate::net::Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("trusted_proxies", e.to_string()))?;
        let token_uri_allow: Vec<String> = raw
            .fcm_token_uri_allow
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if token_uri_allow.is_empty() {
            return Err(invalid(
                "fcm_token_uri_allow",
                "name at least one token endpoint (Google's by default)",
            ));
        }
        let fetch = crate::outbound::FetchPolicy {
            allow_private: raw.allow_private_fetch,
            token_uri_allow,
        };
        let limits = crate::limits::LimitSettings {
            defaults: crate::limits::AppLimits {
                notifier_requests_per_second: raw.rate_limit_notifier_requests_per_second,
                notifier_notifications_per_second: raw.rate_limit_notifier_notifications_per_second,
                app_notifications_per_second: raw.rate_limit_app_notifications_per_second,
            },
            device_requests_per_minute: raw.rate_limit_device_requests_per_minute,
            address_requests_per_second: raw.rate_limit_address_requests_per_second,
            burst_seconds: raw.rate_limit_burst_seconds,
        };

        let (admin_token, admin_token_previous, master_key, master_key_previous, created_files) =
            raw.secrets()?;
        if !(1..=10_000).contains(&raw.retention_batch) {
            return Err(invalid("retention_batch", "must be between 1 and 10000"));
        }

        Ok(Config {
            listen,
            public_url,
            data_dir: raw.data_dir,
            database_url: Secret::new(database_url),
            database_max_connections: raw.database_max_connections,
            sqlite_full_sync,
            redis_url,
            redis_key_prefix: raw.redis_key_prefix,
            dpop_window: std::time::Duration::from_secs(raw.dpop_window_seconds),
            notifier_audience,
            notifier_max_lifetime: std::time::Duration::from_secs(
                raw.notifier_max_lifetime_seconds,
            ),
            clock_skew: std::time::Duration::from_secs(raw.clock_skew_seconds),
            dispatch_workers: raw.dispatch_workers,
            queue_visibility: std::time::Duration::from_secs(raw.queue_visibility_seconds),
            redrive_after: std::time::Duration::from_secs(raw.redrive_after_seconds),
            sweep_interval: std::time::Duration::from_secs(raw.sweep_interval_seconds),
            max_queue_depth: raw.max_queue_depth,
            retry: crate::delivery::retry::RetryPolicy {
                max_attempts: raw.retry_max_attempts,
                base: std::time::Duration::from_millis(raw.retry_base_ms),
                max: std::time::Duration::from_millis(raw.retry_max_ms),
            },
            direct_heartbeat: std::time::Duration::from_secs(raw.direct_heartbeat_seconds),
            providers: ProviderSettings {
                apns_production_url,
                apns_sandbox_url,
                fcm_url,
                ca_pem,
                proxy: crate::egress::EgressProxy::configured(&raw.provider_proxy, &|name| {
                    std::env::var(name).ok()
                })
                .map_err(|e| invalid("provider_proxy", e.to_string()))?,
                apns_connections: raw.apns_connections,
                fetch: fetch.clone(),
                timeout: std::time::Duration::from_secs(raw.provider_timeout_seconds),
                circuit_open: std::time::Duration::from_secs(raw.circuit_open_seconds),
                invalidation_guard_min: raw.invalidation_guard_min,
            },
            admin_token: Secret::new(admin_token),
            master_key: Secret::new(master_key),
            master_key_previous: master_key_previous.map(Secret::new),
            admin_token_previous,
            max_body_bytes: raw.max_body_bytes,
            max_content_bytes: raw.max_content_bytes,
            request_timeout: std::time::Duration::from_secs(raw.request_timeout_seconds),
            shutdown_grace: std::time::Duration::from_secs(raw.shutdown_grace_seconds),
            log_format,
            log_level: raw.log_level,
            created_files,
            tls,
            database_ca_file,
            redis_ca_file,
            limits,
            audit_retention: std::time::Duration::from_secs(raw.audit_retention_days * 86_400),
            notification_retention: std::time::Duration::from_secs(
                raw.notification_retention_days * 86_400,
            ),
            retention_batch: raw.retention_batch,
            trusted_proxies,
            fetch,
            max_registrations_per_key: raw.max_registrations_per_key,
            header_read_timeout: std::time::Duration::from_secs(raw.header_read_timeout_seconds),
            max_connections: raw.max_connections,
            worker_threads: raw.worker_threads,
            max_streams_per_key: raw.max_streams_per_key,
            admin_listen,
            operator_api_on_admin_listen: raw.operator_api_on_admin_listen,
            admin_tls: raw.admin_tls,
            max_unattested_registrations_per_app: raw.max_unattested_registrations_per_app,
        })
    }
}
