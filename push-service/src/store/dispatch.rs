//! Store operations of the notify and dispatch pipeline.

use async_trait::async_trait;

use super::StoreError;

/// A notification as stored: the request, its target spec and its fan-out progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub app_id: String,
    pub notifier_id: String,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request body, to tell a retry from a different request.
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
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingDelivery {
    pub registration_id: String,
    pub attempts: i32,
    pub provider: Option<String>,
    pub token: Option<String>,
    pub environment: Option<String>,
    pub registration_status: Option<String>,
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

/// Persistence of notifications, deliveries and direct-channel events.
#[async_trait]
pub trait DispatchStore: Send + Sync {
    /// Stores a notification and a queued delivery per registration, atomically.
    /// An idempotency-key collision is `StoreError::Conflict`.
    /// `audit`, when given, is written in the same transaction.
    async fn insert_notification(
        &self,
        notification: &NotificationRow,
        registrations: &[String],
        redrive_at: i64,
        audit: Option<&super::AuditEntry>,
    ) -> Result<(), StoreError>;
    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRow>, StoreError>;
    async fn find_idempotent(
        &self,
        app_id: &str,
        notifier_id: &str,
        key: &str,
    ) -> Result<Option<NotificationRow>, StoreError>;
    /// `(id, app_id, status)` of the given registrations that exist.
    async fn registration_states(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Active registrations a fan-out reaches: those with one of `aliases`, or all of the app.
    async fn count_targets(
        &self,
        app_id: &str,
        aliases: Option<&[String]>,
    ) -> Result<i64, StoreError>;
    /// Expands the next chunk of a fan-out after `after`: queued deliveries are inserted
    /// and the cursor saved in one transaction. Returns the chunk's registration ids.
    async fn expand_chunk(
        &self,
        notification: &NotificationRow,
        aliases: Option<&[String]>,
        limit: i64,
        redrive_at: i64,
    ) -> Result<Vec<String>, StoreError>;
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
    async fn claim_delivery(
        &self,
        notification_id: &str,
        registration_id: &str,
        attempts: i32,
        due: Option<i64>,
        lease: i64,
    ) -> Result<bool, StoreError>;
    /// Records the outcome of one attempt (only while the delivery is still queued).
    async fn update_delivery(&self, update: DeliveryUpdate) -> Result<(), StoreError>;
    /// Marks a registration invalid with a reason (token hygiene).
    async fn invalidate_registration(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError>;
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
        provider: &str,
        waiting_after: i64,
        redrive_at: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Marks queued deliveries whose notification expired as `expired`; returns how many.
    async fn expire_overdue(&self, now: i64) -> Result<u64, StoreError>;
    /// A direct-channel delivery was written to the device's stream: `held` becomes `sent`.
    async fn mark_streamed(
        &self,
        notification_id: &str,
        registration_id: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Fan-outs whose expansion stopped before `before` (a node died): claims them until `redrive_at`.
    async fn claim_stalled_expansions(
        &self,
        before: i64,
        redrive_at: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Count of deliveries by state.
    async fn delivery_counts(
        &self,
        notification_id: &str,
    ) -> Result<Vec<(String, i64)>, StoreError>;
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

    /// Holds a notification on a direct channel; `None` when it was already there.
    async fn insert_direct_event(
        &self,
        registration_id: &str,
        notification_id: &str,
        payload: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Unexpired events of a registration after `after_seq`, oldest first.
    async fn direct_events_after(
        &self,
        registration_id: &str,
        after_seq: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<DirectEvent>, StoreError>;
    /// Remembers the last event written to a device's stream (start point without Last-Event-ID).
    async fn set_direct_cursor(&self, registration_id: &str, seq: i64) -> Result<(), StoreError>;
    async fn direct_cursor(&self, registration_id: &str) -> Result<i64, StoreError>;
    /// Drops held events past their TTL.
    async fn delete_expired_direct_events(&self, now: i64) -> Result<u64, StoreError>;
}

/// `($1, …, $cols), ($cols+1, …), …` for a multi-row `VALUES` of `rows` rows.
pub fn row_placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$start, $start+1, …` placeholders for an IN list of `count` values.
pub fn placeholders(start: usize, count: usize) -> String {
    (start..start + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_and_columns_in_order() {
        assert_eq!(super::placeholders(2, 3), "$2, $3, $4");
        assert_eq!(super::row_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
