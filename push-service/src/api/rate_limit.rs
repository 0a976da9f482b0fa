//! Rate limits at the door: per source address (before the handler, or after
//! a failed authentication), and the `RateLimit-*` headers of an answer.

use axum::response::IntoResponse;

use super::error::ApiError;
use super::AppState;
use crate::limits::Bucket;

/// Per source address (the client address, see `trusted_proxies`): requests
/// without credentials are charged before they run; requests with credentials
/// (a bearer token, a DPoP proof) always run, so a valid credential is never
/// refused here — their callers are limited per principal (notifier, device
/// key). A failed authentication is charged after the fact, and once the
/// address has used up its allowance the failure is answered `429` instead
/// of `401`. `ip`: the client address ([`super::client_addr::attach`]).
pub async fn by_address(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limiter = &state.limiter;
    let per_second = limiter.settings.address_requests_per_second;
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let Some(ip) = ip.filter(|_| per_second > 0.0 && !probe) else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let credentialed =
        headers.contains_key(axum::http::header::AUTHORIZATION) || headers.contains_key("dpop");
    if !credentialed {
        let bucket = Bucket {
            key: format!("addr:{ip}"),
            per_second,
            cost: 1.0,
        };
        if let Err(e) = limiter
            .enforce(std::slice::from_ref(&bucket), "address")
            .await
        {
            let path = request.uri().path().to_owned();
            crate::telemetry::warn_sampled("rate limited (429)", ip, &path);
            return ApiError::from(e).into_response();
        }
        return next.run(request).await;
    }
    // Cheap copies (the URI is reference-counted); text only when logged.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        // A notifier or device over its own limit.
        crate::telemetry::warn_sampled("rate limited (429)", ip, uri.path());
    }
    if response.status() != axum::http::StatusCode::UNAUTHORIZED {
        return response;
    }
    let charge = Bucket {
        key: format!("authfail:{ip}"),
        per_second,
        cost: 1.0,
    };
    crate::telemetry::warn_sampled(
        "authentication failed (401)",
        ip,
        &format!("{method} {}", uri.path()),
    );
    match limiter.enforce(&[charge], "failed authentication").await {
        Ok(_) => response,
        Err(e) => ApiError::from(e).into_response(),
    }
}
