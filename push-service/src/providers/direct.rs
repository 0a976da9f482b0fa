//! The direct channel: notifications held in the store per device, and the
//! event itself handed to the streams open for the device — in this process
//! at once, and on the other nodes through Redis pub/sub — so a stream writes
//! it without reading the store. A node publishes what its fan-outs hold
//! together: whatever waited while the previous message was being published
//! goes as one message (one `PUBLISH` for a chunk's events, not one per
//! device). A stream reads the store when it opens, when it missed something
//! (it fell behind, or a node could only say "look"), and every half minute.

use crate::delivery::ProviderKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Delivery, Outcome, Provider};
use crate::store::{DirectHold, Store};

/// Signals a stream may fall behind by before it reads the store instead.
const SIGNALS: usize = 8;
/// Events and looks in one published message, at most.
const PUBLISH_BATCH: usize = 500;
/// Events and looks waiting for the publisher before a push waits for room.
const PUBLISH_QUEUE: usize = 8 * PUBLISH_BATCH;

/// An event for a device's open streams.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pushed {
    pub registration: String,
    pub seq: i64,
    pub notification: String,
    /// The SSE event's JSON.
    pub payload: String,
}

/// What a device's streams hear.
#[derive(Debug, Clone)]
pub enum Signal {
    /// An event, held in the store already: write it.
    Event(Arc<Pushed>),
    /// Something was held: read the store.
    Look,
}

/// What a node publishes for the others: the events and looks that waited
/// together, and its own name so it skips its message when it hears it back
/// (its own streams had them at once).
#[derive(serde::Serialize)]
struct Outgoing<'a> {
    from: &'a str,
    events: Vec<&'a Pushed>,
    looks: Vec<&'a str>,
}

/// A message of a node of this version, as heard.
#[derive(serde::Deserialize)]
struct Incoming {
    from: String,
    #[serde(default)]
    events: Vec<Pushed>,
    #[serde(default)]
    looks: Vec<String>,
}

/// One item for the publisher.
enum Publish {
    Event(Arc<Pushed>),
    Look(String),
}

/// The other nodes, through Redis.
struct Remote {
    /// The pub/sub channel, `<prefix>direct`.
    channel: String,
    /// This hub's name in its messages.
    node: String,
    queue: mpsc::Sender<Publish>,
}

/// Hands events to the streams of the devices they are for.
#[derive(Clone)]
pub struct DirectHub {
    local: Arc<Mutex<HashMap<String, broadcast::Sender<Signal>>>>,
    remote: Option<Arc<Remote>>,
}

/// A stream's subscription to its device's signals; unsubscribes on drop.
pub struct Subscription {
    hub: DirectHub,
    registration: String,
    pub signals: broadcast::Receiver<Signal>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut local = self.hub.local.lock().unwrap_or_else(|p| p.into_inner());
        // This subscription's receiver still counts: it is the last one.
        if local
            .get(&self.registration)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            local.remove(&self.registration);
        }
    }
}

