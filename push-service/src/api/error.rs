//! The API error type: RFC 9457 problem+json with a stable `type` per kind.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Base of every problem `type` URI; the suffix is the stable kind.
pub const PROBLEM_BASE: &str = "urn:push-service:problem:";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the error kind, e.g. `urn:push-service:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Errors answered by the API. Each variant has a status and a stable kind.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    /// A request head that cannot be read as HTTP/1.1 (the direct channel's own path).
    #[error("{0}")]
    MalformedRequest(String),
    #[error("{0}")]
    HeadTooLarge(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    InvalidDpop(String),
    #[error("{0}")]
    InvalidAttestation(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InsufficientScope(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    Unavailable(String),
    /// Over a rate limit: answered 429 with `Retry-After` and `RateLimit-*`.
    #[error("{detail}")]
    RateLimited {
        detail: String,
        limit: crate::limits::Verdict,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// An invalid field or value in an otherwise well-formed body.
    pub fn invalid(detail: impl std::fmt::Display) -> Self {
        ApiError::InvalidBody(detail.to_string())
    }

    /// A resource that does not exist (or is not visible to the caller).
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            MalformedRequest(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
            ),
            HeadTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request-head-too-large",
                "Request header fields too large",
            ),
            InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "Invalid request",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            InvalidDpop(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-dpop-proof",
                "Invalid DPoP proof",
            ),
            InvalidAttestation(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-attestation",
                "Invalid client attestation",
            ),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            InsufficientScope(_) => (
                StatusCode::FORBIDDEN,
                "insufficient-scope",
                "Insufficient scope",
            ),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            IdempotencyKeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The stable kind, the suffix of the problem `type`.
    pub fn kind(&self) -> &'static str {
        self.parts().1
    }
}

impl From<crate::auth::replay::ReplayError> for ApiError {
    fn from(err: crate::auth::replay::ReplayError) -> Self {
        match err {
            crate::auth::replay::ReplayError::Store(e) => e.into(),
            crate::auth::replay::ReplayError::Unreachable => ApiError::Unavailable(err.to_string()),
        }
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(err: crate::limits::LimitError) -> Self {
        use crate::limits::LimitError;
        match err {
            LimitError::Exceeded { detail, verdict } => ApiError::RateLimited {
                detail,
                limit: verdict,
            },
            LimitError::Unreachable => {
                tracing::warn!("redis unavailable for rate limits");
                ApiError::Unavailable(err.to_string())
            }
            LimitError::Store(e) => e.into(),
        }
    }
}

impl From<crate::auth::dpop::DeviceAuthError> for ApiError {
    fn from(err: crate::auth::dpop::DeviceAuthError) -> Self {
        use crate::auth::dpop::DeviceAuthError;
        match err {
            DeviceAuthError::InvalidProof(why) => ApiError::InvalidDpop(why),
            DeviceAuthError::Replay(e) => e.into(),
        }
    }
}

impl From<crate::auth::notifier::NotifierAuthError> for ApiError {
    fn from(err: crate::auth::notifier::NotifierAuthError) -> Self {
        use crate::auth::notifier::NotifierAuthError;
        match err {
            NotifierAuthError::Unauthorized(why) => ApiError::Unauthorized(why),
            NotifierAuthError::MissingScope(why) => ApiError::InsufficientScope(why),
            NotifierAuthError::Store(e) => e.into(),
            NotifierAuthError::Replay(e) => e.into(),
            NotifierAuthError::Binding(why) => ApiError::Internal(anyhow::anyhow!(why)),
        }
    }
}

impl From<crate::notify::AcceptError> for ApiError {
    fn from(err: crate::notify::AcceptError) -> Self {
        use crate::notify::AcceptError;
        match err {
            AcceptError::Invalid(why) => ApiError::invalid(why),
            AcceptError::KeyReused => ApiError::IdempotencyKeyReused(err.to_string()),
            AcceptError::InProgress => ApiError::Conflict(err.to_string()),
            AcceptError::Behind(why) => ApiError::Unavailable(why),
            AcceptError::Limit(e) => e.into(),
            AcceptError::Store(e) => e.into(),
            AcceptError::Internal(e) => ApiError::Internal(e.into()),
            AcceptError::Stopped(why) => ApiError::Unavailable(why),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::Unavailable("the store is unreachable; retry later".into())
            }
            StoreError::Other(e) => ApiError::Internal(e),
        }
    }
}

impl ApiError {
    /// The problem document of this error (an internal error is logged here
    /// and shows no detail).
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let detail = match self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                None
            }
            other => Some(other.to_string()),
        };
        Problem {
            kind: format!("{PROBLEM_BASE}{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).expect("a problem document always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidDpop(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "DPoP algs=\"RS256 RS512 ES256\", error=\"invalid_dpop_proof\"",
                    ),
                );
            }
            ApiError::InsufficientScope(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::RateLimited { limit, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(limit.retry_after_seconds()),
                );
                write_headers(&limit, headers);
            }
            _ => {}
        }
        response
    }
}

/// Writes a verdict's `RateLimit-*` headers.
pub fn write_headers(verdict: &crate::limits::Verdict, headers: &mut HeaderMap) {
    for (name, value) in verdict.headers() {
        headers.insert(name, HeaderValue::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Verdict;

    #[test]
    fn verdict_headers_and_retry_after_round_up() {
        let verdict = Verdict {
            allowed: false,
            limit: 20,
            remaining: 0,
            reset_seconds: 2,
            retry_after_ms: 1001,
        };
        assert_eq!(verdict.retry_after_seconds(), 2);
        let mut headers = HeaderMap::new();
        write_headers(&verdict, &mut headers);
        assert_eq!(headers["ratelimit-limit"], "20");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "2");
    }
}
