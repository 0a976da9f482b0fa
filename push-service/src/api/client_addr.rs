//! Who is calling: the client address, taken from `Forwarded` / `X-Forwarded-For`
//! only when the hop that sent them is a trusted proxy (`trusted_proxies`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::net::{canonical, Cidr};

/// The address a request is counted and audited under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client address: the TCP peer, unless the peer is a trusted proxy; then the
/// rightmost hop of `Forwarded` (or else `X-Forwarded-For`) that is not itself a
/// trusted proxy. An untrusted peer's headers are ignored, so nobody can choose
/// the address they are counted under by sending one.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    let hops = forwarded_hops(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !is_trusted(*hop) {
            break;
        }
    }
    canonical(client)
}

/// The hops of `Forwarded: for=…` (RFC 7239), else of `X-Forwarded-For`, in order;
/// unparsable entries (`unknown`, obfuscated names) end the list there.
fn forwarded_hops(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut hops = Vec::new();
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let for_value = element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            match for_value.and_then(parse_node) {
                Some(ip) => hops.push(ip),
                None => hops.clear(),
            }
        }
        return hops;
    }
    for value in headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for part in value.split(',') {
            match parse_node(part.trim()) {
                Some(ip) => hops.push(ip),
                None => hops.clear(),
            }
        }
    }
    hops
}

/// `1.2.3.4`, `"[2001:db8::1]:4711"`, `1.2.3.4:80`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// The caller's address as the connection shows it (a proxy's, behind one).
pub fn source(parts: &Parts) -> Option<String> {
    if let Some(ClientAddr(ip)) = parts.extensions.get() {
        return Some(ip.to_string());
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// Attaches [`ClientAddr`] to a request, for the audit log, and answers it
/// for the limiter. `None` for a request without a peer (none comes so from a
/// listener).
pub fn attach(
    state: &crate::api::AppState,
    request: &mut axum::extract::Request,
) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let addr = client_addr(peer, request.headers(), &state.config.trusted_proxies);
    request.extensions_mut().insert(ClientAddr(addr));
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("cidr");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("cidr")
            .contains("8.8.8.8".parse().expect("ip")));
        assert!(Cidr::parse("fd00::/8")
            .expect("cidr")
            .contains("fd12::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let stranger: IpAddr = "203.0.113.9".parse().expect("ip");
        let trusted = [Cidr::parse("10.0.0.0/8").expect("cidr")];
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        // (peer, headers, client)
        let cases = [
            // No proxy trusted: the peer, whatever it says.
            (
                stranger,
                headers(&[("x-forwarded-for", "1.1.1.1")]),
                stranger,
            ),
            // A trusted proxy: the hop it saw.
            (
                proxy,
                headers(&[("x-forwarded-for", "198.51.100.7")]),
                ip("198.51.100.7"),
            ),
            // A client that sent its own X-Forwarded-For: the proxy appended the
            // real address; the spoofed one on the left is never reached.
            (
                proxy,
                headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7")]),
                ip("198.51.100.7"),
            ),
            // Two trusted proxies in a row.
            (
                proxy,
                headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.9")]),
                ip("198.51.100.7"),
            ),
            // Forwarded wins over X-Forwarded-For.
            (
                proxy,
                headers(&[
                    ("forwarded", "for=\"[2001:db8::1]:4711\";proto=https"),
                    ("x-forwarded-for", "1.1.1.1"),
                ]),
                ip("2001:db8::1"),
            ),
            // A trusted proxy without a header: the proxy itself.
            (proxy, headers(&[]), proxy),
            // Garbage in the header: the proxy.
            (proxy, headers(&[("x-forwarded-for", "unknown")]), proxy),
        ];
        for (i, (peer, h, want)) in cases.into_iter().enumerate() {
            assert_eq!(client_addr(peer, &h, &trusted), want, "case {i}");
        }
    }
}
