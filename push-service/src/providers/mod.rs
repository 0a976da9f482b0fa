//! Delivery channels behind one trait. The dispatcher knows [`Provider`], never a provider's insides.

pub mod apns;
pub mod circuit;
pub mod direct;
pub mod fcm;
pub mod http;
pub mod outcome;
pub mod wire;

use crate::delivery::ProviderKind;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::notification::Content;

/// One delivery attempt: a notification to one registration.
pub struct Delivery<'a> {
    pub app_id: &'a str,
    pub notification_id: &'a str,
    pub content: &'a Content,
    pub created_at: i64,
    pub expires_at: i64,
    pub registration_id: &'a str,
    pub token: Option<&'a str>,
    pub environment: Option<&'a str>,
    /// 1 for the first try.
    pub attempt: u32,
    /// The content sealed to this registration, when acceptance found it
    /// small enough to ride on the first attempt's payload.
    pub sealed: Option<&'a str>,
}

/// The inbox item a provider payload names: the notification id (the item's
/// id in the device's inbox) and, when it fits, the JWE itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxRef<'a> {
    pub id: &'a str,
    pub jwe: Option<&'a str>,
}

/// An alert's title and body as both providers' payloads write them
/// (absent members left out), for content written without a JSON tree.
#[derive(serde::Serialize)]
pub(crate) struct AlertText<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

impl<'a> AlertText<'a> {
    /// `None` when the content has neither a title nor a body.
    pub(crate) fn of(content: &'a Content) -> Option<Self> {
        (content.title.is_some() || content.body.is_some()).then_some(AlertText {
            title: content.title.as_deref(),
            body: content.body.as_deref(),
        })
    }
}

/// The largest payload APNs and FCM take (APNs VoIP takes 5 KiB; 4 KiB is
/// kept for all): an inline JWE goes only when the whole fits.
pub const MAX_PROVIDER_PAYLOAD: usize = 4096;

impl<'a> Delivery<'a> {
    /// The inbox item, for a notification with content.
    pub fn inbox(&self) -> Option<InboxRef<'a>> {
        self.content.inbox.then_some(InboxRef {
            id: self.notification_id,
            jwe: self.sealed,
        })
    }
}

impl Delivery<'_> {
    /// A zero TTL: delivered now or never (APNs `apns-expiration: 0`, FCM `ttl: "0s"`).
    pub fn now_or_never(&self) -> bool {
        crate::notification::now_or_never(self.created_at, self.expires_at)
    }
}

/// How an attempt ended, in the dispatcher's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it.
    Sent,
    /// Held on the direct channel until the device takes it or the TTL ends.
    Held,
    /// The token is dead: invalidate the registration with this reason.
    InvalidToken(String),
    /// The provider is overloaded or unreachable (429, 5xx, network): try again
    /// until the TTL, after `after` if the provider said.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// An answer the providers do not document: try again, a bounded number of times.
    Unknown {
        reason: String,
        after: Option<Duration>,
    },
    /// The provider refused the app's credential: open the app's circuit, keep the delivery.
    CredentialError(String),
    /// Permanent for this notification (payload): record the reason.
    Failed(String),
}

/// What stops this node from building a provider connection from a
/// credential (an unreadable key, a certificate that does not load): why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

impl From<String> for SetupError {
    fn from(message: String) -> Self {
        SetupError(message)
    }
}

impl From<&str> for SetupError {
    fn from(message: &str) -> Self {
        SetupError(message.to_owned())
    }
}

impl From<SetupError> for Outcome {
    fn from(err: SetupError) -> Self {
        Outcome::CredentialError(err.0)
    }
}

/// A delivery channel.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Which channel this is.
    fn kind(&self) -> ProviderKind;
    async fn send(&self, delivery: &Delivery<'_>) -> Outcome;
}

/// The providers of a node, by name.
#[derive(Clone)]
pub struct Providers {
    pub apns: Arc<dyn Provider>,
    pub fcm: Arc<dyn Provider>,
    pub direct: Arc<dyn Provider>,
}

impl Providers {
    pub fn get(&self, kind: ProviderKind) -> &Arc<dyn Provider> {
        match kind {
            ProviderKind::Apns => &self.apns,
            ProviderKind::Fcm => &self.fcm,
            ProviderKind::Direct => &self.direct,
        }
    }
}
