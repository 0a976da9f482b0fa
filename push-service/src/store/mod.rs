//! Persistence: one trait per aggregate (apps, notifiers, registrations,
//! notifications and their deliveries, direct-channel events, audit, the
//! replay cache), implemented once in plain sqlx for SQLite and PostgreSQL
//! (`sql/`), with the hot writes group-committed (`batch.rs`).

mod at_once;
mod backend;
pub mod batch;
mod chunk_targets;
pub mod group;
mod held;
mod inbox;
mod partitions;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod sqlite_at_once;

use std::sync::Arc;

use async_trait::async_trait;

use crate::delivery::{DeliveryState, ProviderKind};

pub use backend::{keyed_join, placeholders, row_placeholders, skip_locked, Column, SqlBackend};
pub use inbox::InboxStore;
pub use postgres::PgStore;
pub use rows::{
    Acceptance, App, Attestation, AuditEntry, AuditFilter, Build, Built, ChunkClaim, ChunkDone,
    CredentialRecord, DeliveryRow, DeliveryUpdate, DirectEvent, DirectHold, InboxContent,
    InboxEntry, InboxItem, NotificationRow, Notifier, PendingDelivery, Registration,
    RegistrationState, TaskRow,
};
pub use sql::SqlStore;
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

/// The whole store: every aggregate, plus what concerns the database itself.
#[async_trait]
pub trait Store:
    AppStore
    + NotifierStore
    + RegistrationStore
    + NotificationStore
    + FanoutStore
    + DirectStore
    + InboxStore
    + AuditStore
    + RetentionStore
    + ReplayStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
}

