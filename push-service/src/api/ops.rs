//! Operations endpoints: liveness, readiness, metrics, OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;

/// The ops routes of the public listener: all of them, or — when `admin_listen`
/// serves the probes and metrics apart — only `/healthz` and `/openapi.json`
/// (`/metrics` names every app; `/readyz` costs a probe).
pub fn router(probes: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi));
    if probes {
        router
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
    } else {
        router
    }
}

/// Marks a request that came in on `admin_listen`.
#[derive(Debug, Clone, Copy)]
pub struct OnAdminListener;

/// What `admin_listen` serves: liveness, readiness, metrics — and, with
/// `operator_api_on_admin_listen`, the whole API, of which the operator's part
/// is then answered only here.
pub fn admin_router(state: AppState) -> axum::Router {
    let ops = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.config.operator_api_on_admin_listen {
        // The API router brings /healthz (and /openapi.json) with it.
        let api = super::router(state.clone());
        ops.with_state(state)
            .merge(api)
            .layer(axum::middleware::from_fn(
                |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
                    request.extensions_mut().insert(OnAdminListener);
                    next.run(request).await
                },
            ))
    } else {
        ops.route("/healthz", get(healthz)).with_state(state)
    }
}

/// Health of one dependency.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ok` when every dependency answered.
    pub status: &'static str,
    pub store: &'static str,
    /// `ok`, `down`, or `not configured`.
    pub redis: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is alive")))]
async fn healthz() -> &'static str {
    "ok"
}

/// The readiness verdict, cached for a second, and the Redis connection the
/// probe reuses: `/readyz` called in a loop costs one probe a second and no new
/// connection (a broken connection is replaced on the next probe).
#[derive(Default)]
pub struct ReadinessProbe {
    state: tokio::sync::Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    verdict: Option<(std::time::Instant, bool, &'static str, &'static str)>,
    redis: Option<redis::aio::MultiplexedConnection>,
}

/// How long a verdict is answered again without probing.
const VERDICT_TTL: Duration = Duration::from_secs(1);

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // One probe at a time; the others wait for it and answer its verdict.
    let mut probe_state = state.readiness.state.lock().await;
    let (ready, store, redis) = match probe_state.verdict {
        Some((at, ready, store, redis)) if at.elapsed() < VERDICT_TTL => (ready, store, redis),
        _ => {
            let (ready, store, redis) = probe(&state, &mut probe_state).await;
            probe_state.verdict = Some((std::time::Instant::now(), ready, store, redis));
            (ready, store, redis)
        }
    };
    drop(probe_state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ok" } else { "unavailable" },
        store,
        redis,
    };
    (status, Json(body))
}

async fn probe(
    state: &AppState,
    probe_state: &mut ProbeState,
) -> (bool, &'static str, &'static str) {
    let limit = Duration::from_secs(2);
    let store_ok = matches!(
        tokio::time::timeout(limit, state.store.ping()).await,
        Ok(Ok(()))
    );
    let redis = match &state.redis {
        None => "not configured",
        Some(client) => {
            let ping = async {
                if probe_state.redis.is_none() {
                    let config = crate::redis_connection_config(limit);
                    let conn = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    metrics::counter!(crate::telemetry::names::READINESS_CONNECTIONS).increment(1);
                    probe_state.redis = Some(conn);
                }
                match probe_state.redis.as_mut() {
                    Some(conn) => redis::cmd("PING").query_async::<String>(conn).await,
                    None => Ok(String::new()),
                }
            };
            match tokio::time::timeout(limit, ping).await {
                Ok(Ok(_)) => "ok",
                _ => {
                    probe_state.redis = None;
                    "down"
                }
            }
        }
    };
    let ready = store_ok && redis != "down";
    (ready, if store_ok { "ok" } else { "down" }, redis)
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_ref().clone(),
    )
}
