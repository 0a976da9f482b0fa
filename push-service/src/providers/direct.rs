//! The direct channel: notifications held in the store per device, and wake-ups to
//! the node holding the device's Server-Sent-Events stream (in-process, or Redis pub/sub).

use crate::delivery::ProviderKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Outcome, Provider};
use crate::store::Store;

/// Wakes the streams of devices that have new events.
#[derive(Clone)]
pub struct DirectHub {
    local: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

/// A stream's subscription to its device's wake-ups; unsubscribes on drop.
pub struct Subscription {
    hub: DirectHub,
    registration: String,
    pub notify: Arc<Notify>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut local = self.hub.local.lock().unwrap_or_else(|p| p.into_inner());
        // The map holds one reference, this subscription another: the last stream is leaving.
        if Arc::strong_count(&self.notify) <= 2 {
            local.remove(&self.registration);
        }
    }
}

impl DirectHub {
    /// A hub; with Redis, wake-ups go through the channel `<prefix>direct` to every node.
    pub fn new(redis: Option<(redis::aio::ConnectionManager, String)>) -> Self {
        DirectHub {
            local: Arc::default(),
            redis: redis.map(|(conn, prefix)| (conn, format!("{prefix}direct"))),
        }
    }

    /// Subscribes a stream to the wake-ups of `registration`.
    pub fn subscribe(&self, registration: &str) -> Subscription {
        let notify = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(registration.to_owned())
            .or_default()
            .clone();
        Subscription {
            hub: self.clone(),
            registration: registration.to_owned(),
            notify,
        }
    }

    /// Number of devices with an open stream on this node.
    pub fn connected(&self) -> usize {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn wake_local(&self, registration: &str) {
        if let Some(notify) = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registration)
        {
            notify.notify_waiters();
        }
    }

    /// Wakes the stream of `registration`, wherever it is.
    pub async fn wake(&self, registration: &str) {
        match &self.redis {
            None => self.wake_local(registration),
            Some((conn, channel)) => {
                let mut conn = conn.clone();
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(registration)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = published {
                    // The stream re-checks the store periodically; the event is not lost.
                    tracing::warn!(error = %e, "direct wake-up not published");
                    self.wake_local(registration);
                }
            }
        }
    }

    /// With Redis: listens to wake-ups from all nodes until `shutdown`, reconnecting on errors.
    pub fn spawn_listener(&self, client: redis::Client, shutdown: CancellationToken) {
        let Some((_, channel)) = self.redis.clone() else {
            return;
        };
        let hub = self.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while !shutdown.is_cancelled() {
                let pubsub = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                match pubsub.await {
                    Ok(mut pubsub) => {
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                message = messages.next() => match message {
                                    Some(message) => {
                                        if let Ok(registration) = message.get_payload::<String>() {
                                            hub.wake_local(&registration);
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "direct channel: Redis subscription failed")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        });
    }
}

/// The direct provider: holds the event in the store, then wakes the device's stream.
pub struct DirectProvider {
    pub store: Arc<dyn Store>,
    pub hub: DirectHub,
}

/// The JSON of an SSE `notification` event.
pub fn event_payload(delivery: &Delivery<'_>) -> String {
    serde_json::json!({
        "id": delivery.notification_id,
        "title": delivery.content.title,
        "body": delivery.content.body,
        "data": delivery.content.data,
        "priority": delivery.content.priority,
        "collapse_key": delivery.content.collapse_key,
        "created_at": crate::ids::rfc3339(delivery.created_at),
    })
    .to_string()
}

/// How long a zero-TTL event waits for an open stream to write it.
const NOW_OR_NEVER_MS: i64 = 5_000;

#[async_trait]
impl Provider for DirectProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Direct
    }

    async fn send(&self, delivery: &Delivery<'_>) -> Outcome {
        let now = crate::ids::now_millis();
        // A zero TTL reaches a stream open now: the event lives just long enough
        // for the wake-up to write it, and is never replayed to a later connection.
        let expires_at = if delivery.now_or_never() {
            now + NOW_OR_NEVER_MS
        } else {
            delivery.expires_at
        };
        let held = self
            .store
            .insert_direct_event(
                delivery.registration_id,
                delivery.notification_id,
                &event_payload(delivery),
                expires_at,
                now,
            )
            .await;
        match held {
            Ok(_) => {
                self.hub.wake(delivery.registration_id).await;
                Outcome::Held
            }
            Err(e) => Outcome::Retry {
                reason: format!("store: {e}"),
                after: None,
            },
        }
    }
}
