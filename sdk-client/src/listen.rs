//! Receiving on the direct channel: a Server-Sent-Events stream that reconnects with
//! `Last-Event-ID`, so nothing is missed and nothing arrives twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{decode_problem, signed_dpop_proof, Client, DeviceKey, Error, Signer};

/// A notification received on the direct channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// The stream's event id (pass it back as `Last-Event-ID`).
    pub event_id: String,
    /// The notification's JSON: `id`, `title`, `body`, `data`, `created_at`, …
    pub notification: serde_json::Value,
}

/// A listener on one registration's stream. Call [`Listener::next`] in a loop.
pub struct Listener<S: Signer = DeviceKey> {
    client: Client<S>,
    registration: String,
    last_event_id: Option<String>,
    response: Option<reqwest::Response>,
    buffer: String,
    failures: u32,
}

impl<S: Signer + Clone> Client<S> {
    /// Listens on a `direct` registration, from where the service's cursor stands.
    pub fn listen(&self, registration: &str) -> Listener<S> {
        self.listen_after(registration, None)
    }

    /// Listens, resuming after `last_event_id` (as saved from [`PushEvent::event_id`]).
    pub fn listen_after(&self, registration: &str, last_event_id: Option<String>) -> Listener<S> {
        Listener {
            client: self.clone(),
            registration: registration.to_owned(),
            last_event_id,
            response: None,
            buffer: String::new(),
            failures: 0,
        }
    }
}

impl<S: Signer + Clone> Listener<S> {
    /// The id of the last event returned.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Drops the connection; the next call reconnects with `Last-Event-ID`.
    pub fn disconnect(&mut self) {
        self.response = None;
        self.buffer.clear();
    }

    /// Waits for the next notification, reconnecting through network errors.
    /// A refusal by the service (problem+json) ends the listener with that error.
    pub async fn next(&mut self) -> Result<PushEvent, Error> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(event);
            }
            if self.response.is_none() {
                self.connect().await?;
            }
            let Some(response) = self.response.as_mut() else {
                continue;
            };
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    self.failures = 0;
                    self.buffer
                        .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
                }
                Ok(None) | Err(_) => self.disconnect(),
            }
        }
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let url = format!(
            "{}/v1/registrations/{}/events",
            self.client.base, self.registration
        );
        loop {
            let mut request = self
                .client
                .http
                .get(&url)
                .timeout(Duration::from_secs(24 * 3600))
                .header("accept", "text/event-stream")
                .header("dpop", signed_dpop_proof(&self.client.key, "GET", &url)?);
            if let Some(last) = &self.last_event_id {
                request = request.header("last-event-id", last);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.response = Some(response);
                    self.buffer.clear();
                    return Ok(());
                }
                Ok(response)
                    if !(response.status().is_server_error()
                        || response.status().as_u16() == 429) =>
                {
                    return Err(decode_problem(response).await);
                }
                Err(e) if crate::is_pin_mismatch(&e) => return Err(Error::PinMismatch),
                _ => {
                    self.failures += 1;
                    tokio::time::sleep(self.client.retry.delay(self.failures.min(10), None)).await;
                }
            }
        }
    }

    /// Parses one complete event out of the buffer, if there is one.
    fn take_event(&mut self) -> Option<PushEvent> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::from("message"), Vec::new());
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => kind = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if let Some(id) = &id {
                self.last_event_id = Some(id.clone());
            }
            if kind == "notification" && !data.is_empty() {
                if let Ok(notification) = serde_json::from_str(&data.join("\n")) {
                    return Some(PushEvent {
                        event_id: id.unwrap_or_default(),
                        notification,
                    });
                }
            }
        }
        None
    }
}
