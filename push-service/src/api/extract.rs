//! Extractors that answer in the API's own problem format.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::notify::{NotifyRequest, Submission};

/// JSON body whose rejections (syntax, types, size, content type) are problem+json.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_json(req, state, state.config.max_body_bytes)
            .await
            .map(ApiJson)
    }
}

/// The body of a notify request: larger than others by what the largest
/// content (`max_content_bytes`) takes in base64. The route's own
/// `DefaultBodyLimit` lets it through. With its `Idempotency-Key` header, as
/// the acceptor takes it: a request without a key is read straight into a
/// notify request; a keyed one (hashed from its JSON), or one that does not
/// read as a notify request (answered by the acceptor as before), as JSON.
pub struct NotifySubmission(pub Submission);

/// The body limit of a notify request.
pub fn notify_body_limit(config: &crate::Config) -> usize {
    match config.max_content_bytes {
        0 => config.max_body_bytes,
        max => config.max_body_bytes + crate::inbox::max_jwe_bytes(max),
    }
}

impl FromRequest<AppState> for NotifySubmission {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = req.headers().get("idempotency-key").cloned();
        let limit = notify_body_limit(&state.config);
        let bytes = read_body(req, state, limit).await?;
        if key.is_none() {
            if let Ok(request) = serde_json::from_slice::<NotifyRequest>(&bytes) {
                return Ok(NotifySubmission(Submission::Parsed(Box::new(request))));
            }
        }
        // Errors are told as they always were: malformed JSON first (400),
        // then the key, then what the acceptor finds in the JSON (422).
        let body: serde_json::Value = parse_json(&bytes, limit)?;
        let idempotency_key = match key {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(idempotency_key)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid("`Idempotency-Key`: 1 to 255 visible ASCII characters")
                    })?,
            ),
        };
        Ok(NotifySubmission(Submission::Json {
            idempotency_key,
            body,
        }))
    }
}

/// A JSON body read first as `S`, straight from its bytes, and when it does
/// not read so, as `J`, with every answer `ApiJson<J>` gives (syntax, size,
/// content type, shape). For a body whose common form has a type of its own
/// that makes no JSON tree on the way, while the rest keeps its old reading.
pub struct StraightOr<S, J>(pub Reading<S, J>);

/// What [`StraightOr`] read.
pub enum Reading<S, J> {
    Straight(S),
    Json(J),
}

impl<S: DeserializeOwned, J: DeserializeOwned> FromRequest<AppState> for StraightOr<S, J> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let bytes = read_body(req, state, limit).await?;
        if let Ok(straight) = serde_json::from_slice::<S>(&bytes) {
            return Ok(StraightOr(Reading::Straight(straight)));
        }
        parse_json(&bytes, limit).map(|json| StraightOr(Reading::Json(json)))
    }
}

/// An idempotency key as the API takes it: 1 to 255 visible ASCII characters.
pub fn idempotency_key(raw: &str) -> Option<&str> {
    (!raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .then_some(raw)
}

/// Reads a JSON body of at most `limit` bytes (the route's `DefaultBodyLimit`
/// must allow as much).
async fn read_json<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(req, state, limit).await?;
    parse_json(&bytes, limit)
}

/// A body of at most `limit` bytes, declared JSON, with no NUL escaped in it.
async fn read_body(
    req: Request,
    state: &AppState,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v.strip_prefix("application/")
                .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
        });
    if !json_type {
        return Err(ApiError::UnsupportedMediaType(
            "expected a body with `Content-Type: application/json`".into(),
        ));
    }
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
    // PostgreSQL cannot store a NUL in text: refused here, on every backend.
    if contains_escaped_nul(&bytes) {
        return Err(ApiError::invalid(
            "a string holds a NUL character (\\u0000), which cannot be stored",
        ));
    }
    Ok(bytes)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, ApiError> {
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(json_rejection(rejection, limit)),
    }
}

/// Whether a JSON text holds the escape of a NUL character (`\u0000`), not
/// counting an escaped backslash before it (`\\u0000` is the text `\u0000`).
fn contains_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.len() >= i + 6 && json[i + 1] == b'u' && &json[i + 2..i + 6] == b"0000" {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fn json_rejection(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "expected a body with `Content-Type: application/json`".into(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(limit)
        }
        other => ApiError::MalformedJson(other.body_text()),
    }
}

/// Query string whose rejections are problem+json.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))
    }
}

/// Proof that the caller holds the operator's admin token, and where it called from.
pub struct AdminAuth {
    pub source: Option<String>,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.operator_api_on_admin_listen
            && parts
                .extensions
                .get::<super::ops::OnAdminListener>()
                .is_none()
        {
            return Err(ApiError::not_found(
                "the operator API is served on admin_listen only",
            ));
        }
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::Unauthorized("missing `Authorization: Bearer <admin token>`".into())
        })?;
        if state.config.admin_token_matches(token) {
            Ok(AdminAuth {
                source: crate::api::client_addr::source(parts),
            })
        } else {
            Err(ApiError::Unauthorized(
                "the admin token is not valid".into(),
            ))
        }
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_nul_is_found_and_escaped_backslashes_are_not() {
        for (json, found) in [
            (r#"{"a": "x\u0000y"}"#, true),
            (r#"{"a\u0000": 1}"#, true),
            (r#"{"a": "x\\u0000y"}"#, false),
            (r#"{"a": "x\\\u0000"}"#, true),
            (r#"{"a": "\u00001"}"#, true),
            (r#"{"a": "\u0001"}"#, false),
        ] {
            assert_eq!(
                super::contains_escaped_nul(json.as_bytes()),
                found,
                "{json}"
            );
        }
    }
}
