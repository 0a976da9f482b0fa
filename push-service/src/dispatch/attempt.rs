//! Writing what the state machine decided for one delivery, and counting it.

use super::Dispatcher;
use super::Task;
use crate::delivery::{DeliveryState, ProviderKind, Transition};
use crate::ids::now_millis;
use crate::store::{DeliveryUpdate, NotificationRow, StoreError};
use crate::telemetry::names;

/// One delivery attempt in progress: writes what the state machine decided and counts it.
pub(super) struct Attempt<'a> {
    pub(super) dispatcher: &'a Dispatcher,
    pub(super) notification: &'a NotificationRow,
    pub(super) registration_id: &'a str,
    /// The registration's provider; `None` when the stored name is unknown here.
    pub(super) provider: Option<ProviderKind>,
    /// A fan-out chunk's target (it has no row yet): a success is counted
    /// here, not written; any other outcome becomes its row. `None`: the
    /// delivery has its row.
    pub(super) sent: Option<&'a std::sync::atomic::AtomicI32>,
    /// An attempt made without a claim (born claimed): until this time (ms)
    /// its outcome write is tried again rather than the attempt failed, so a
    /// short store outage does not send it twice.
    pub(super) patience_until: Option<i64>,
}

impl Attempt<'_> {
    /// Counts the transition: its final state, or why it waits.
    fn count(&self, transition: &Transition) {
        let outcome = match transition {
            Transition::Finish { state, .. } => state.as_str(),
            Transition::Again { waiting, .. } => waiting.as_str(),
        };
        let provider = self.provider.map_or("unknown", ProviderKind::as_str);
        metrics::counter!(names::DELIVERIES, "app" => self.notification.app_id.clone(),
            "provider" => provider, "outcome" => outcome)
        .increment(1);
    }

    /// Writes the transition: a final (or held) state, or queued again with its
    /// next try scheduled (the sweep covers a lost queue entry).
    pub(super) async fn apply(&self, transition: Transition) -> Result<(), StoreError> {
        self.count(&transition);
        match (&transition, self.sent) {
            // The hold wrote the delivery's state in its own commit.
            (
                Transition::Finish {
                    state: DeliveryState::Held,
                    ..
                },
                _,
            ) => return Ok(()),
            (
                Transition::Finish {
                    state: DeliveryState::Sent,
                    ..
                },
                Some(sent),
            ) => {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            _ => {}
        }
        // `retry`: when the next try goes, and when the sweep re-drives it if that is lost.
        let (state, reason, attempts, retry) = match transition {
            Transition::Finish {
                state,
                reason,
                attempts,
            } => (state, reason, attempts, None),
            Transition::Again {
                at,
                reason,
                attempts,
                waiting: _,
            } => {
                let redrive = at + self.dispatcher.settings.redrive_after.as_millis() as i64;
                (
                    DeliveryState::Queued,
                    Some(reason),
                    attempts,
                    Some((at, redrive)),
                )
            }
        };
        let update = DeliveryUpdate {
            notification_id: self.notification.id.clone(),
            registration_id: self.registration_id.to_owned(),
            state,
            reason,
            attempts: attempts as i32,
            next_attempt_at: retry.map(|(_, redrive)| redrive),
            now: now_millis(),
        };
        let store = &self.dispatcher.store;
        match self.sent {
            Some(_) => store.record_first_outcome(update).await?,
            None => self.write_outcome(update).await?,
        }
        if let Some((at, redrive)) = retry {
            let task = Task::Deliver {
                notification: self.notification.id.clone(),
                registrations: vec![self.registration_id.to_owned()],
                due: Some(redrive),
            };
            if let Err(e) = self.dispatcher.queue.push_at(task, at).await {
                tracing::warn!(error = %e, "retry not queued; the sweep will re-drive it");
            }
        }
        Ok(())
    }

    /// Writes a delivery's outcome; an unclaimed attempt's write is tried
    /// again (100 ms, doubling to 2 s) until its patience runs out: the
    /// provider has the notification, and a write lost here would send it
    /// again once the task or the sweep runs it.
    async fn write_outcome(&self, update: DeliveryUpdate) -> Result<(), StoreError> {
        let store = &self.dispatcher.store;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            match store.update_delivery(update.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let until = self.patience_until.unwrap_or(i64::MIN);
                    if now_millis() + pause.as_millis() as i64 >= until {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "outcome not written; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
            }
        }
    }
}
