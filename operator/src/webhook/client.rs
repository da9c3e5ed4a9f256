//! Who sent a request, as far as the per-address limits are concerned. Pure.
//!
//! The TCP peer is the client unless it is one of the operator's trusted proxies
//! (`--webhook-trusted-proxy-cidrs`): then `X-Forwarded-For` is read from the right (the entry
//! the nearest proxy appended) and the first address that is *not* a trusted proxy is the
//! client. Everything left of it was written by the client itself and is never believed, and a
//! peer that is not trusted cannot make us read the header at all (anyone can send it).
//!
//! Addresses are then turned into limit keys ([`limit_key`]): IPv6 clients are grouped by /64,
//! since one host usually owns a whole /64 and could otherwise rotate addresses to escape a
//! limit; IPv4-mapped IPv6 addresses count as the IPv4 address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at (from the right): more trusted hops than this is a
/// misconfiguration, and the walk must stay cheap on a hostile header.
const MAX_FORWARDED_HOPS: usize = 16;

/// `ip` without the IPv4-mapped IPv6 wrapping.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is inside one of the trusted proxy networks.
pub fn is_trusted_proxy(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = unmapped(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443` or
/// `203.0.113.7:5000` (some proxies append the port).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(unmapped)
}

/// The client address of a request that arrived from TCP peer `peer`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = unmapped(peer);
    if !is_trusted_proxy(peer, trusted) {
        return peer;
    }
    // Header lines in order, entries left to right: the rightmost entry is the newest hop.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        match parse_entry(entry) {
            // A proxy hop: keep walking left.
            Some(ip) if is_trusted_proxy(ip, trusted) => client = ip,
            Some(ip) => return ip,
            // A trusted proxy forwarded garbage: the nearest address we can vouch for is the
            // proxy that wrote it.
            None => return client,
        }
    }
    client
}

/// The key a client address is limited under: IPv6 by /64, IPv4 as is.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match unmapped(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

/// Parses one trusted proxy network: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address
/// (`10.0.0.1`, taken as /32 or /128).
pub fn parse_trusted_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("{text:?} is not an IP network (CIDR) or address"))
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        h
    }

    fn trusted() -> Vec<IpNet> {
        ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|s| parse_trusted_proxy(s).unwrap())
            .collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let headers = xff(&["192.0.2.1"]);
        assert_eq!(
            client_address(ip("198.51.100.9"), &headers, &trusted()),
            ip("198.51.100.9")
        );
        // Without trusted proxies the header is never read.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers, &[]),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let t = trusted();
        // The client wrote a fake first entry; the ingress appended the real address.
        let headers = xff(&["192.0.2.1, 203.0.113.7"]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &headers, &t),
            ip("203.0.113.7")
        );
        // Two proxy hops, over two header lines, with ports and brackets.
        let headers = xff(&["192.0.2.1, 203.0.113.7:5000", "[fd00::2]:443"]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &headers, &t),
            ip("203.0.113.7")
        );
        // IPv4-mapped peer and entry.
        let headers = xff(&["::ffff:203.0.113.8"]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.5"), &headers, &t),
            ip("203.0.113.8")
        );
    }

    #[test]
    fn missing_or_garbage_forwarding_falls_back_to_the_nearest_proxy() {
        let t = trusted();
        assert_eq!(
            client_address(ip("10.0.0.5"), &HeaderMap::new(), &t),
            ip("10.0.0.5")
        );
        let headers = xff(&["203.0.113.7, not-an-ip, 10.0.0.9"]);
        assert_eq!(client_address(ip("10.0.0.5"), &headers, &t), ip("10.0.0.9"));
        // Only trusted hops: the leftmost of them.
        let headers = xff(&["10.0.0.8, 10.0.0.9"]);
        assert_eq!(client_address(ip("10.0.0.5"), &headers, &t), ip("10.0.0.8"));
        // A hostile header with thousands of trusted-looking hops is cut off.
        let long = vec!["10.0.0.1"; 5000].join(",");
        let headers = xff(&[&format!("203.0.113.7,{long}")]);
        assert_eq!(client_address(ip("10.0.0.5"), &headers, &t), ip("10.0.0.1"));
    }

    #[test]
    fn limit_keys_group_ipv6_by_64() {
        assert_eq!(limit_key(ip("2001:db8::1")), ip("2001:db8::"));
        assert_eq!(limit_key(ip("2001:db8::ffff:1")), ip("2001:db8::"));
        assert_ne!(limit_key(ip("2001:db8:0:1::1")), ip("2001:db8::"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn trusted_proxy_flags_parse() {
        assert_eq!(
            parse_trusted_proxy("10.0.0.1").unwrap(),
            "10.0.0.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_trusted_proxy(" 10.1.2.3/8 ").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert!(parse_trusted_proxy("fd00::/8").is_ok());
        assert!(parse_trusted_proxy("proxy.local").is_err());
        assert!(parse_trusted_proxy("10.0.0.0/33").is_err());
    }
}
