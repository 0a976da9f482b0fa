//! Layered configuration: embedded defaults, optional TOML file, `PUSH_*` environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::secret::Secret;
pub use crate::telemetry::LogFormat;

/// The commented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Why the configuration could not be used; each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("configuration key `{key}`: cannot use {path}: {source}")]
    Io {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Raw settings as read from the layers, before validation.
#[derive(Deserialize)]
struct RawConfig {
    listen: String,
    public_url: String,
    data_dir: PathBuf,
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
    apns_connections: usize,
    provider_timeout_seconds: u64,
    circuit_open_seconds: u64,
    invalidation_guard_min: usize,
    admin_token: String,
    admin_token_file: String,
    master_key: String,
    master_key_file: String,
    max_body_bytes: usize,
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
    trusted_proxies: String,
    allow_private_fetch: bool,
    fcm_token_uri_allow: String,
    max_registrations_per_key: u32,
    header_read_timeout_seconds: u64,
    max_connections: usize,
    max_streams_per_key: usize,
    admin_listen: String,
    operator_api_on_admin_listen: bool,
    admin_tls: bool,
    max_unattested_registrations_per_app: u64,
}

/// Where and how the APNs and FCM clients connect.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub apns_production_url: String,
    pub apns_sandbox_url: String,
    pub fcm_url: String,
    /// Extra trusted root (PEM), e.g. the simulators' CA.
    pub ca_pem: Option<String>,
    pub apns_connections: usize,
    pub timeout: std::time::Duration,
    pub circuit_open: std::time::Duration,
    pub invalidation_guard_min: usize,
    /// Where a service account's `token_uri` may point.
    pub fetch: crate::outbound::FetchPolicy,
}

/// Validated configuration. Secrets are wrapped so they never print.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: url::Url,
    pub data_dir: PathBuf,
    pub database_url: Secret<String>,
    pub database_max_connections: u32,
    /// SQLite `synchronous = FULL` (true) or `NORMAL` (false).
    pub sqlite_full_sync: bool,
    pub redis_url: Option<Secret<String>>,
    pub redis_key_prefix: String,
    /// Largest difference between a DPoP proof's `iat` and the server clock.
    pub dpop_window: std::time::Duration,
    /// The `aud` notifier JWTs must carry.
    pub notifier_audience: String,
    /// Longest notifier JWT lifetime accepted (`exp` - now).
    pub notifier_max_lifetime: std::time::Duration,
    /// Clock skew tolerated on `iat`/`exp`.
    pub clock_skew: std::time::Duration,
    /// Dispatch workers on this node (0: API only).
    pub dispatch_workers: usize,
    /// Time after which a taken, unfinished queue entry goes to another consumer.
    pub queue_visibility: std::time::Duration,
    /// Time after which the sweep re-drives an unfinished delivery.
    pub redrive_after: std::time::Duration,
    pub sweep_interval: std::time::Duration,
    /// New notifications are refused (503) while the queue is deeper than this (0: never).
    pub max_queue_depth: u64,
    pub retry: crate::delivery::retry::RetryPolicy,
    pub direct_heartbeat: std::time::Duration,
    pub providers: ProviderSettings,
    pub admin_token: Secret<String>,
    pub master_key: Secret<[u8; 32]>,
    pub max_body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub shutdown_grace: std::time::Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Files created on this start (generated secrets), reported once by the binary.
    pub created_files: Vec<PathBuf>,
    /// TLS termination: PEM chain and key (none: plain HTTP, e.g. behind an ingress).
    pub tls: Option<TlsFiles>,
    /// Trusted root (PEM file) for TLS to PostgreSQL (`sslmode` in the URL).
    pub database_ca_file: Option<PathBuf>,
    /// Trusted root (PEM file) for `rediss://`.
    pub redis_ca_file: Option<PathBuf>,
    pub limits: crate::limits::LimitSettings,
    /// Audit entries older than this are deleted by the sweep (0: kept forever).
    pub audit_retention: std::time::Duration,
    /// Peers whose `Forwarded` / `X-Forwarded-For` name the client address.
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// What outbound fetches named by others (JWKS URLs, `token_uri`) may reach.
    pub fetch: crate::outbound::FetchPolicy,
    /// Active registrations one device key may hold (0: no limit).
    pub max_registrations_per_key: u32,
    /// Time to send a request's headers (and to start the next on an idle connection).
    pub header_read_timeout: std::time::Duration,
    /// Open connections per node.
    pub max_connections: usize,
    /// Open direct-channel streams per device key and node (0: no limit).
    pub max_streams_per_key: usize,
    /// A second address for `/healthz`, `/readyz` and `/metrics` (then off the public one).
    pub admin_listen: Option<SocketAddr>,
    /// The operator API only on `admin_listen`.
    pub operator_api_on_admin_listen: bool,
    /// `admin_listen` speaks TLS with the service's certificate (`tls_cert`).
    pub admin_tls: bool,
    /// Active registrations an app may hold without a client attestation (0: no limit).
    pub max_unattested_registrations_per_app: u64,
}

