//! Requests the service makes to URLs that someone else named (a notifier's
//! `jwks_url`, a service account's `token_uri`): `https` only, and never to an
//! address inside the network (loopback, private, link-local, metadata)
//! unless the operator allows it (`allow_private_fetch`). Names are resolved by
//! our own resolver, which refuses such addresses, so a name that resolves
//! inside (or changes to, after the check) is refused before any connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// What outbound fetches may reach.
#[derive(Debug, Clone, Default)]
pub struct FetchPolicy {
    /// Inside addresses and `http://` allowed (tests, an operator's private JWKS host).
    pub allow_private: bool,
    /// Prefixes a service account's `token_uri` must start with.
    pub token_uri_allow: Vec<String>,
}

/// Google's OAuth token endpoints, the default `fcm_token_uri_allow`.
pub const GOOGLE_TOKEN_URIS: &[&str] = &[
    "https://oauth2.googleapis.com/token",
    "https://accounts.google.com/o/oauth2/token",
    "https://www.googleapis.com/oauth2/v4/token",
];

/// Why a URL someone else named is not fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("not a URL ({0})")]
    NotAUrl(String),
    #[error("must be an https:// URL")]
    NotHttps,
    #[error("must not carry credentials")]
    Credentials,
    #[error("has no host")]
    NoHost,
    #[error("{0} is an address inside the network")]
    InsideAddress(IpAddr),
    #[error("`{0}` is an address inside the network")]
    InsideName(String),
    /// The name resolved to an address inside the network.
    #[error("{0}")]
    ResolvesInside(String),
    #[error("must be Google's token endpoint ({0}); `fcm_token_uri_allow` names others")]
    NotAnAllowedTokenUri(String),
}

/// Host names that always mean the cloud's metadata service.
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata", "instance-data"];

impl FetchPolicy {
    /// Checks a URL's form and, for an IP literal, its address (no resolution).
    pub fn check_url(&self, raw: &str) -> Result<url::Url, UrlRefused> {
        let url = url::Url::parse(raw).map_err(|e| UrlRefused::NotAUrl(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            _ => return Err(UrlRefused::NotHttps),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefused::Credentials);
        }
        match url.host() {
            None => Err(UrlRefused::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map(|_| url.clone()),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map(|_| url.clone()),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !self.allow_private
                    && (METADATA_NAMES.contains(&name.as_str())
                        || name == "localhost"
                        || name.ends_with(".localhost")
                        || name.ends_with(".internal")
                        || name.ends_with(".local"))
                {
                    return Err(UrlRefused::InsideName(name));
                }
                Ok(url.clone())
            }
        }
    }

    /// Checks the URL, then resolves its host and refuses it when an address is
    /// inside the network, without connecting (what registration does: refuse
    /// now, not at the first fetch). A name that does not resolve (yet) passes:
    /// every fetch resolves it again through the same check.
    pub async fn check_resolved(&self, raw: &str) -> Result<url::Url, UrlRefused> {
        let url = self.check_url(raw)?;
        if let Some(url::Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            match resolve(name, port, self.allow_private).await {
                Ok(_) | Err(Refused::Unresolved(_)) => {}
                Err(Refused::Inside(why)) => return Err(UrlRefused::ResolvesInside(why)),
            }
        }
        Ok(url)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), UrlRefused> {
        if !self.allow_private && is_inside(ip) {
            return Err(UrlRefused::InsideAddress(ip));
        }
        Ok(())
    }

    /// A service account's `token_uri`: one of the allowed prefixes, and (resolved
    /// now) an address outside the network.
    pub async fn check_token_uri(&self, raw: &str) -> Result<url::Url, UrlRefused> {
        if !self
            .token_uri_allow
            .iter()
            .any(|p| raw.starts_with(p.as_str()))
        {
            return Err(UrlRefused::NotAnAllowedTokenUri(
                self.token_uri_allow.join(", "),
            ));
        }
        self.check_resolved(raw).await
    }

    /// An HTTP client for such fetches: our resolver, no redirects, bounded time.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                allow_private: self.allow_private,
            }))
            .build()
    }
}

