//! What the bindings raise: Kotlin `PushClientException.*`, Swift `PushClientError`.

/// A failed call. `Problem` carries the service's problem document.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum PushClientError {
    /// The service refused the request (problem+json).
    #[error("{status} {title} ({problem_type})")]
    Problem {
        /// The stable kind URI, e.g. `urn:push-service:problem:not-found`.
        problem_type: String,
        title: String,
        status: u16,
        detail: Option<String>,
    },
    /// The TLS chain matched none of the pins; nothing was sent.
    #[error("the server's certificate matches none of the pinned keys; nothing was sent")]
    PinMismatch,
    /// Network, TLS or timeout failure, after the retries.
    #[error("transport: {detail}")]
    Transport { detail: String },
    /// The service answered something that is not the API.
    #[error("unexpected response: {detail}")]
    UnexpectedResponse { detail: String },
    /// The signer, the decrypter or a key refused or failed.
    #[error("key: {detail}")]
    Key { detail: String },
    /// `disconnect()` ended a waiting `next()`; call `next()` again to reconnect.
    #[error("the listener was disconnected")]
    Disconnected,
    /// A bad argument: base URL, pin, JWK.
    #[error("configuration: {detail}")]
    Config { detail: String },
}

impl From<sdk_client::Error> for PushClientError {
    fn from(error: sdk_client::Error) -> Self {
        use sdk_client::Error as E;
        match error {
            E::Problem(p) => PushClientError::Problem {
                problem_type: p.kind,
                title: p.title,
                status: p.status,
                detail: p.detail,
            },
            E::PinMismatch => PushClientError::PinMismatch,
            E::Transport(e) => PushClientError::Transport {
                detail: e.to_string(),
            },
            E::UnexpectedResponse(detail) => PushClientError::UnexpectedResponse { detail },
            E::Key(detail) => PushClientError::Key { detail },
            E::Config(detail) => PushClientError::Config { detail },
        }
    }
}

/// What a platform [`crate::Signer`] or [`crate::Decrypter`] raises: the key
/// is gone, the user did not authenticate, the keystore failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum KeystoreError {
    #[error("{detail}")]
    Failed { detail: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeystoreError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeystoreError::Failed {
            detail: error.reason,
        }
    }
}