/// Where the service's certificate and key are, and how often they are re-read.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reload_every: std::time::Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url)
            .field("redis_url", &self.redis_url)
            .field("admin_token", &self.admin_token)
            .field("master_key", &self.master_key)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads defaults, then `file` if given, then the `PUSH_*` environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Io {
                    key: "--config",
                    path: file.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("PUSH_").split("__"));
        Self::from_figment(figment)
    }

    /// Builds a configuration from explicit TOML layered over the defaults (for tests and tools).
    pub fn from_toml(overrides: &str) -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Toml::string(DEFAULT_CONFIG)).merge(Toml::string(overrides)),
        )
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
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
        for (key, value) in [
            ("apns_production_url", &raw.apns_production_url),
            ("apns_sandbox_url", &raw.apns_sandbox_url),
            ("fcm_url", &raw.fcm_url),
        ] {
            let ok = url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
            if !ok {
                return Err(invalid(key, format!("`{value}` is not an http(s) URL")));
            }
        }
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

        let mut created_files = Vec::new();
        let needs_files = raw.admin_token.is_empty() || raw.master_key.is_empty();
        if needs_files {
            ensure_private_dir(&raw.data_dir)?;
        }
        let admin_token = if !raw.admin_token.is_empty() {
            raw.admin_token.clone()
        } else {
            let path = file_or_default(&raw.admin_token_file, &raw.data_dir, "admin.token");
            read_or_create_secret("admin_token_file", &path, &mut created_files, || {
                crate::ids::random_token(32)
            })?
        };
        if admin_token.len() < 16 {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        let master_key_b64 = if !raw.master_key.is_empty() {
            raw.master_key.clone()
        } else {
            let path = file_or_default(&raw.master_key_file, &raw.data_dir, "master.key");
            read_or_create_secret("master_key_file", &path, &mut created_files, || {
                let key: [u8; 32] = rand::random();
                base64::engine::general_purpose::STANDARD.encode(key)
            })?
        };
        let master_key = base64::engine::general_purpose::STANDARD
            .decode(master_key_b64.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| invalid("master_key", "must be 32 bytes, base64-encoded"))?;

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
                apns_production_url: raw.apns_production_url.trim_end_matches('/').to_owned(),
                apns_sandbox_url: raw.apns_sandbox_url.trim_end_matches('/').to_owned(),
                fcm_url: raw.fcm_url.trim_end_matches('/').to_owned(),
                ca_pem,
                apns_connections: raw.apns_connections,
                fetch: fetch.clone(),
                timeout: std::time::Duration::from_secs(raw.provider_timeout_seconds),
                circuit_open: std::time::Duration::from_secs(raw.circuit_open_seconds),
                invalidation_guard_min: raw.invalidation_guard_min,
            },
            admin_token: Secret::new(admin_token),
            master_key: Secret::new(master_key),
            max_body_bytes: raw.max_body_bytes,
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
            trusted_proxies,
            fetch,
            max_registrations_per_key: raw.max_registrations_per_key,
            header_read_timeout: std::time::Duration::from_secs(raw.header_read_timeout_seconds),
            max_connections: raw.max_connections,
            max_streams_per_key: raw.max_streams_per_key,
            admin_listen,
            operator_api_on_admin_listen: raw.operator_api_on_admin_listen,
            admin_tls: raw.admin_tls,
            max_unattested_registrations_per_app: raw.max_unattested_registrations_per_app,
        })
    }
}

