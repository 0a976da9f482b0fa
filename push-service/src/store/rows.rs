//! What the store reads and writes, row by row: the only place where states
//! and kinds are the strings the schema holds.

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
    /// Tokens may be reused until their `exp` (at most an hour) instead of once.
    pub token_reuse: bool,
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

/// A notification as stored: the request, its target spec and its fan-out progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub app_id: String,
    pub notifier_id: String,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request body when it came with an idempotency key, to
    /// tell a retry from a different request; empty without a key.
    pub request_hash: String,
    /// Target spec (JSON): `{"registrations": [...]}`, `{"aliases": [...]}` or `{"all": true}`.
    pub targets: String,
    /// Content (JSON) as delivered to providers.
    pub content: String,
    pub expires_at: i64,
    /// `expanding` (fan-out not finished) or `dispatching`.
    pub state: String,
    pub created_at: i64,
    /// The 202 body, answered again for an idempotent retry.
    pub response: Option<String>,
    /// Last registration id expanded (keyset cursor of the fan-out).
    pub expand_cursor: Option<String>,
    pub updated_at: i64,
}

impl NotificationRow {
    /// The fan-out phase its `state` names (`None`: a name this node does not know).
    pub fn phase(&self) -> Option<crate::delivery::NotificationPhase> {
        crate::delivery::NotificationPhase::parse(&self.state)
    }

    /// Still finding its registrations.
    pub fn is_expanding(&self) -> bool {
        self.phase() == Some(crate::delivery::NotificationPhase::Expanding)
    }
}

/// A queued delivery with what the dispatcher needs of its registration.
#[derive(Clone, sqlx::FromRow)]
pub struct PendingDelivery {
    pub registration_id: String,
    pub attempts: i32,
    pub provider: Option<String>,
    pub token: Option<String>,
    pub environment: Option<String>,
    pub registration_status: Option<String>,
    /// The content sealed to this registration, when it fits in a provider
    /// payload: set by acceptance for the first attempt, never read from the
    /// store (a later attempt sends the inbox id alone).
    #[sqlx(skip)]
    pub sealed: Option<std::sync::Arc<str>>,
}

/// Without the device token: a secret.
impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDelivery")
            .field("registration_id", &self.registration_id)
            .field("attempts", &self.attempts)
            .field("provider", &self.provider)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("environment", &self.environment)
            .field("registration_status", &self.registration_status)
            .field("sealed", &self.sealed.as_ref().map(|s| s.len()))
            .finish()
    }
}

/// A registration as acceptance looks it up: whose it is, whether it is
/// active, and what a first attempt to it needs.
#[derive(Clone, sqlx::FromRow)]
pub struct RegistrationState {
    pub id: String,
    pub app_id: String,
    pub status: String,
    pub provider: Option<String>,
    pub token: Option<String>,
    pub environment: Option<String>,
}

impl RegistrationState {
    pub fn active(&self) -> bool {
        self.status == "active"
    }

    /// A queued delivery to it, not yet attempted.
    pub fn pending(&self) -> PendingDelivery {
        PendingDelivery {
            registration_id: self.id.clone(),
            attempts: 0,
            provider: self.provider.clone(),
            token: self.token.clone(),
            environment: self.environment.clone(),
            registration_status: Some(self.status.clone()),
            sealed: None,
        }
    }
}

/// A row of the dispatcher's one read per task: the notification beside each pending delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    #[sqlx(flatten)]
    pub notification: NotificationRow,
    #[sqlx(flatten)]
    pub delivery: PendingDelivery,
}

/// One target's state, for the status API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub registration_id: String,
    pub state: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub updated_at: i64,
}

/// A notification held on a device's direct channel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DirectEvent {
    pub seq: i64,
    pub notification_id: String,
    pub payload: String,
    pub created_at: i64,
}

/// A notification to hold for a device on the direct channel until it
/// expires (or its stream writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectHold {
    pub registration_id: String,
    pub notification_id: String,
    /// The SSE event's JSON.
    pub payload: String,
    pub expires_at: i64,
    /// The attempt this hold is (its delivery row becomes `held` with it).
    pub attempts: i32,
    pub now: i64,
}

/// What one attempt leaves on its delivery: the state the state machine chose
/// (crate::delivery), the reason, the attempt count and, while queued, when
/// the sweep re-drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub notification_id: String,
    pub registration_id: String,
    pub state: crate::delivery::DeliveryState,
    pub reason: Option<String>,
    pub attempts: i32,
    /// Kept as it is when `None`.
    pub next_attempt_at: Option<i64>,
    pub now: i64,
}

/// A queued delivery taken for one attempt: applied when it was still queued
/// with `attempts` attempts (and, when given, re-drive time `due`); it then
/// has one more attempt and re-drives at `lease`.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    pub notification_id: String,
    pub registration_id: String,
    pub attempts: i32,
    pub due: Option<i64>,
    pub lease: i64,
    /// Taken only while the registration is still active with this token: the
    /// claim of a delivery whose registration was read at acceptance, not now.
    pub unchanged: Option<RegistrationGuard>,
}

/// The registration a carried delivery was made for, as acceptance read it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationGuard {
    pub token: Option<String>,
}