/// Whether an address is inside the network: loopback, private, link-local
/// (the metadata service's 169.254.169.254 among them), shared (CGNAT),
/// unspecified, broadcast, multicast, documentation, IPv6 unique-local, and
/// IPv4-mapped or NAT64 forms of any of those.
pub fn is_inside(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_inside(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_inside(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96 (NAT64) embeds an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return v4_inside(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || v6 == Ipv6Addr::from([0u8; 16])
        }
    }
}

fn v4_inside(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

/// Why a name was not used.
#[derive(Debug)]
enum Refused {
    /// It does not resolve (or not in time).
    Unresolved(String),
    /// It resolves to an address inside the network.
    Inside(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unresolved(why) | Refused::Inside(why) => f.write_str(why),
        }
    }
}

/// Resolves `name` and refuses it when any address is inside the network.
async fn resolve(name: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, Refused> {
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((name, port)),
    )
    .await
    .map_err(|_| Refused::Unresolved(format!("`{name}` did not resolve in time")))?
    .map_err(|_| Refused::Unresolved(format!("`{name}` does not resolve")))?
    .collect();
    if addrs.is_empty() {
        return Err(Refused::Unresolved(format!("`{name}` does not resolve")));
    }
    if !allow_private {
        if let Some(inside) = addrs.iter().find(|a| is_inside(a.ip())) {
            return Err(Refused::Inside(format!(
                "`{name}` resolves to {}, an address inside the network",
                inside.ip()
            )));
        }
    }
    Ok(addrs)
}

/// reqwest's resolver for outbound fetches: the addresses it connects to are the
/// ones checked here, so a name cannot change to an inside address between a
/// check and the connection.
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0, allow_private).await.map_err(
                |e| -> Box<dyn std::error::Error + Send + Sync> { e.to_string().into() },
            )?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// A socket error's kind in a few words (refused, reset, timeout, TLS, …).
pub fn io_cause(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset",
        K::ConnectionAborted => "connection aborted",
        K::TimedOut => "timeout",
        K::UnexpectedEof | K::BrokenPipe => "connection closed",
        K::InvalidData => "TLS: the provider's certificate or handshake was refused",
        _ => "i/o error",
    }
}

/// A network failure's cause in a few words (refused, reset, timeout, TLS, …);
/// never the URL, which holds an APNs device token.
pub fn network_cause(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    if error.is_timeout() {
        return "timeout".into();
    }
    let mut source = error.source();
    let mut words = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            words = Some(io_cause(io.kind()).to_owned());
            if io.kind() != std::io::ErrorKind::Other {
                break;
            }
        }
        let text = e.to_string();
        if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
            words = Some(format!("TLS: {text}"));
        } else if text.contains("dns error") || text.contains("failed to lookup") {
            words = Some("DNS lookup failed".into());
        }
        source = e.source();
    }
    words.unwrap_or_else(|| {
        if error.is_connect() {
            "connect failed".into()
        } else if error.is_request() || error.is_body() {
            "connection closed during the request".into()
        } else {
            "request failed".into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses() {
        for (ip, inside) in [
            ("127.0.0.1", true),
            ("10.0.0.1", true),
            ("172.16.5.4", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("255.255.255.255", true),
            ("::1", true),
            ("fd00:ec2::254", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("64:ff9b::a9fe:a9fe", true),
            ("8.8.8.8", false),
            ("142.250.74.74", false),
            ("2a00:1450:4001:82b::200a", false),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(is_inside(ip), inside, "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_connection() {
        let strict = FetchPolicy {
            allow_private: false,
            token_uri_allow: GOOGLE_TOKEN_URIS.iter().map(|s| s.to_string()).collect(),
        };
        for (url, ok) in [
            ("https://auth.example.com/jwks.json", true),
            ("http://auth.example.com/jwks.json", false),
            ("https://127.0.0.1:6379/", false),
            ("https://10.0.0.1/jwks", false),
            ("https://169.254.169.254/latest/meta-data/", false),
            ("https://[::1]/x", false),
            ("https://[::ffff:10.0.0.1]/x", false),
            (
                "https://metadata.google.internal/computeMetadata/v1/",
                false,
            ),
            ("https://localhost/x", false),
            ("https://user:pw@auth.example.com/", false),
            ("ftp://auth.example.com/", false),
        ] {
            assert_eq!(strict.check_url(url).is_ok(), ok, "{url}");
        }
        assert!(strict
            .check_token_uri("https://oauth2.googleapis.com/token")
            .await
            .is_ok());
        assert!(strict
            .check_token_uri("https://evil.example.com/token")
            .await
            .is_err());
        assert!(strict
            .check_token_uri("http://10.0.0.1/token")
            .await
            .is_err());
        let open = FetchPolicy {
            allow_private: true,
            token_uri_allow: vec!["https://127.0.0.1:".into()],
        };
        assert!(open.check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(open
            .check_token_uri("https://127.0.0.1:4443/token")
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused() {
        let strict = FetchPolicy::default();
        // `localhost` is refused by name; a name that resolves to loopback by address.
        let err = resolve("localhost", 443, false).await.expect_err("inside");
        assert!(matches!(err, Refused::Inside(_)), "{err}");
        // A name that does not resolve passes the registration check.
        assert!(strict
            .check_resolved("https://no-such-host.invalid/jwks")
            .await
            .is_ok());
        assert!(strict.check_resolved("https://localhost/").await.is_err());
        assert!(resolve("localhost", 443, true).await.is_ok());
    }
}