fn file_or_default(configured: &str, data_dir: &Path, name: &str) -> PathBuf {
    if configured.is_empty() {
        data_dir.join(name)
    } else {
        PathBuf::from(configured)
    }
}

fn ensure_private_dir(dir: &Path) -> Result<(), ConfigError> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| ConfigError::Io {
        key: "data_dir",
        path: dir.to_owned(),
        source,
    })
}

/// Reads a secret file, or creates it (mode 0600) with `generate()` when it does not exist.
fn read_or_create_secret(
    key: &'static str,
    path: &Path,
    created: &mut Vec<PathBuf>,
    generate: impl FnOnce() -> String,
) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        key,
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(value) => Ok(value.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = generate();
            write_private_file(path, &value).map_err(io)?;
            created.push(path.to_owned());
            Ok(value)
        }
        Err(e) => Err(io(e)),
    }
}

fn write_private_file(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = format!("data_dir = {:?}\n", dir.path().display().to_string());
        let config = Config::from_toml(&base).expect("defaults are valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(config.created_files.len(), 2);

        let err = Config::from_toml(&format!("{base}listen = \"nowhere\"")).unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
        let err = Config::from_toml(&format!("{base}database_url = \"mysql://x\"")).unwrap_err();
        assert!(err.to_string().contains("`database_url`"), "{err}");
        let err = Config::from_toml(&format!("{base}master_key = \"c2hvcnQ=\"")).unwrap_err();
        assert!(err.to_string().contains("`master_key`"), "{err}");
        // (key, value) → the error names the key.
        let cases = [
            ("listen = \"0.0.0.0:8080\"", "`public_url`"),
            ("listen = \"[::]:8080\"", "`public_url`"),
            ("trusted_proxies = \"10.0.0.0/33\"", "`trusted_proxies`"),
            ("admin_listen = \"127.0.0.1:8080\"", "`admin_listen`"),
            (
                "operator_api_on_admin_listen = true",
                "`operator_api_on_admin_listen`",
            ),
            ("fcm_token_uri_allow = \" , \"", "`fcm_token_uri_allow`"),
            (
                "header_read_timeout_seconds = 0",
                "`header_read_timeout_seconds`",
            ),
            ("max_connections = 0", "`max_connections`"),
            (
                "admin_listen = \"127.0.0.1:9090\"\nadmin_tls = true",
                "`admin_tls`",
            ),
        ];
        for (line, key) in cases {
            let err = Config::from_toml(&format!("{base}{line}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{line}: {err}");
        }
        // A wildcard address with the URL clients use is fine.
        Config::from_toml(&format!(
            "{base}listen = \"0.0.0.0:8080\"\npublic_url = \"https://push.example.com\"\n"
        ))
        .expect("valid");
    }

    #[test]
    fn generated_secret_files_are_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = format!("data_dir = {:?}\n", dir.path().display().to_string());
        let first = Config::from_toml(&base).expect("valid");
        let second = Config::from_toml(&base).expect("valid");
        assert!(second.created_files.is_empty());
        assert_eq!(first.admin_token.expose(), second.admin_token.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin.token"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let debug = format!("{first:?}");
        assert!(!debug.contains(first.admin_token.expose().as_str()));
    }
}
