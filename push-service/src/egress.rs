//! The egress proxy provider connections go through, when there is one:
//! `provider_proxy`, else the `HTTPS_PROXY` environment variable that HTTP
//! clients commonly honour, with `NO_PROXY` naming the hosts reached
//! directly. A connection through it is a `CONNECT` tunnel (RFC 9110 §9.3.6)
//! carrying TLS to the provider end to end; the proxy sees only the host name.

use base64::Engine;

use crate::secret::Secret;

/// An HTTP proxy for provider connections. Its credentials never print.
#[derive(Clone)]
pub struct EgressProxy {
    /// Host and port the TCP connection goes to.
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` (Basic) from the address's user information.
    authorization: Option<Secret<String>>,
    /// The address as given, credentials included (for the HTTP/1.1 client).
    address: Secret<String>,
    /// `NO_PROXY` entries: `*`, a host, or a domain (`example.com` or
    /// `.example.com` covers its subdomains).
    bypass: Vec<String>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EgressProxy({}:{})", self.host, self.port)
    }
}

/// Why a proxy setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(pub String);

impl EgressProxy {
    /// The proxy from `setting` (`provider_proxy`), else from `HTTPS_PROXY` /
    /// `https_proxy` as `env` reads them; `NO_PROXY` / `no_proxy` apply to
    /// either. `Ok(None)`: connections go directly.
    pub fn configured(
        setting: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<EgressProxy>, ProxyError> {
        let read = |names: [&str; 2]| {
            names
                .into_iter()
                .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
        };
        let text = match setting.trim() {
            "" => match read(["HTTPS_PROXY", "https_proxy"]) {
                Some(text) => text,
                None => return Ok(None),
            },
            text => text.to_owned(),
        };
        let text = text.trim();
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let url = url::Url::parse(&with_scheme)
            .map_err(|e| ProxyError(format!("not an address ({e})")))?;
        if url.scheme() != "http" {
            return Err(ProxyError(format!(
                "{}:// is not supported: the proxy is spoken to in plain HTTP \
                 (http://host:port), the tunnel carries TLS to the provider",
                url.scheme()
            )));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(ProxyError("the address has no host".into())),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let authorization = (!url.username().is_empty()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let pair = format!(
                "{}:{}",
                decode(url.username()),
                decode(url.password().unwrap_or(""))
            );
            Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        });
        let bypass = read(["NO_PROXY", "no_proxy"])
            .map(|list| {
                list.split(',')
                    .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(EgressProxy {
            host,
            port,
            authorization,
            address: Secret::new(with_scheme),
            bypass,
        }))
    }

    /// Whether a connection to `host` goes through the proxy (`NO_PROXY` does
    /// not name it, its domain, or `*`).
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        !self.bypass.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// The `Proxy-Authorization` value, when the address carried credentials.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_ref().map(|a| a.expose().as_str())
    }

    /// The address as configured (credentials included), for reqwest.
    pub fn address(&self) -> &str {
        self.address.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Environment variables as (name, value).
    type Vars = &'static [(&'static str, &'static str)];
    /// (setting, environment, the proxy's host and port or none)
    type Row = (&'static str, Vars, Option<(&'static str, u16)>);

    fn env(pairs: Vars) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_setting_comes_first_then_the_environment() {
        let table: [Row; 6] = [
            ("", &[], None),
            ("", &[("HTTPS_PROXY", "")], None),
            (
                "",
                &[("HTTPS_PROXY", "http://egress:3128")],
                Some(("egress", 3128)),
            ),
            (
                "",
                &[("https_proxy", "egress.internal:8080")],
                Some(("egress.internal", 8080)),
            ),
            (
                "http://10.0.0.7:3128",
                &[("HTTPS_PROXY", "http://other:1")],
                Some(("10.0.0.7", 3128)),
            ),
            ("http://[fd00::1]:3128", &[], Some(("fd00::1", 3128))),
        ];
        for (setting, vars, want) in table {
            let got = EgressProxy::configured(setting, &env(vars)).expect(setting);
            assert_eq!(
                got.as_ref().map(|p| (p.host.as_str(), p.port)),
                want,
                "{setting:?} {vars:?}"
            );
        }
    }

    #[test]
    fn what_cannot_be_used_is_refused() {
        for setting in ["https://egress:3128", "socks5://egress:1080", "http://"] {
            assert!(
                EgressProxy::configured(setting, &env(&[])).is_err(),
                "{setting}"
            );
        }
    }

    #[test]
    fn credentials_become_basic_auth_and_never_print() {
        let proxy = EgressProxy::configured("http://push%40acme:s3cr%3At@egress:3128", &env(&[]))
            .expect("valid")
            .expect("set");
        // base64("push@acme:s3cr:t")
        assert_eq!(
            proxy.authorization(),
            Some("Basic cHVzaEBhY21lOnMzY3I6dA==")
        );
        let printed = format!("{proxy:?}");
        assert!(
            !printed.contains("s3cr") && !printed.contains("push"),
            "{printed}"
        );
        let without = EgressProxy::configured("http://egress:3128", &env(&[]))
            .expect("valid")
            .expect("set");
        assert_eq!(without.authorization(), None);
    }

    #[test]
    fn no_proxy_names_hosts_and_domains() {
        let proxy = EgressProxy::configured(
            "http://egress:3128",
            &env(&[(
                "NO_PROXY",
                "localhost, .internal.example,127.0.0.1,googleapis.com",
            )]),
        )
        .expect("valid")
        .expect("set");
        let table = [
            ("api.push.apple.com", true),
            ("localhost", false),
            ("fcm.internal.example", false),
            ("internal.example", false),
            ("notinternal.example", true),
            ("127.0.0.1", false),
            ("fcm.googleapis.com", false),
            ("googleapis.com.evil", true),
        ];
        for (host, proxied) in table {
            assert_eq!(proxy.applies_to(host), proxied, "{host}");
        }
        let all = EgressProxy::configured("http://egress:3128", &env(&[("no_proxy", "*")]))
            .expect("valid")
            .expect("set");
        assert!(!all.applies_to("api.push.apple.com"));
    }
}