impl DirectHub {
    /// A hub; with Redis, events go through the channel `<prefix>direct` to
    /// every other node (its publisher runs on the current Tokio runtime).
    pub fn new(redis: Option<(redis::aio::ConnectionManager, String)>) -> Self {
        let Some((conn, prefix)) = redis else {
            return DirectHub {
                local: Arc::default(),
                remote: None,
            };
        };
        let channel = format!("{prefix}direct");
        let node = crate::ids::random_token(8);
        let (queue, waiting) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publish(conn, channel.clone(), node.clone(), waiting));
        DirectHub {
            local: Arc::default(),
            remote: Some(Arc::new(Remote {
                channel,
                node,
                queue,
            })),
        }
    }

    /// Subscribes a stream to the signals of `registration`.
    pub fn subscribe(&self, registration: &str) -> Subscription {
        let signals = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(registration.to_owned())
            .or_insert_with(|| broadcast::channel(SIGNALS).0)
            .subscribe();
        Subscription {
            hub: self.clone(),
            registration: registration.to_owned(),
            signals,
        }
    }

    /// Number of devices with an open stream on this node.
    pub fn connected(&self) -> usize {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn signal_local(&self, registration: &str, signal: Signal) {
        if let Some(tx) = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registration)
        {
            // No receiver left: the stream is closing, and the event stays held.
            let _ = tx.send(signal);
        }
    }

    fn signal_event(&self, event: Arc<Pushed>) {
        self.signal_local(&event.registration, Signal::Event(event.clone()));
    }

    /// Hands `event` to the device's streams, wherever they are.
    pub async fn push(&self, event: Pushed) {
        let event = Arc::new(event);
        self.signal_event(event.clone());
        self.to_others(Publish::Event(event)).await;
    }

    /// Tells the device's streams, wherever they are, to read the store.
    pub async fn look(&self, registration: &str) {
        self.signal_local(registration, Signal::Look);
        self.to_others(Publish::Look(registration.to_owned())).await;
    }

    /// Queues an item for the other nodes (waiting while the publisher is
    /// `PUBLISH_QUEUE` behind).
    async fn to_others(&self, item: Publish) {
        if let Some(remote) = &self.remote {
            if remote.queue.send(item).await.is_err() {
                tracing::warn!("direct channel: the publisher has stopped; other nodes' streams find the event at their next look");
            }
        }
    }

    /// A message from the channel: events and looks of another node of this
    /// version (its own are skipped), or what nodes of earlier versions send —
    /// one event (JSON), or a bare registration id (look at the store).
    fn receive(&self, message: &str) {
        if let Ok(batch) = serde_json::from_str::<Incoming>(message) {
            if self.remote.as_ref().is_some_and(|r| r.node == batch.from) {
                return;
            }
            for event in batch.events {
                self.signal_event(Arc::new(event));
            }
            for registration in batch.looks {
                self.signal_local(&registration, Signal::Look);
            }
            return;
        }
        match serde_json::from_str::<Pushed>(message) {
            Ok(event) => self.signal_event(Arc::new(event)),
            Err(_) => self.signal_local(message, Signal::Look),
        }
    }

    /// With Redis: listens to events from all nodes until `shutdown`, reconnecting on errors.
    pub fn spawn_listener(&self, client: redis::Client, shutdown: CancellationToken) {
        let Some(channel) = self.remote.as_ref().map(|r| r.channel.clone()) else {
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
                                        if let Ok(text) = message.get_payload::<String>() {
                                            hub.receive(&text);
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

/// The publisher: whatever waited while the previous message was being
/// published goes as one message (a fan-out chunk's events together). A
/// message that cannot be published is logged; the events are held in the
/// store, where the other nodes' streams find them at their next look.
async fn publish(
    mut conn: redis::aio::ConnectionManager,
    channel: String,
    node: String,
    mut waiting: mpsc::Receiver<Publish>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while waiting.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let text = outgoing(&node, &batch);
        batch.clear();
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(text)
            .query_async(&mut conn)
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "direct events not published; other nodes' streams find them at their next look");
        }
    }
}

/// The message of `node` for `batch`.
fn outgoing(node: &str, batch: &[Publish]) -> String {
    let mut message = Outgoing {
        from: node,
        events: Vec::new(),
        looks: Vec::new(),
    };
    for item in batch {
        match item {
            Publish::Event(event) => message.events.push(event),
            Publish::Look(registration) => message.looks.push(registration),
        }
    }
    serde_json::to_string(&message).unwrap_or_default()
}

/// The direct provider: holds the event in the store, then hands it to the device's streams.
pub struct DirectProvider {
    pub store: Arc<dyn Store>,
    pub hub: DirectHub,
}

