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
use crate::providers::direct::Subscription;
use crate::telemetry::names;

/// Even without a wake-up, a stream looks at the store this often.
const RECHECK: Duration = Duration::from_secs(30);
const BATCH: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/registrations/{id}/events", get(events))
}

struct StreamState {
    state: AppState,
    registration: String,
    last: i64,
    subscription: Subscription,
    buffer: VecDeque<Event>,
    _gauge: StreamGauge,
}

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
        subscription,
        buffer: VecDeque::new(),
        _gauge: gauge,
        state,
    };
    let stream = futures_util::stream::unfold(initial, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat)))
}

/// Yields the next event: from the buffer, else from the store, else after a wake-up.
async fn next_event(mut s: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    loop {
        if let Some(event) = s.buffer.pop_front() {
            return Some((Ok(event), s));
        }
        if s.state.shutdown.is_cancelled() {
            return None;
        }
        let notify = s.subscription.notify.clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before reading the store, so a wake-up in between is not missed.
        notified.as_mut().enable();
        match s
            .state
            .store
            .direct_events_after(&s.registration, s.last, now_millis(), BATCH)
            .await
        {
            Ok(events) if !events.is_empty() => {
                let now = now_millis();
                for event in events {
                    s.last = event.seq;
                    let _ = s
                        .state
                        .store
                        .mark_streamed(&event.notification_id, &s.registration, now)
                        .await;
                    s.buffer.push_back(
                        Event::default()
                            .id(event.seq.to_string())
                            .event("notification")
                            .data(event.payload),
                    );
                }
                metrics::counter!(names::DIRECT_EVENTS).increment(s.buffer.len() as u64);
                let _ = s
                    .state
                    .store
                    .set_direct_cursor(&s.registration, s.last)
                    .await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "direct stream cannot read the store; retrying"),
        }
        let shutdown = s.state.shutdown.clone();
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}
