//! The client object and the direct-channel listener.

use std::sync::Arc;
use std::time::Duration;

use crate::keys::{PlatformDecrypter, PlatformSigner};
use crate::records::public_encryption_key;
use crate::{
    ClientOptions, Content, Decrypter, InboxItem, NewRegistration, PushClientError, PushEvent,
    RegistrationInfo, Signer,
};

/// A device's client of push-service, signing through the app's [`Signer`].
#[derive(uniffi::Object)]
pub struct PushClient {
    inner: sdk_client::Client<PlatformSigner>,
}

#[uniffi::export]
impl PushClient {
    /// A client of the service at `base_url` (its public URL). The signer is
    /// asked for its algorithm and public JWK once, here; both are checked
    /// (ES256 with P-256, RS256/RS512 with RSA ≥ 2048 bits, no private member).
    #[uniffi::constructor]
    pub fn new(
        base_url: String,
        signer: Arc<dyn Signer>,
        options: ClientOptions,
    ) -> Result<Arc<Self>, PushClientError> {
        let mut builder =
            sdk_client::Client::builder_with_signer(&base_url, PlatformSigner::new(signer)?);
        for pin in &options.pins {
            builder = builder.pin(sdk_client::Pin::from_base64(pin)?);
        }
        for der in options.root_certificates {
            builder = builder.add_root_certificate(sdk_client::CertificateDer::from(der));
        }
        if let Some(ms) = options.timeout_ms {
            builder = builder.timeout(Duration::from_millis(ms));
        }
        if let Some(attempts) = options.attempts {
            builder = builder.retry(sdk_client::RetryPolicy {
                attempts: attempts.max(1),
                ..sdk_client::RetryPolicy::default()
            });
        }
        Ok(Arc::new(PushClient {
            inner: builder.build()?,
        }))
    }

    /// The RFC 7638 thumbprint of the device key: what the service binds
    /// registrations to.
    pub fn key_thumbprint(&self) -> Result<String, PushClientError> {
        Ok(sdk_client::jwk_thumbprint(
            &sdk_client::Signer::public_jwk(self.inner.key()),
        )?)
    }

    /// Listens on a `direct` registration, resuming after `last_event_id` when
    /// given (from [`PushEvent::event_id`]).
    pub fn listen(
        &self,
        registration: String,
        last_event_id: Option<String>,
    ) -> Arc<DirectListener> {
        Arc::new(DirectListener::new(
            self.inner.listen_after(&registration, last_event_id),
        ))
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl PushClient {
    /// Registers this device for `app`; one key may hold several registrations.
    pub async fn register(
        &self,
        app: String,
        registration: NewRegistration,
    ) -> Result<RegistrationInfo, PushClientError> {
        let registration = sdk_client::NewRegistration::try_from(registration)?;
        Ok(self.inner.register(&app, &registration).await?.into())
    }

    /// Reads one of this device's registrations.
    pub async fn status(&self, registration: String) -> Result<RegistrationInfo, PushClientError> {
        Ok(self.inner.status(&registration).await?.into())
    }

    /// Replaces the provider token: call it from `onNewToken` (FCM) or
    /// `didRegisterForRemoteNotificationsWithDeviceToken` (APNs).
    pub async fn rotate(
        &self,
        registration: String,
        token: String,
    ) -> Result<RegistrationInfo, PushClientError> {
        Ok(self.inner.rotate(&registration, &token).await?.into())
    }

    /// Replaces the key content is sealed to (a public JWK, JSON text).
    pub async fn rotate_encryption_key(
        &self,
        registration: String,
        public_jwk: String,
    ) -> Result<RegistrationInfo, PushClientError> {
        let key = public_encryption_key(&public_jwk)?;
        Ok(self
            .inner
            .rotate_encryption_key(&registration, &key)
            .await?
            .into())
    }

    /// Deletes the registration (sign-out, uninstall).
    pub async fn delete(&self, registration: String) -> Result<(), PushClientError> {
        Ok(self.inner.delete(&registration).await?)
    }

    /// The pending items of the registration's inbox.
    pub async fn inbox(&self, registration: String) -> Result<Vec<InboxItem>, PushClientError> {
        Ok(self
            .inner
            .inbox(&registration)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Fetches an item and opens it through `decrypter`.
    pub async fn fetch(
        &self,
        registration: String,
        item: String,
        decrypter: Arc<dyn Decrypter>,
    ) -> Result<Content, PushClientError> {
        // Not `sdk_client::Client::fetch`: its future holds the `&dyn Decrypter`
        // across the request, which is not `Send`; here the decrypter comes in
        // only after the JWE has arrived.
        let jwe = self.inner.fetch_jwe(&registration, &item).await?;
        Ok(sdk_client::open_content(&jwe, &PlatformDecrypter(decrypter))?.into())
    }

    /// Fetches an item as it is stored: the compact JWE, not opened.
    pub async fn fetch_jwe(
        &self,
        registration: String,
        item: String,
    ) -> Result<String, PushClientError> {
        Ok(self.inner.fetch_jwe(&registration, &item).await?)
    }

    /// Acknowledges an item: the service drops its content.
    pub async fn ack(&self, registration: String, item: String) -> Result<(), PushClientError> {
        Ok(self.inner.ack(&registration, &item).await?)
    }
}

/// A listener on one `direct` registration's stream: call `next()` in a loop.
/// It reconnects through network errors with `Last-Event-ID`, so nothing is
/// missed and nothing arrives twice; a refusal by the service ends it.
#[derive(uniffi::Object)]
pub struct DirectListener {
    inner: tokio::sync::Mutex<sdk_client::Listener<PlatformSigner>>,
    /// Kept apart from `inner`, which a waiting `next()` holds.
    last_event_id: std::sync::Mutex<Option<String>>,
    /// Wakes a waiting `next()` when the app disconnects.
    stop: tokio::sync::Notify,
}

impl DirectListener {
    pub(crate) fn new(listener: sdk_client::Listener<PlatformSigner>) -> Self {
        DirectListener {
            last_event_id: std::sync::Mutex::new(listener.last_event_id().map(str::to_owned)),
            inner: tokio::sync::Mutex::new(listener),
            stop: tokio::sync::Notify::new(),
        }
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl DirectListener {
    /// Waits for the next notification. Cancelling the caller's coroutine or
    /// task cancels the wait; `disconnect()` ends it with `Disconnected`.
    pub async fn next(&self) -> Result<PushEvent, PushClientError> {
        let mut listener = self.inner.lock().await;
        let event = tokio::select! {
            event = listener.next() => event?,
            () = self.stop.notified() => {
                listener.disconnect();
                return Err(PushClientError::Disconnected);
            }
        };
        if let Ok(mut last) = self.last_event_id.lock() {
            *last = Some(event.event_id.clone());
        }
        Ok(event.into())
    }
}

#[uniffi::export]
impl DirectListener {
    /// The id of the last event returned: keep it to resume with
    /// `listen(registration, lastEventId)` after the app restarts.
    pub fn last_event_id(&self) -> Option<String> {
        self.last_event_id.lock().ok().and_then(|last| last.clone())
    }

    /// Drops the connection (the app goes to the background): a waiting
    /// `next()` ends with `Disconnected`; the next call reconnects where the
    /// stream stopped.
    pub fn disconnect(&self) {
        match self.inner.try_lock() {
            Ok(mut listener) => listener.disconnect(),
            // A `next()` holds the listener: it takes this permit (now, or
            // when it starts waiting) and drops the connection itself.
            Err(_) => self.stop.notify_one(),
        }
    }
}
