//! `GET /v1/registrations/{id}/events`: the direct channel as Server-Sent Events (DPoP).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;

use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::auth::dpop::DeviceProof;
use crate::ids::now_millis;
use crate::providers::direct::{Signal, Subscription};
use crate::telemetry::names;
use tokio::sync::broadcast;

/// Even without a wake-up, a stream looks at the store this often.
const RECHECK: Duration = Duration::from_secs(30);
const BATCH: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/registrations/{id}/events", get(events))
}

struct StreamState {
    store: std::sync::Arc<dyn crate::store::Store>,
    recorder: Recorder,
    shutdown: tokio_util::sync::CancellationToken,
    registration: String,
    /// The highest sequence number written.
    last: i64,
    /// Read the store before waiting: on opening, after falling behind, when told to.
    look: bool,
    /// Sequence numbers written lately, in the order written: an event read
    /// from the store and handed over too is written once.
    recent: VecDeque<i64>,
    subscription: Subscription,
    buffer: VecDeque<Event>,
    _gauge: StreamGauge,
}

/// Sequence numbers a stream remembers having written. The events of one
/// group are handed over in the order their workers wake, not by number, so
/// after a read of the store the signals still waiting for the stream may be
/// for any event that read wrote (a page is [`BATCH`]): a whole page, and the
/// few signals that wait, are still known when those signals arrive. Past
/// that (a backlog of pages) a late signal may write its event again: a
/// repeat, which the event's id lets the device drop, rather than a gap.
/// 2 KiB at most, for a stream that has written this many.
const RECENT: usize = 256;

/// The latest writes a read after falling behind starts below.
const LATELY: usize = 16;

/// Counts open streams while it lives: the node's gauge, and the device key's
/// share of `max_streams_per_key`.
struct StreamGauge {
    open: OpenStreams,
    key: String,
}

/// Open streams of this node per device key.
pub type OpenStreams = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

