//! The inbox's store trait: each registration's sealed content.

use async_trait::async_trait;

use super::{InboxContent, InboxEntry, InboxItem, Reseal, StoreError};

/// Each registration's inbox: content sealed to its encryption key.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Writes the items of a notification before the notification itself (one
    /// transaction): an item is shown only once its notification exists, so a
    /// notification is never accepted without its items, and items whose
    /// notification was never stored stay hidden until they expire.
    async fn put_inbox_items(&self, items: &[InboxItem]) -> Result<(), StoreError>;
    /// Removes the items of a notification whose insert failed.
    async fn drop_inbox_items(&self, notification_id: &str) -> Result<(), StoreError>;
    /// A registration's pending items (content held, TTL not ended), by
    /// notification id after `after`.
    async fn inbox(
        &self,
        registration_id: &str,
        now: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboxEntry>, StoreError>;
    /// One pending item with its content; the first fetch is recorded.
    async fn fetch_inbox_item(
        &self,
        registration_id: &str,
        notification_id: &str,
        now: i64,
    ) -> Result<Option<InboxContent>, StoreError>;
    /// Acknowledges a pending item: its content goes, `acked_at` is set.
    /// False when there was no pending item.
    async fn ack_inbox_item(
        &self,
        registration_id: &str,
        notification_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Every item of a notification, for its status (by registration id).
    async fn inbox_of_notification(
        &self,
        notification_id: &str,
    ) -> Result<Vec<InboxEntry>, StoreError>;
    /// Removes the content of up to `limit` items whose TTL ended; how many.
    async fn expire_inbox_items(&self, now: i64, limit: u32) -> Result<u64, StoreError>;
    /// Deletes up to `limit` items created before `before`; how many.
    async fn delete_old_inbox_items(&self, before: i64, limit: u32) -> Result<u64, StoreError>;
    /// Re-seals the content of every item (a master key rotation):
    /// `reseal(registration, notification, sealed)` as for credentials. A page
    /// of items per transaction: an item is never half changed, and a run
    /// stopped midway is run again. Returns how many changed.
    async fn reseal_inbox_items(&self, reseal: &Reseal) -> Result<usize, StoreError>;
}
