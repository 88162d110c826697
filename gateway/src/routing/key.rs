//! The routing key of a request, in order: the trace-id of `traceparent`,
//! the configured header, the authenticated client id, the routing cookie —
//! else a fresh key, issued in that cookie so an `EventSource` reconnect
//! (which replays cookies) keeps its bucket.

use axum::http::HeaderMap;

use super::RoutingTable;
use crate::core::traceparent::trace_id_of;

/// Where a routing key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `traceparent` trace-id.
    TraceParent,
    /// The table's `key_header`.
    Header,
    /// The authenticated client id.
    ClientId,
    /// The routing cookie.
    Cookie,
    /// Issued now (a `Set-Cookie` must go out with the response).
    Issued,
}

/// A request's routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKey {
    /// The key hashed into a bucket.
    pub key: String,
    /// Its source.
    pub source: KeySource,
}

/// Longest key taken from a header or cookie.
const MAX_KEY_LEN: usize = 256;

fn usable(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= MAX_KEY_LEN && v.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(v)
}

/// Finds `name` in the `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

/// The routing key of a request (never fails: malformed sources fall through).
pub fn routing_key(
    headers: &HeaderMap,
    table: &RoutingTable,
    client_id: Option<&str>,
) -> RoutingKey {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(trace) = header("traceparent").and_then(trace_id_of) {
        return RoutingKey {
            key: trace.to_ascii_lowercase(),
            source: KeySource::TraceParent,
        };
    }
    if let Some(v) = table
        .key_header
        .as_deref()
        .and_then(header)
        .and_then(usable)
    {
        return RoutingKey {
            key: v.to_owned(),
            source: KeySource::Header,
        };
    }
    if let Some(id) = client_id.and_then(usable) {
        return RoutingKey {
            key: id.to_owned(),
            source: KeySource::ClientId,
        };
    }
    if let Some(v) = cookie(headers, &table.cookie).and_then(usable) {
        return RoutingKey {
            key: v.to_owned(),
            source: KeySource::Cookie,
        };
    }
    RoutingKey {
        key: format!("{:032x}", rand::random::<u128>()),
        source: KeySource::Issued,
    }
}

/// The `Set-Cookie` value for an issued key.
pub fn set_cookie(table: &RoutingTable, key: &str) -> String {
    format!(
        "{}={key}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
        table.cookie
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn sources_in_order() {
        let t = RoutingTable {
            key_header: Some("x-device".into()),
            ..RoutingTable::default()
        };
        let tp = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let all = headers(&[
            ("traceparent", tp),
            ("x-device", "dev-1"),
            ("cookie", "a=1; pushgate_rk=ck"),
        ]);
        let k = routing_key(&all, &t, Some("client"));
        assert_eq!(
            (k.key.as_str(), k.source),
            ("4bf92f3577b34da6a3ce929d0e0e4736", KeySource::TraceParent)
        );
        let bad_tp = headers(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("x-device", "dev-1"),
        ]);
        assert_eq!(
            routing_key(&bad_tp, &t, None).source,
            KeySource::Header,
            "malformed traceparent falls through"
        );
        let k = routing_key(
            &headers(&[("cookie", "pushgate_rk=ck")]),
            &t,
            Some("client"),
        );
        assert_eq!(k.source, KeySource::ClientId);
        let k = routing_key(&headers(&[("cookie", "x=y; pushgate_rk=ck")]), &t, None);
        assert_eq!((k.key.as_str(), k.source), ("ck", KeySource::Cookie));
        let k = routing_key(&HeaderMap::new(), &t, None);
        assert_eq!(k.source, KeySource::Issued);
        assert_eq!(k.key.len(), 32);
        assert!(set_cookie(&t, &k.key).starts_with(&format!("pushgate_rk={}", k.key)));
    }
}