/// The JSON of an SSE `notification` event.
pub fn event_payload(delivery: &Delivery<'_>) -> String {
    let mut event = serde_json::json!({
        "id": delivery.notification_id,
        "title": delivery.content.title,
        "body": delivery.content.body,
        "data": delivery.content.data,
        "priority": delivery.content.priority,
        "collapse_key": delivery.content.collapse_key,
        "created_at": crate::ids::rfc3339(delivery.created_at),
    });
    if delivery.content.inbox {
        // The inbox item to fetch (`GET /v1/registrations/{id}/inbox/{item}`).
        event["inbox"] = serde_json::json!({
            "id": delivery.notification_id,
            "expires_at": crate::ids::rfc3339(delivery.expires_at),
        });
    }
    event.to_string()
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
        let payload = event_payload(delivery);
        let held = self
            .store
            .insert_direct_event(DirectHold {
                registration_id: delivery.registration_id.to_owned(),
                notification_id: delivery.notification_id.to_owned(),
                payload: payload.clone(),
                expires_at,
                attempts: delivery.attempt as i32,
                now,
            })
            .await;
        match held {
            Ok(Some(seq)) => {
                self.hub
                    .push(Pushed {
                        registration: delivery.registration_id.to_owned(),
                        seq,
                        notification: delivery.notification_id.to_owned(),
                        payload,
                    })
                    .await;
                Outcome::Held
            }
            Ok(None) => {
                // Held by an earlier attempt, which may not have told the streams.
                self.hub.look(delivery.registration_id).await;
                Outcome::Held
            }
            Err(e) => Outcome::Retry {
                reason: format!("store: {e}"),
                after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(registration: &str, seq: i64) -> Pushed {
        Pushed {
            registration: registration.into(),
            seq,
            notification: format!("n{seq}"),
            payload: "{}".into(),
        }
    }

    #[tokio::test]
    async fn events_reach_the_streams_of_their_device_only() {
        let hub = DirectHub::new(None);
        let (mut a1, mut a2, mut b) = (hub.subscribe("a"), hub.subscribe("a"), hub.subscribe("b"));
        hub.push(event("a", 7)).await;
        for stream in [&mut a1, &mut a2] {
            match stream.signals.try_recv() {
                Ok(Signal::Event(e)) => assert_eq!(*e, event("a", 7)),
                other => panic!("expected the event, got {other:?}"),
            }
        }
        assert!(b.signals.try_recv().is_err(), "b heard a's event");
        hub.push(event("nobody", 1)).await; // no stream: nothing to do, nothing kept
        assert_eq!(hub.connected(), 2);
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_so() {
        let hub = DirectHub::new(None);
        let mut a = hub.subscribe("a");
        for seq in 0..(SIGNALS as i64 + 3) {
            hub.push(event("a", seq)).await;
        }
        assert!(matches!(
            a.signals.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(3))
        ));
    }

    #[test]
    fn messages_from_other_nodes_are_events_or_looks() {
        let hub = DirectHub::new(None);
        let mut a = hub.subscribe("a");
        hub.receive(&serde_json::to_string(&event("a", 5)).expect("json"));
        assert!(matches!(a.signals.try_recv(), Ok(Signal::Event(e)) if e.seq == 5));
        hub.receive("a"); // a node of an earlier version: a bare registration id
        assert!(matches!(a.signals.try_recv(), Ok(Signal::Look)));
    }

    /// A hub as a node with Redis has it, without Redis: its publisher's
    /// queue is returned instead.
    fn node(name: &str) -> (DirectHub, mpsc::Receiver<Publish>) {
        let (queue, waiting) = mpsc::channel(PUBLISH_QUEUE);
        let hub = DirectHub {
            local: Arc::default(),
            remote: Some(Arc::new(Remote {
                channel: "direct".into(),
                node: name.into(),
                queue,
            })),
        };
        (hub, waiting)
    }

    #[tokio::test]
    async fn a_nodes_events_reach_its_streams_at_once_and_the_others_in_one_message() {
        let (a, mut a_out) = node("a");
        let (b, _b_out) = node("b");
        let (mut on_a, mut on_b, mut other_on_b) =
            (a.subscribe("r1"), b.subscribe("r2"), b.subscribe("r3"));
        for (registration, seq) in [("r1", 1), ("r2", 2), ("r3", 3)] {
            a.push(event(registration, seq)).await;
        }
        a.look("r3").await;
        // Its own stream did not wait for Redis.
        assert!(matches!(on_a.signals.try_recv(), Ok(Signal::Event(e)) if e.seq == 1));
        let mut batch = Vec::new();
        assert_eq!(a_out.recv_many(&mut batch, PUBLISH_BATCH).await, 4);
        let message = outgoing("a", &batch);
        // What a hears back of its own message is skipped (its streams had it).
        a.receive(&message);
        assert!(
            on_a.signals.try_recv().is_err(),
            "a's stream heard its event twice"
        );
        // Another node's streams get theirs from the one message.
        b.receive(&message);
        assert!(matches!(on_b.signals.try_recv(), Ok(Signal::Event(e)) if e.seq == 2));
        assert!(matches!(other_on_b.signals.try_recv(), Ok(Signal::Event(e)) if e.seq == 3));
        assert!(matches!(other_on_b.signals.try_recv(), Ok(Signal::Look)));
        assert!(on_b.signals.try_recv().is_err());
    }

    #[test]
    fn the_last_stream_of_a_device_leaves_no_entry() {
        let hub = DirectHub::new(None);
        let (first, second) = (hub.subscribe("a"), hub.subscribe("a"));
        drop(first);
        assert_eq!(hub.connected(), 1, "one stream is still open");
        drop(second);
        assert_eq!(hub.connected(), 0);
    }
}
