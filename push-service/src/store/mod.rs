//! Persistence behind one trait, with a SQLite and a PostgreSQL implementation.

mod dispatch;
pub mod group;
mod postgres;
mod sql;
mod sql_dispatch;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use dispatch::{
    placeholders, row_placeholders, DeliveryRow, DeliveryUpdate, DirectEvent, DispatchStore,
    NotificationRow, PendingDelivery, TaskRow,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Store failures, by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Other(anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error::*;
        match err {
            PoolTimedOut | PoolClosed | Io(_) | Tls(_) | Protocol(_) | WorkerCrashed => {
                StoreError::Unavailable(err)
            }
            Database(ref db) if db.is_unique_violation() => {
                StoreError::Conflict(format!("already exists ({})", db.message()))
            }
            Database(ref db) if transient(db.as_ref()) => StoreError::Unavailable(err),
            other => StoreError::Other(other.into()),
        }
    }
}

/// Database errors that say "not now" rather than "never": the server is shutting
/// down, starting, out of connections or resources, or (SQLite) busy or locked.
fn transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else { return false };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Primary result codes SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended forms.
        return code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
    }
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, disk)
        || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

/// An app: the unit of isolation for credentials, notifiers and registrations.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct App {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A provider credential: public metadata in clear, the secret part sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct CredentialRecord {
    pub app_id: String,
    /// `apns` or `fcm`.
    pub provider: String,
    /// JSON metadata shown to operators (key id, fingerprint, expiry); never secret.
    pub metadata: String,
    /// AES-256-GCM blob of the secret material (see `crypto::Sealer`).
    pub sealed: Vec<u8>,
    /// Certificate expiry (ms), when the credential has one.
    pub expires_at: Option<i64>,
    pub updated_at: i64,
    /// Last provider error (the circuit opened), if the credential is failing.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

impl std::fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRecord")
            .field("app_id", &self.app_id)
            .field("provider", &self.provider)
            .field("metadata", &self.metadata)
            .field("sealed", &"***")
            .finish()
    }
}

/// An auth server allowed to call the notify API of one app.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notifier {
    pub id: String,
    pub app_id: String,
    pub name: String,
    /// Space-separated scopes, OAuth style.
    pub scopes: String,
    /// Static JWKS (JSON), when the keys were given inline.
    pub jwks: Option<String>,
    /// JWKS URL, when the keys are fetched.
    pub jwks_url: Option<String>,
    pub created_at: i64,
    /// Client-certificate binding (JSON, see `auth::notifier::CertBinding`), if any.
    pub client_cert: Option<String>,
}

/// One audit-log entry: who (`operator` or `notifier:<id>`), what, when, from where.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    /// Assigned by the store (ignored on insert).
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    /// E.g. `app.create`, `credential.put`, `notification.create`.
    pub action: String,
    pub app_id: Option<String>,
    /// The id of what was changed.
    pub target: Option<String>,
    /// The caller's address.
    pub source: Option<String>,
    /// JSON with what else matters (never secrets).
    pub details: Option<String>,
}

/// Which audit entries to list (keyset by `seq`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after: i64,
    pub app_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
}

/// Per-app client attestation settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attestation {
    pub app_id: String,
    /// JWKS (JSON) of the implementer's attestation keys.
    pub jwks: String,
    pub required: bool,
    pub updated_at: i64,
}

/// A device's registration of one push token (or of a direct channel).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Registration {
    pub id: String,
    pub app_id: String,
    /// `apns`, `fcm` or `direct`.
    pub provider: String,
    /// Provider token; none for `direct`.
    pub token: Option<String>,
    /// APNs environment (`production` or `sandbox`).
    pub environment: Option<String>,
    pub platform: String,
    /// RFC 7638 thumbprint of the device key that owns this registration.
    pub key_thumbprint: String,
    /// Public JWK (JSON) the device wants payloads encrypted to, if any.
    pub encryption_jwk: Option<String>,
    /// `active` or `invalid`.
    pub status: String,
    pub invalid_reason: Option<String>,
    pub invalidated_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// It came with a verified client attestation (read only where counted).
    #[sqlx(default)]
    pub attested: bool,
}

/// The persistence operations the service needs. One implementation per backend.
/// Ties a store type to its sqlx database, for code shared between backends.
pub trait Backend {
    type Db: sqlx::Database;
    /// Starts a transaction that will write. SQLite: `BEGIN IMMEDIATE`, so the
    /// write lock is taken (waiting per busy_timeout) before the first read; a
    /// deferred transaction that reads and then writes fails at once with
    /// SQLITE_BUSY when another writer committed in between.
    const BEGIN_WRITE: &'static str;
}

