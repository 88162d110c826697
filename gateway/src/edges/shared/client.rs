//! The client address a request is counted under. A request's peer is the
//! client unless the peer is a configured trusted proxy; then the client is
//! the nearest address in `X-Forwarded-For` that is not one. Only trusted
//! hops are believed: anyone can send the header, and a client that could
//! name its own address would pick a fresh one for every request.

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::config::ProxyRange;
use crate::edges::shared::conn::ConnInfo;
use crate::engine::node::Node;

/// The client address of a request on `conn`, by `node`'s trusted proxies.
pub fn of(node: &Node, conn: &ConnInfo, headers: &HeaderMap) -> IpAddr {
    client_addr(
        &node.config().limits.trusted_proxies,
        conn.peer.ip(),
        headers,
    )
}

/// The client address of a request from `peer` with `headers`.
///
/// `X-Forwarded-For` is read right to left (each proxy appends the address
/// it received from), over every such header in order. The first address
/// that is not a trusted proxy is the client. An entry that is not an
/// address ends the walk at the last trusted hop: what lies left of it was
/// written by someone no trusted proxy vouches for.
pub fn client_addr(trusted: &[ProxyRange], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            return client;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<ProxyRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let h = xff(&["203.0.113.9"]);
        assert_eq!(client_addr(&[], ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let t = ranges(&["10.1.0.0/16"]);
        assert_eq!(
            client_addr(&t, ip("10.0.0.1"), &h),
            ip("10.0.0.1"),
            "a peer outside the trusted ranges is the client"
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let t = ranges(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff(&["198.51.100.7, 203.0.113.9, 10.2.3.4"]);
        assert_eq!(
            client_addr(&t, ip("10.0.0.1"), &h),
            ip("203.0.113.9"),
            "a client-written entry left of the client is not believed"
        );
        let h = xff(&["198.51.100.7", "203.0.113.9, 10.2.3.4"]);
        assert_eq!(client_addr(&t, ip("fd00::1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let t = ranges(&["10.0.0.0/8"]);
        let h = xff(&["198.51.100.7, not-an-ip, 10.2.3.4"]);
        assert_eq!(client_addr(&t, ip("10.0.0.1"), &h), ip("10.2.3.4"));
        let h = xff(&[]);
        assert_eq!(
            client_addr(&t, ip("10.0.0.1"), &h),
            ip("10.0.0.1"),
            "no header: the proxy itself"
        );
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_ranges() {
        let t = ranges(&["127.0.0.1"]);
        let h = xff(&["192.0.2.1"]);
        assert_eq!(client_addr(&t, ip("::ffff:127.0.0.1"), &h), ip("192.0.2.1"));
        assert_eq!(
            client_addr(&t, ip("127.0.0.1"), &xff(&["::ffff:192.0.2.1"])),
            ip("192.0.2.1"),
            "one client, one key, however it is written"
        );
    }
}