impl StreamGauge {
    /// Takes a stream slot for `key`, unless it already holds `max` (0: no limit).
    fn take(open: &OpenStreams, key: &str, max: usize) -> Option<Self> {
        let mut counts = open.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.entry(key.to_owned()).or_default();
        if max > 0 && *held >= max {
            return None;
        }
        *held += 1;
        metrics::gauge!(names::DIRECT_STREAMS).increment(1.0);
        Some(StreamGauge {
            open: open.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!(names::DIRECT_STREAMS).decrement(1.0);
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[utoipa::path(get, path = "/v1/registrations/{id}/events", tag = "registrations",
    params(("id" = String, Path, description = "A `direct` registration"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    security(("dpop" = [])),
    responses((status = 200, description = "`text/event-stream` of `notification` events", content_type = "text/event-stream"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    proof: DeviceProof,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let registration = state
        .store
        .get_registration(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("registration `{id}` does not exist")))?;
    if registration.key_thumbprint != proof.thumbprint {
        return Err(ApiError::Forbidden(
            "this registration is bound to another device key".into(),
        ));
    }
    if registration.provider != "direct" {
        return Err(ApiError::invalid(
            "only `direct` registrations have an event stream",
        ));
    }
    let last = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::invalid("`Last-Event-ID` must be an event id from this stream")
            })?,
        None => state.store.direct_cursor(&id).await?,
    };
    let max = state.config.max_streams_per_key;
    let gauge =
        StreamGauge::take(&state.open_streams, &proof.thumbprint, max).ok_or_else(|| {
            ApiError::RateLimited {
                detail: format!(
                    "this device key already holds {max} open streams on this node \
                 (max_streams_per_key); close one first"
                ),
                limit: crate::limits::Verdict {
                    allowed: false,
                    limit: max as u64,
                    remaining: 0,
                    reset_seconds: 5,
                    retry_after_ms: 5000,
                },
            }
        })?;
    let subscription = state.hub.subscribe(&id);
    let heartbeat = state.config.direct_heartbeat;
    let initial = StreamState {
        registration: id,
        last,
        look: true,
        recent: VecDeque::new(),
        subscription,
        buffer: VecDeque::new(),
        _gauge: gauge,
        store: state.store.clone(),
        recorder: state.streamed.clone(),
        shutdown: state.shutdown.clone(),
    };
    let stream = futures_util::stream::unfold(initial, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat)))
}

/// Yields the next event: from the buffer, else from the store when it must
/// look there, else the next one handed over (or a look after `RECHECK`).
async fn next_event(mut s: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    loop {
        if let Some(event) = s.buffer.pop_front() {
            return Some((Ok(event), s));
        }
        if s.shutdown.is_cancelled() {
            return None;
        }
        if std::mem::take(&mut s.look) {
            let after = s.last;
            read_store(&mut s, after).await;
            continue;
        }
        let shutdown = s.shutdown.clone();
        tokio::select! {
            signal = s.subscription.signals.recv() => match signal {
                Ok(Signal::Event(event)) => {
                    if !s.recent.contains(&event.seq) {
                        let (notification, seq, payload) =
                            (event.notification.clone(), event.seq, event.payload.clone());
                        write(&mut s, vec![(notification, seq, payload)]).await;
                    }
                }
                Ok(Signal::Look) => s.look = true,
                // Fell behind: the store has it all. Events are handed over in
                // the order their groups committed, which on PostgreSQL's
                // several writers is not always their numbers' order, so the
                // read starts below the lowest number lately written (those
                // written are not written again).
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let from = s
                        .recent
                        .iter()
                        .rev()
                        .take(LATELY)
                        .min()
                        .map_or(s.last, |lowest| lowest - 1);
                    read_store(&mut s, from).await;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(RECHECK) => s.look = true,
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Takes what the store holds after event `after`.
async fn read_store(s: &mut StreamState, after: i64) {
    match s
        .store
        .direct_events_after(&s.registration, after, now_millis(), BATCH)
        .await
    {
        Ok(events) => {
            // A full page: there may be more.
            s.look = events.len() as i64 == BATCH;
            let events = events
                .into_iter()
                .filter(|e| !s.recent.contains(&e.seq))
                .map(|e| (e.notification_id, e.seq, e.payload))
                .collect();
            write(s, events).await;
        }
        Err(e) => tracing::warn!(error = %e, "direct stream cannot read the store; retrying"),
    }
}

/// Queues `(notification, seq, payload)` events for the stream and has them
/// recorded as written (their deliveries `sent`, the device's cursor past them).
async fn write(s: &mut StreamState, events: Vec<(String, i64, String)>) {
    if events.is_empty() {
        return;
    }
    metrics::counter!(names::DIRECT_EVENTS).increment(events.len() as u64);
    for (notification, seq, payload) in events {
        s.last = s.last.max(seq);
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(seq);
        s.recorder
            .record((s.registration.clone(), notification, seq))
            .await;
        s.buffer.push_back(
            Event::default()
                .id(seq.to_string())
                .event("notification")
                .data(payload),
        );
    }
}

/// Records what the node's streams wrote, in group commits, without holding
/// the streams up: an event goes out at once, its bookkeeping follows. A crash
/// in between costs a repeat (the device's cursor is behind), never an event.
#[derive(Clone)]
pub struct Recorder {
    tx: tokio::sync::mpsc::Sender<(String, String, i64)>,
}

/// Written events the recorder may lag behind by before streams wait for it.
const RECORDER_BACKLOG: usize = 16_384;
/// Most events per group write.
const RECORDED_TOGETHER: usize = 512;

impl Recorder {
    /// Starts the recorder; it ends after `shutdown`, with what it still holds written.
    pub fn spawn(
        store: std::sync::Arc<dyn crate::store::Store>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel(RECORDER_BACKLOG);
        tokio::spawn(async move {
            let mut events = Vec::with_capacity(RECORDED_TOGETHER);
            loop {
                let open = tokio::select! {
                    n = rx.recv_many(&mut events, RECORDED_TOGETHER) => n > 0,
                    _ = shutdown.cancelled() => {
                        while let Ok(event) = rx.try_recv() {
                            events.push(event);
                        }
                        false
                    }
                };
                if !events.is_empty() {
                    if let Err(e) = store.streamed(&events, now_millis()).await {
                        tracing::warn!(error = %e, count = events.len(),
                            "direct streams: what was written is not recorded (the devices may see it again)");
                    }
                    events.clear();
                }
                if !open {
                    return;
                }
            }
        });
        Recorder { tx }
    }

    async fn record(&self, event: (String, String, i64)) {
        // Closed only after shutdown, when the streams end too.
        let _ = self.tx.send(event).await;
    }
}