#[async_trait]
pub trait Store: DispatchStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    async fn create_app(&self, app: &App) -> Result<(), StoreError>;
    /// Apps ordered by id, after `after` (keyset pagination).
    async fn list_apps(&self, after: Option<&str>, limit: i64) -> Result<Vec<App>, StoreError>;
    async fn get_app(&self, id: &str) -> Result<Option<App>, StoreError>;
    /// Deletes an app and everything it owns; false when it did not exist.
    async fn delete_app(&self, id: &str) -> Result<bool, StoreError>;

    async fn put_credential(&self, record: &CredentialRecord) -> Result<(), StoreError>;
    async fn get_credential(
        &self,
        app_id: &str,
        provider: &str,
    ) -> Result<Option<CredentialRecord>, StoreError>;
    async fn delete_credential(&self, app_id: &str, provider: &str) -> Result<bool, StoreError>;
    /// Records (or clears, with `None`) the last provider error of a credential.
    async fn set_credential_error(
        &self,
        app_id: &str,
        provider: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError>;

    async fn create_notifier(&self, notifier: &Notifier) -> Result<(), StoreError>;
    async fn list_notifiers(&self, app_id: &str) -> Result<Vec<Notifier>, StoreError>;
    async fn get_notifier(&self, app_id: &str, id: &str) -> Result<Option<Notifier>, StoreError>;
    async fn delete_notifier(&self, app_id: &str, id: &str) -> Result<bool, StoreError>;

    async fn put_attestation(&self, attestation: &Attestation) -> Result<(), StoreError>;
    async fn get_attestation(&self, app_id: &str) -> Result<Option<Attestation>, StoreError>;

    /// Active registrations bound to one device key (all apps).
    async fn count_registrations_by_key(&self, key_thumbprint: &str) -> Result<i64, StoreError>;
    /// Active registrations of an app made without a client attestation.
    async fn count_unattested_registrations(&self, app_id: &str) -> Result<i64, StoreError>;

    /// Inserts a registration. An active registration of the same app, provider and
    /// token is marked invalid (`replaced`) in the same transaction; its id is returned.
    async fn create_registration(
        &self,
        registration: &Registration,
    ) -> Result<Vec<String>, StoreError>;
    async fn get_registration(&self, id: &str) -> Result<Option<Registration>, StoreError>;
    /// Sets a new token (reactivating the registration), moving it away from any
    /// other active registration that held it; returns the ids of those.
    async fn rotate_registration_token(
        &self,
        id: &str,
        token: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes a registration and its aliases; false when it did not exist.
    async fn delete_registration(&self, id: &str) -> Result<bool, StoreError>;
    /// Replaces the aliases of a registration.
    async fn set_aliases(
        &self,
        app_id: &str,
        id: &str,
        aliases: &[String],
    ) -> Result<(), StoreError>;
    async fn list_aliases(&self, id: &str) -> Result<Vec<String>, StoreError>;

    /// The operator's rate limits of an app (JSON), if set.
    async fn get_app_limits(&self, app_id: &str) -> Result<Option<String>, StoreError>;
    /// Sets (or, with `None`, clears) an app's rate limits.
    async fn set_app_limits(
        &self,
        app_id: &str,
        limits: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Appends to the audit log (group-committed with other hot writes).
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    /// Drops audit entries older than `at` (retention); returns how many.
    async fn delete_audit_before(&self, at: i64) -> Result<u64, StoreError>;

    /// Records `key` until `expires_at`; true the first time, false on any reuse before then.
    async fn remember_once(&self, key: &str, expires_at: i64, now: i64)
        -> Result<bool, StoreError>;
}

/// Connects to the store named by `database_url` (`sqlite:` or `postgres://`).
/// `sqlite_full_sync` picks SQLite's `synchronous` (FULL or NORMAL); PostgreSQL ignores it.
pub async fn connect(
    database_url: &str,
    max_connections: u32,
    sqlite_full_sync: bool,
    postgres_ca_file: Option<&std::path::Path>,
) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(database_url, max_connections, sqlite_full_sync).await?,
        ))
    } else {
        Ok(Arc::new(
            PgStore::connect(database_url, max_connections, postgres_ca_file).await?,
        ))
    }
}
