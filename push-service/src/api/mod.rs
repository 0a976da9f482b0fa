//! The HTTP API: one module per resource, merged here with the shared middleware.

pub mod app_registrations;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod client_addr;
pub mod credentials;
pub mod error;
pub mod events;
pub mod extract;
pub mod inbox;
pub mod limits;
pub mod notifications;
pub mod notifiers;
pub mod ops;
pub mod rate_limit;
pub mod registrations;
pub mod server;
pub mod state;
mod stream_conn;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::error::ApiError;
pub use state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "push-service", description = "Self-hostable push notification service"),
    paths(
        apps::create_app, apps::list_apps, apps::get_app, apps::delete_app,
        credentials::put_apns, credentials::get_apns, credentials::delete_apns,
        credentials::put_fcm, credentials::get_fcm, credentials::delete_fcm,
        notifiers::create_notifier, notifiers::list_notifiers, notifiers::get_notifier,
        notifiers::delete_notifier, notifiers::put_attestation, notifiers::get_attestation,
        registrations::create_registration, registrations::get_own, registrations::rotate_token,
        registrations::delete_own, inbox::list, inbox::fetch, inbox::ack, inbox::delete,
        app_registrations::get_registration,
        app_registrations::delete_registration, app_registrations::put_aliases,
        events::events, notifications::notify, notifications::notify_batch, notifications::status,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        limits::get_limits, limits::put_limits, limits::delete_limits, audit::list_audit,
    ),
    components(schemas(crate::api::error::Problem)),
    modifiers(&SecuritySchemes, &ProblemResponses),
)]
pub struct ApiDoc;

struct SecuritySchemes;

/// Every error body is `application/problem+json`, and every operation lists the
/// errors any request can get: 429 and 503 everywhere, 400/413/415 where a body
/// is read, 408 for slow requests.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/v1/");
            for operation in [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let has_body = operation.request_body.is_some();
                let has_query =
                    operation.parameters.iter().flatten().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    });
                let responses = &mut operation.responses.responses;
                for response in responses.values_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            let is_problem = matches!(&content.schema,
                                Some(utoipa::openapi::RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"));
                            let key = if is_problem {
                                "application/problem+json"
                            } else {
                                "application/json"
                            };
                            response.content.insert(key.to_owned(), content);
                        }
                    }
                }
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description).into());
                };
                if api {
                    add(
                        "408",
                        "The request took longer than request_timeout_seconds",
                    );
                    add("429", "Over a rate limit; see Retry-After and RateLimit-*");
                    add("503", "A backend is unreachable; retry after Retry-After");
                    if has_query {
                        add("422", "A query parameter is out of range");
                    }
                    if has_body {
                        add("400", "Malformed JSON");
                        add("413", "Body larger than max_body_bytes");
                        add("415", "Not `Content-Type: application/json`");
                    }
                }
            }
        }
    }
}

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "notifier_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A short-lived JWT signed by a key registered for the notifier",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "dpop",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "DPoP",
                "A DPoP proof (RFC 9449) signed by the device key",
            ))),
        );
    }
}

/// The whole application: the shared middleware around the routes.
///
/// The middleware wraps the routes once, as one service, instead of through
/// `Router::layer` (which wraps every route's handler on its own: each layer
/// a boxed service, and each request cloned the whole nested chain of them at
/// every layer it passed). Only the per-route request metrics stay inside,
/// since they need the matched route. The returned router sends every request
/// to that service.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    let routes = Router::new()
        .merge(apps::router())
        .merge(credentials::router())
        .merge(notifiers::router())
        .merge(registrations::router())
        .merge(inbox::router())
        .merge(app_registrations::router())
        .merge(notifications::router(&state.config))
        .merge(events::router())
        .merge(ops::router(state.config.admin_listen.is_none()))
        .merge(limits::router())
        .merge(audit::router())
        .route_layer(axum::middleware::from_fn(track_http))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    let app = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds))
        // 503s under backpressure or an outage are expected answers: WARN,
        // not ERROR (a real 500 is logged at ERROR where it happens).
        .layer(
            TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN))
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        request_id = %request_id,
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state, door))
        .service(routes);
    Router::new().fallback_service(app)
}

/// What every request passes before its route: a URL that encodes a control
/// character is refused, the client address is attached (see
/// `trusted_proxies`), and requests without credentials are charged to it.
async fn door(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(refused) = refuse_control_characters(request.uri()) {
        return refused;
    }
    let ip = client_addr::attach(&state, &mut request);
    rate_limit::by_address(&state, ip, request, next).await
}

