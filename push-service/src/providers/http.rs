//! What the APNs and FCM clients share: addresses, `Retry-After`, credential loading; FCM's HTTP client.

use crate::providers::SetupError;
use std::sync::Arc;
use std::time::Duration;

use super::Outcome;
use crate::config::ProviderSettings;
use crate::crypto::Sealer;
use crate::delivery::ProviderKind;
use crate::store::{CredentialRecord, Store};

/// An HTTP client for FCM: TLS with the Mozilla roots (plus `ca_pem`), HTTP/2
/// or HTTP/1.1 as the server offers, long-lived connections with keep-alive
/// PINGs, no Nagle, bounded time. (APNs, HTTP/2 only: `wire`.)
pub fn client(settings: &ProviderSettings) -> Result<reqwest::Client, SetupError> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(Some(Duration::from_secs(60)))
        .http2_keep_alive_while_idle(true)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(proxy) = &settings.proxy {
        let proxy = reqwest::Proxy::https(proxy.address())
            .map_err(|_| SetupError("provider_proxy: not usable by the HTTP/1.1 client".into()))?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    if let Some(ca) = &settings.ca_pem {
        let roots = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .map_err(|e| format!("provider_ca_file: {e}"))?;
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(|e| SetupError(e.to_string()))
}

/// `base` with `segments` added to its path, each percent-encoded: a parsed
/// address per provider, not a string parsed again for every request.
pub fn with_path(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// `Retry-After` in seconds (the HTTP-date form is read as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Loads and decrypts an app's credential for a provider.
#[derive(Clone)]
pub struct CredentialSource {
    pub store: Arc<dyn Store>,
    pub sealer: Sealer,
}

impl CredentialSource {
    /// The credential record and its opened secret; `Ok(None)` when there is none.
    /// A store outage is a retry; a secret that does not decrypt is a configuration
    /// error (this node's master key differs from the one that stored it).
    pub async fn load(
        &self,
        app_id: &str,
        provider: ProviderKind,
    ) -> Result<Option<(CredentialRecord, Vec<u8>)>, Outcome> {
        let Some(record) = self
            .store
            .get_credential(app_id, provider)
            .await
            .map_err(|e| Outcome::Retry {
                reason: format!("store: {e}"),
                after: None,
            })?
        else {
            return Ok(None);
        };
        let secret = self
            .sealer
            .open(
                &record.sealed,
                &crate::credentials::credential_aad(app_id, provider),
            )
            .map_err(|e| {
                Outcome::CredentialError(format!(
                    "{provider}: {e}; every node must share the master key that stored it"
                ))
            })?;
        Ok(Some((record, secret)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_added_to_the_base_address() {
        let cases = [
            (
                "https://api.push.apple.com",
                &["3", "device", "ab12"][..],
                "https://api.push.apple.com/3/device/ab12",
            ),
            (
                "http://127.0.0.1:8080/",
                &["3", "device", "ab12"][..],
                "http://127.0.0.1:8080/3/device/ab12",
            ),
            (
                "http://127.0.0.1:8080/prefix",
                &["3", "device", "ab12"][..],
                "http://127.0.0.1:8080/prefix/3/device/ab12",
            ),
            (
                "https://fcm.googleapis.com",
                &["v1", "projects", "p-1", "messages:send"][..],
                "https://fcm.googleapis.com/v1/projects/p-1/messages:send",
            ),
            // A segment cannot add segments or a query of its own.
            ("https://h", &["a/b?c"][..], "https://h/a%2Fb%3Fc"),
        ];
        for (base, segments, want) in cases {
            let base = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                with_path(&base, segments).as_str(),
                want,
                "{base} + {segments:?}"
            );
        }
    }
}