/// Apps and what an operator sets on one: credentials, attestation, limits.
#[async_trait]
pub trait AppStore: Send + Sync {
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
        provider: ProviderKind,
    ) -> Result<Option<CredentialRecord>, StoreError>;
    async fn delete_credential(
        &self,
        app_id: &str,
        provider: ProviderKind,
    ) -> Result<bool, StoreError>;
    /// Records (or clears, with `None`) the last provider error of a credential.
    async fn set_credential_error(
        &self,
        app_id: &str,
        provider: ProviderKind,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Re-seals every stored credential in one transaction (a master key
    /// rotation): `reseal(app, provider, sealed)` gives the new blob, `None` to
    /// leave it, or an error that rolls the whole change back. Metadata and
    /// `updated_at` stay: the credential is the same. Returns how many changed.
    async fn reseal_credentials(&self, reseal: &crate::store::Reseal) -> Result<usize, StoreError>;

    async fn put_attestation(&self, attestation: &Attestation) -> Result<(), StoreError>;
    async fn get_attestation(&self, app_id: &str) -> Result<Option<Attestation>, StoreError>;

    /// The operator's rate limits of an app (JSON), if set.
    async fn get_app_limits(&self, app_id: &str) -> Result<Option<String>, StoreError>;
    /// Sets (or, with `None`, clears) an app's rate limits.
    async fn set_app_limits(
        &self,
        app_id: &str,
        limits: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError>;
}

/// The auth servers allowed to notify an app.
#[async_trait]
pub trait NotifierStore: Send + Sync {
    async fn create_notifier(&self, notifier: &Notifier) -> Result<(), StoreError>;
    async fn list_notifiers(&self, app_id: &str) -> Result<Vec<Notifier>, StoreError>;
    async fn get_notifier(&self, app_id: &str, id: &str) -> Result<Option<Notifier>, StoreError>;
    async fn delete_notifier(&self, app_id: &str, id: &str) -> Result<bool, StoreError>;
}

/// Device registrations and their aliases.
#[async_trait]
pub trait RegistrationStore: Send + Sync {
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
    /// The given registrations that exist: app, status, and what a first
    /// attempt needs (provider, token, environment).
    async fn registration_states(
        &self,
        ids: &[String],
    ) -> Result<Vec<RegistrationState>, StoreError>;
    /// Sets a new token (reactivating the registration), moving it away from any
    /// other active registration that held it; returns the ids of those.
    async fn rotate_registration_token(
        &self,
        id: &str,
        token: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Sets the public key content is sealed to (a JWK).
    async fn set_encryption_key(&self, id: &str, jwk: &str, now: i64) -> Result<(), StoreError>;
    /// Marks a registration invalid with a reason (token hygiene).
    async fn invalidate_registration(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError>;
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
}

/// Notifications and their deliveries: acceptance, fan-out, attempts, the sweep.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Stores a notification and a queued delivery per registration, atomically.
    /// An idempotency-key collision is `StoreError::Conflict`.
    /// `audit`, when given, is written in the same transaction.
    async fn insert_notification(
        &self,
        notification: &NotificationRow,
        registrations: &[String],
        redrive_at: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError>;
    /// Like `insert_notification` for a notification whose rows depend on
    /// its registrations: they are looked up and the rows built
    /// ([`Acceptance::build`]) in the transaction that inserts them.
    async fn accept_notification(&self, acceptance: Acceptance) -> Result<(), StoreError>;
    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRow>, StoreError>;
    async fn find_idempotent(
        &self,
        app_id: &str,
        notifier_id: &str,
        key: &str,
    ) -> Result<Option<NotificationRow>, StoreError>;
    /// Active registrations a fan-out reaches: those with one of `aliases`, or all of the app.
    async fn count_targets(
        &self,
        app_id: &str,
        aliases: Option<&[String]>,
    ) -> Result<i64, StoreError>;
    /// Marks a fan-out as fully expanded.
    async fn finish_expansion(&self, id: &str, now: i64) -> Result<(), StoreError>;
    /// The notification and its queued deliveries among `registrations`, in one
    /// read; `None` when none is queued (nothing to do).
    async fn task_deliveries(
        &self,
        notification_id: &str,
        registrations: &[String],
    ) -> Result<Option<(NotificationRow, Vec<PendingDelivery>)>, StoreError>;
    /// Takes a queued delivery for one attempt: applied only if it is still queued
    /// with the attempt count the task read and (when given) the re-drive time
    /// `due` the task was made for, so of two tasks holding the same delivery (a
    /// re-drive racing the original) exactly one sends. Counts the attempt and
    /// moves the re-drive time to `lease`. Returns whether it was taken.
    async fn claim_delivery(&self, claim: batch::DeliveryClaim) -> Result<bool, StoreError>;
    /// Records the outcome of one attempt (only while the delivery is still queued).
    async fn update_delivery(&self, update: DeliveryUpdate) -> Result<(), StoreError>;
    /// Claims up to `limit` queued deliveries overdue at `now` by moving their
    /// re-drive time to `redrive_at`; each is claimed by one node only.
    async fn claim_overdue(
        &self,
        now: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Brings forward up to `limit` deliveries of `app_id` through `provider` that
    /// wait for a later retry (re-drive time after `waiting_after`): their re-drive
    /// time becomes `redrive_at`, and the caller queues them now. `waiting_after`
    /// lies beyond every lease a worker could have taken (a lease ends
    /// `redrive_after` after its claim), so a delivery in flight is never taken.
    async fn wake_waiting(
        &self,
        app_id: &str,
        provider: ProviderKind,
        waiting_after: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Marks queued deliveries whose notification expired as `expired`; returns how many.
    async fn expire_overdue(&self, now: i64) -> Result<u64, StoreError>;
    /// Fan-outs whose expansion stopped before `before` (a node died): claims them until `redrive_at`.
    async fn claim_stalled_expansions(
        &self,
        before: i64,
        redrive_at: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Count of deliveries by state (states this node does not know left out).
    async fn delivery_counts(
        &self,
        notification_id: &str,
    ) -> Result<Vec<(DeliveryState, i64)>, StoreError>;
    /// [`Self::delivery_counts`] and [`Self::delivery_page`] read in one
    /// snapshot, so the counts agree with the states of the page's rows.
    async fn delivery_status(
        &self,
        notification_id: &str,
        after: &str,
        limit: i64,
        skip_sent: bool,
    ) -> Result<(Vec<(DeliveryState, i64)>, Vec<DeliveryRow>), StoreError>;
    /// Deliveries of a notification by registration id (keyset page), optionally without `sent` ones.
    async fn delivery_page(
        &self,
        notification_id: &str,
        after: &str,
        limit: i64,
        skip_sent: bool,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Queued deliveries per app: (app, queued, of those waiting — for a retry
    /// or an open circuit, re-drive time after `waiting_after`), and the oldest
    /// queued delivery's last update.
    async fn queue_stats(
        &self,
        waiting_after: i64,
    ) -> Result<(Vec<(String, i64, i64)>, Option<i64>), StoreError>;
}

/// Fan-outs (alias and whole-app sends) in chunks of registrations: a row per
/// chunk, and a delivery row only for a target whose first attempt did not
/// end in `sent` (a failure, a retry, a hold on the direct channel).
#[async_trait]
pub trait FanoutStore: Send + Sync {
    /// Expands the next page of a fan-out after its cursor: up to `limit`
    /// active registrations saved as chunks of `per_chunk`, queued until
    /// `redrive_at`, and the cursor moved, in one transaction. Returns the chunks.
    async fn expand_page(
        &self,
        notification: &NotificationRow,
        aliases: Option<&[String]>,
        limit: i64,
        per_chunk: usize,
        redrive_at: i64,
    ) -> Result<Vec<Vec<String>>, StoreError>;
    /// Takes a queued chunk for one run (group-committed): applied only while
    /// it is queued and not leased, so of two copies of its task one runs it
    /// at a time. Returns whether it was taken.
    async fn claim_chunk(&self, claim: ChunkClaim) -> Result<bool, StoreError>;
    /// What a first attempt of `notification` needs for each of
    /// `registrations` that has no delivery row yet (an earlier run's
    /// failures and retries are left out), in their order; a deleted
    /// registration comes without provider and status.
    async fn chunk_deliveries(
        &self,
        notification: &NotificationRow,
        registrations: &[String],
    ) -> Result<Vec<PendingDelivery>, StoreError>;
    /// A target's first outcome other than `sent`, as its delivery row
    /// (group-committed; nothing when the row exists already).
    async fn record_first_outcome(&self, update: DeliveryUpdate) -> Result<(), StoreError>;
    /// Closes a chunk's run with its count of sent (group-committed).
    async fn finish_chunk(&self, done: ChunkDone) -> Result<(), StoreError>;
    /// Claims up to `limit` chunks still queued at `now` after their re-drive
    /// time, moving it to `redrive_at`: `(notification, registrations)`.
    async fn claim_overdue_chunks(
        &self,
        now: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError>;
}

/// Notifications held for devices on the direct channel, and each device's cursor.
#[async_trait]
pub trait DirectStore: Send + Sync {
    /// Holds a notification on a direct channel (group-committed): its event's
    /// sequence number, or `None` when it was already there.
    async fn insert_direct_event(&self, hold: DirectHold) -> Result<Option<i64>, StoreError>;
    /// Unexpired events of a registration after `after_seq`, oldest first.
    async fn direct_events_after(
        &self,
        registration_id: &str,
        after_seq: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<DirectEvent>, StoreError>;
    /// Streams wrote these `(registration, notification, seq)` events
    /// (group-committed): their deliveries become `sent`, and each device's
    /// cursor (where a stream without `Last-Event-ID` starts) moves up to its
    /// highest.
    async fn streamed(&self, events: &[(String, String, i64)], now: i64) -> Result<(), StoreError>;
    async fn direct_cursor(&self, registration_id: &str) -> Result<i64, StoreError>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends to the audit log (group-committed with other hot writes).
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
}

/// How [`AppStore::reseal_credentials`] turns `(app, provider, sealed)` into a new blob.
pub type Reseal = dyn for<'a> Fn(&'a str, &'a str, &'a [u8]) -> Result<Option<Vec<u8>>, crate::crypto::OpenError>
    + Send
    + Sync;

/// What the store keeps, and how long: deletions past retention, in bounded
/// batches (each its own short statement), and the figures that show whether
/// they keep up. Each `delete_*` removes at most `limit` rows and returns how many.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Notifications created before `before` whose TTL ended before `now`, with
    /// their deliveries and fan-out chunks (and so their idempotency keys).
    async fn delete_old_notifications(
        &self,
        before: i64,
        now: i64,
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// Direct-channel events held past their TTL.
    async fn delete_expired_direct_events(&self, now: i64, limit: u32) -> Result<u64, StoreError>;
    /// Audit entries older than `at`.
    async fn delete_audit_before(&self, at: i64, limit: u32) -> Result<u64, StoreError>;
    /// The oldest notification kept (creation time, ms), and of those the
    /// retention may delete (created before `before`, TTL ended before `now`)
    /// the oldest one's creation time and end of TTL.
    async fn retention_stats(&self, before: i64, now: i64) -> Result<RetentionStats, StoreError>;
    /// Bytes on disk: per table on PostgreSQL (indexes and TOAST included), the
    /// whole file (`all`) and its free pages (`free`) on SQLite.
    async fn storage_bytes(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Gives free pages back to the file system (SQLite's incremental vacuum, at
    /// most `pages` of them); PostgreSQL's autovacuum does this on its own.
    async fn compact(&self, pages: u32) -> Result<(), StoreError>;
    /// Idempotency keys of notifications created before `before`.
    async fn delete_old_keys(&self, before: i64, limit: u32) -> Result<u64, StoreError>;
    /// Whether notifications are partitioned by day (PostgreSQL): a day goes
    /// whole, by [`RetentionStore::maintain_partitions`], not in batches.
    fn partitioned(&self) -> bool;
    /// Makes the partitions of the days ahead and drops those whose day ended
    /// at or before `drop_before` (`None`: drops nothing). SQLite has none.
    async fn maintain_partitions(
        &self,
        now: i64,
        drop_before: Option<i64>,
    ) -> Result<PartitionChange, StoreError>;
}

/// See [`RetentionStore::maintain_partitions`]: partition names made and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionChange {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Every partition after the change.
    pub present: Vec<String>,
}

/// See [`RetentionStore::retention_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub oldest_created_at: Option<i64>,
    /// `(created_at, expires_at)` of the oldest notification due for deletion.
    pub oldest_due: Option<(i64, i64)>,
}

/// Keys seen once (token ids, DPoP proofs) until they expire.
#[async_trait]
pub trait ReplayStore: Send + Sync {
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