/// Without the token a guard holds.
impl std::fmt::Debug for DeliveryClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryClaim")
            .field("notification_id", &self.notification_id)
            .field("registration_id", &self.registration_id)
            .field("attempts", &self.attempts)
            .field("due", &self.due)
            .field("lease", &self.lease)
            .field("guarded", &self.unchanged.is_some())
            .finish()
    }
}

/// A queued fan-out chunk taken for one run: applied when it is still queued
/// and no lease on it runs at `now`; it is then leased (and re-driven by the
/// sweep) until `lease`. Copies of its task that wait in a slow queue are
/// harmless: the first to come runs it, the others find it done or leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkClaim {
    pub notification_id: String,
    /// The chunk's key: its first registration.
    pub first_registration: String,
    pub now: i64,
    pub lease: i64,
}

/// A chunk's run is over: `sent` of its registrations were sent, every other
/// one has its delivery row. Applied only by the run holding the chunk's
/// latest claim (`lease`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDone {
    pub notification_id: String,
    pub first_registration: String,
    pub lease: i64,
    pub sent: i32,
    pub now: i64,
}

/// A notification row's columns as inserted; [`bind_notification`] binds
/// them in this order.
pub(in crate::store) const NOTIFICATION_COLUMNS: &str = "id, app_id, notifier_id, \
    idempotency_key, request_hash, targets, content, expires_at, state, created_at, response, \
    expand_cursor, updated_at";

/// A query returning rows of `O`, with its arguments.
type QueryOf<'q, DB, O> = sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>;

/// Binds a notification row's [`NOTIFICATION_COLUMNS`].
pub(in crate::store) fn bind_notification<'q, DB, O>(
    query: QueryOf<'q, DB, O>,
    n: &'q NotificationRow,
) -> QueryOf<'q, DB, O>
where
    DB: sqlx::Database,
    String: super::backend::Column<DB>,
    Option<String>: super::backend::Column<DB>,
    i64: super::backend::Column<DB>,
{
    query
        .bind(&n.id)
        .bind(&n.app_id)
        .bind(&n.notifier_id)
        .bind(&n.idempotency_key)
        .bind(&n.request_hash)
        .bind(&n.targets)
        .bind(&n.content)
        .bind(n.expires_at)
        .bind(&n.state)
        .bind(n.created_at)
        .bind(&n.response)
        .bind(&n.expand_cursor)
        .bind(n.updated_at)
}

/// Binds an audit entry's columns, in the order of `audit_log (at, actor,
/// action, app_id, target, source, details)`.
pub(in crate::store) fn bind_audit<'q, DB, O>(
    query: QueryOf<'q, DB, O>,
    e: &'q AuditEntry,
) -> QueryOf<'q, DB, O>
where
    DB: sqlx::Database,
    String: super::backend::Column<DB>,
    Option<String>: super::backend::Column<DB>,
    i64: super::backend::Column<DB>,
{
    query
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.app_id)
        .bind(&e.target)
        .bind(&e.source)
        .bind(&e.details)
}

/// Content sealed to one registration, in its inbox.
#[derive(Clone)]
pub struct InboxItem {
    pub registration_id: String,
    pub notification_id: String,
    pub app_id: String,
    /// The notification's creation time: the item shows once the notification
    /// with this id and time exists.
    pub created_at: i64,
    pub expires_at: i64,
    /// Bytes of the compact JWE.
    pub size: i64,
    /// The JWE, sealed again with the master key (`crypto::Sealer`).
    pub content: Vec<u8>,
}

/// Without the content.
impl std::fmt::Debug for InboxItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxItem")
            .field("registration_id", &self.registration_id)
            .field("notification_id", &self.notification_id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// An inbox item as lists and statuses show it: no content.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxEntry {
    pub registration_id: String,
    pub notification_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub size: i64,
    pub fetched_at: Option<i64>,
    pub acked_at: Option<i64>,
    /// The content is still there (neither acked nor expired).
    pub held: bool,
}

/// An inbox item with its content (still sealed at rest).
#[derive(sqlx::FromRow)]
pub struct InboxContent {
    #[sqlx(flatten)]
    pub entry: InboxEntry,
    pub content: Vec<u8>,
}

/// What [`Acceptance::build`] makes of the registrations it found: the row,
/// the registrations that get a queued delivery, the audit entry.
pub struct Built {
    pub row: NotificationRow,
    pub deliveries: Vec<String>,
    pub audit: AuditEntry,
}

/// Builds a notification from the registrations found (by id; the ones that
/// do not exist are absent). Called in the writer's transaction, possibly
/// more than once (a group that fails is written again write by write): it
/// must give the same rows for the same registrations.
pub type Build = std::sync::Arc<
    dyn Fn(
            &std::collections::HashMap<String, RegistrationState>,
        ) -> Result<Built, super::StoreError>
        + Send
        + Sync,
>;

/// A notification to registrations named by id whose rows depend on those
/// registrations as they are when it is written: they are looked up in the
/// same group transaction that inserts it (one statement for the group), so
/// acceptance has no read of its own (`NotificationStore::accept_notification`).
#[derive(Clone)]
pub struct Acceptance {
    pub registrations: Vec<String>,
    pub redrive_at: i64,
    pub build: Build,
}

impl std::fmt::Debug for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptance")
            .field("registrations", &self.registrations.len())
            .field("redrive_at", &self.redrive_at)
            .finish_non_exhaustive()
    }
}
