//! The HTTP API: one module per resource, merged here with the shared middleware.

pub mod app_registrations;
pub mod apps;
pub mod audit;
pub mod credentials;
pub mod events;
pub mod extract;
pub mod limits;
pub mod notifications;
pub mod notifiers;
pub mod ops;
pub mod registrations;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::AppState;

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
        registrations::delete_own, app_registrations::get_registration,
        app_registrations::delete_registration, app_registrations::put_aliases,
        events::events, notifications::notify, notifications::status,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        limits::get_limits, limits::put_limits, limits::delete_limits, audit::list_audit,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

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

/// The whole application router with its middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    Router::new()
        .merge(apps::router())
        .merge(credentials::router())
        .merge(notifiers::router())
        .merge(registrations::router())
        .merge(app_registrations::router())
        .merge(notifications::router())
        .merge(events::router())
        .merge(ops::router())
        .merge(limits::router())
        .merge(audit::router())
        .route_layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::Limiter::address_middleware,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                ]))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(
                    |request: &axum::http::Request<axum::body::Body>| {
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
                    },
                ))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
                }))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed("this endpoint does not accept that method".into()).into_response()
}