/// A request's id when it came without one: a random (version 4) UUID from
/// the thread's generator, which the OS seeds, so no system call per request.
#[derive(Clone, Copy)]
struct RequestIds;

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_bytes(&uuid_v4(rand::random()))
            .ok()
            .map(RequestId::new)
    }
}

/// `bytes` as a version 4 UUID's text (RFC 9562: version 4, variant `10`).
fn uuid_v4(bytes: [u8; 16]) -> [u8; 36] {
    let mut text = [0; 36];
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    text
}

/// Ids and parameters reach the store as text, and PostgreSQL cannot store a NUL:
/// a URL with a percent-encoded control character is answered before any query
/// (`404` for a path, no resource has such an id; `422` for a parameter), the
/// same on every backend.
fn refuse_control_characters(uri: &axum::http::Uri) -> Option<Response> {
    if encodes_control(uri.path()) {
        return Some(
            ApiError::not_found("no resource has an id with a control character").into_response(),
        );
    }
    if uri.query().is_some_and(encodes_control) {
        return Some(
            ApiError::invalid("a query parameter holds a control character").into_response(),
        );
    }
    None
}

/// Whether `text` percent-encodes a control character (`%00`–`%1F`, `%7F`).
fn encodes_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .is_some_and(|b| b < 0x20 || b == 0x7f)
    })
}

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed("this endpoint does not accept that method".into()).into_response()
}

/// Middleware recording request count and latency by route template and status.
async fn track_http(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let start = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    HttpSeries::record(route, &method, response.status(), start.elapsed());
    response
}

/// The request counter and latency histogram of one method and status of a
/// route, looked up by their labels once and kept: a lookup by labels builds
/// the labels' strings and hashes them, twice per request.
struct HttpSeries {
    method: axum::http::Method,
    status: StatusCode,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Series by route template; routes, methods and statuses are few, so the
/// map stays small.
type SeriesByRoute = std::collections::HashMap<Box<str>, Vec<HttpSeries>>;

impl HttpSeries {
    fn record(
        route: &str,
        method: &axum::http::Method,
        status: StatusCode,
        took: std::time::Duration,
    ) {
        static SERIES: std::sync::OnceLock<std::sync::RwLock<SeriesByRoute>> =
            std::sync::OnceLock::new();
        let series = SERIES.get_or_init(Default::default);
        let find = |map: &SeriesByRoute| {
            map.get(route)?
                .iter()
                .find(|s| s.status == status && s.method == method)
                .map(|s| {
                    s.requests.increment(1);
                    s.duration.record(took.as_secs_f64());
                })
        };
        let known = find(&series.read().unwrap_or_else(|e| e.into_inner()));
        if known.is_some() {
            return;
        }
        let mut map = series.write().unwrap_or_else(|e| e.into_inner());
        if find(&map).is_some() {
            return;
        }
        let labels = [
            ("method", method.as_str().to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        let made = HttpSeries {
            method: method.clone(),
            status,
            requests: metrics::counter!(crate::telemetry::names::HTTP_REQUESTS, &labels),
            duration: metrics::histogram!(crate::telemetry::names::HTTP_DURATION, &labels),
        };
        made.requests.increment(1);
        made.duration.record(took.as_secs_f64());
        map.entry(route.into()).or_default().push(made);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_version_4_uuids() {
        // (random bytes, id)
        let cases = [
            ([0u8; 16], "00000000-0000-4000-8000-000000000000"),
            ([0xffu8; 16], "ffffffff-ffff-4fff-bfff-ffffffffffff"),
            (
                [
                    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a,
                    0xbc, 0xde, 0xf0,
                ],
                "12345678-9abc-4ef0-9234-56789abcdef0",
            ),
        ];
        for (bytes, id) in cases {
            assert_eq!(super::uuid_v4(bytes), id.as_bytes());
        }
    }

    #[test]
    fn encoded_control_characters_are_found() {
        for (text, found) in [
            ("/v1/apps/app_1", false),
            ("/v1/apps/app%00x", true),
            ("/v1/apps/%0a", true),
            ("/v1/apps/%7F", true),
            ("/v1/apps/%20x", false),
            ("/v1/apps/%e2%82%ac", false),
            ("after=a%1fb", true),
            ("%", false),
        ] {
            assert_eq!(super::encodes_control(text), found, "{text}");
        }
    }
}
