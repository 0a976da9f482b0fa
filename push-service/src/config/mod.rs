//! Layered configuration: embedded defaults, optional TOML file, `PUSH_*` environment.
//! The settings and loading are here; `raw.rs` holds the keys as read and
//! their validation, `secrets.rs` the generated secret files.

mod raw;
pub use secrets::decode_master_key;
mod secrets;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;

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

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Where and how the APNs and FCM clients connect.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Provider addresses, parsed when the settings are read; a request adds
    /// its path (`providers::http::with_path`).
    pub apns_production_url: url::Url,
    pub apns_sandbox_url: url::Url,
    pub fcm_url: url::Url,
    /// Extra trusted root (PEM), e.g. the simulators' CA.
    pub ca_pem: Option<String>,
    /// The egress proxy provider connections tunnel through (`provider_proxy`,
    /// else `HTTPS_PROXY`).
    pub proxy: Option<crate::egress::EgressProxy>,
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
    /// The key being rotated away from: opens what it sealed, and gets a copy of
    /// every new seal, until the rotation is finished (`docs/OPERATIONS.md`).
    pub master_key_previous: Option<Secret<[u8; 32]>>,
    /// A second valid admin token, for the time of a token switch.
    pub admin_token_previous: Option<Secret<String>>,
    pub max_body_bytes: usize,
    /// Largest sealed content of one notification (0: content refused).
    pub max_content_bytes: usize,
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
    /// Notifications (with their deliveries) older than this, whose TTL has
    /// passed, are deleted by the sweep (0: kept forever).
    pub notification_retention: std::time::Duration,
    /// Notifications deleted per retention statement.
    pub retention_batch: u32,
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
    /// The runtime's worker threads (0: one per CPU the node may use).
    pub worker_threads: usize,
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

impl Config {
    /// The master key ring: the current key, and the previous one during a rotation.
    pub fn sealer(&self) -> crate::crypto::Sealer {
        let previous: Vec<[u8; 32]> = self
            .master_key_previous
            .iter()
            .map(|key| *key.expose())
            .collect();
        crate::crypto::Sealer::ring(self.master_key.expose(), &previous)
    }

    /// Whether `token` is a valid admin token (the current one, or the previous
    /// one during a switch), compared in constant time.
    pub fn admin_token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let current = token.as_bytes().ct_eq(self.admin_token.expose().as_bytes());
        let previous = match &self.admin_token_previous {
            Some(previous) => token.as_bytes().ct_eq(previous.expose().as_bytes()),
            None => subtle::Choice::from(0),
        };
        bool::from(current | previous)
    }
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
            .field("master_key_previous", &self.master_key_previous)
            .field("admin_token_previous", &self.admin_token_previous)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_content_bytes", &self.max_content_bytes)
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
        let raw: raw::RawConfig = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        raw.validate()
    }
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
            ("worker_threads = 1025", "`worker_threads`"),
            (
                "admin_listen = \"127.0.0.1:9090\"\nadmin_tls = true",
                "`admin_tls`",
            ),
            (
                "master_key_previous = \"c2hvcnQ=\"",
                "`master_key_previous`",
            ),
            (
                "master_key_previous_file = \"/nonexistent/old.key\"",
                "`master_key_previous_file`",
            ),
            ("admin_token_previous = \"short\"", "`admin_token_previous`"),
            ("retention_batch = 0", "`retention_batch`"),
            ("retention_batch = 10001", "`retention_batch`"),
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

    #[test]
    fn a_switch_accepts_both_admin_tokens_and_both_master_keys() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
        let config = Config::from_toml(&format!(
            "data_dir = {:?}\nadmin_token = \"new-admin-token-0123456789\"\n\
             admin_token_previous = \"old-admin-token-0123456789\"\n\
             master_key = {:?}\nmaster_key_previous = {:?}\n",
            dir.path().display().to_string(),
            b64(&new),
            b64(&old)
        ))
        .expect("valid");
        // (token, accepted?)
        for (token, accepted) in [
            ("new-admin-token-0123456789", true),
            ("old-admin-token-0123456789", true),
            ("new-admin-token-012345678", false),
            ("", false),
        ] {
            assert_eq!(config.admin_token_matches(token), accepted, "{token:?}");
        }
        let sealed = config.sealer().seal(b"secret", "a/apns");
        for key in [old, new] {
            let alone = crate::crypto::Sealer::new(&key);
            assert_eq!(alone.open(&sealed, "a/apns").expect("opens"), b"secret");
        }
        let debug = format!("{config:?}");
        assert!(!debug.contains("old-admin-token"), "{debug}");
        assert!(!debug.contains(&b64(&old)), "{debug}");
    }
}
