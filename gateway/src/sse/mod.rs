//! The text/event-stream wire format (WHATWG HTML, "Server-sent events"):
//! an encoder that writes it exactly, and a parser that reads it the way a
//! browser does (used by tests, the e2e harness and the load tool).

mod parser;

pub use parser::{Parser, SseEvent};

use bytes::{BufMut, Bytes, BytesMut};

/// A heartbeat: a comment line, ignored by clients, that keeps proxies and NATs from idling out.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Name of the event that tells a client its history was cut.
pub const RESET_EVENT: &str = "reset";

/// Name of the event that tells a resuming client how many events per
/// topic expired (their TTL passed) before it could get them.
pub const EXPIRED_EVENT: &str = "expired";

/// Name of the event that tells a slow subscriber how many events per
/// topic its full queue dropped under the topic's backpressure policy.
pub const SKIPPED_EVENT: &str = "skipped";

/// Name of the event that carries a device's shadow delta.
pub const SHADOW_EVENT: &str = "shadow";

/// Name of the event that ends a stream whose token expired or whose key
/// was removed: reconnect with a fresh token.
pub const EXPIRED_TOKEN_EVENT: &str = "expired-token";

/// Name of the event that ends a stream whose client certificate expired.
pub const EXPIRED_CERTIFICATE_EVENT: &str = "expired-certificate";

/// `retry: <ms>` as a standalone block.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// Writes `event:` (if any) and the `data:` lines of one event, without `id:`
/// and without the blank line that dispatches it. Payload line breaks (`\n`,
/// `\r`, `\r\n`) each start a new `data:` line, so the client reads back the
/// payload with every break normalised to `\n` (the only form the spec can carry).
pub fn write_body(buf: &mut BytesMut, event_type: Option<&str>, data: &str) {
    buf.reserve(data.len() + 16);
    if let Some(t) = event_type {
        buf.put_slice(b"event: ");
        buf.put_slice(t.as_bytes());
        buf.put_u8(b'\n');
    }
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\r' => {
                put_data_line(buf, &bytes[start..i]);
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    put_data_line(buf, &bytes[start..]);
}

fn put_data_line(buf: &mut BytesMut, line: &[u8]) {
    // Always a space after the colon: the parser strips exactly one, so a
    // payload line that itself starts with a space survives.
    buf.put_slice(b"data: ");
    buf.put_slice(line);
    buf.put_u8(b'\n');
}

/// Writes `id: <id>` and the blank line that dispatches the event.
/// The id must not contain `\0`, `\n` or `\r` (cursors never do).
pub fn write_id_and_end(buf: &mut BytesMut, id: &str) {
    debug_assert!(!id.contains(['\0', '\n', '\r']));
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_slice(b"\n\n");
}

/// One complete event block.
pub fn event(event_type: Option<&str>, data: &str, id: Option<&str>) -> Bytes {
    let mut buf = BytesMut::new();
    write_body(&mut buf, event_type, data);
    match id {
        Some(id) => write_id_and_end(&mut buf, id),
        None => buf.put_u8(b'\n'),
    }
    buf.freeze()
}

/// Event type names that may not be used by publishers (the gateway's own).
pub fn is_reserved_event_type(t: &str) -> bool {
    matches!(
        t,
        RESET_EVENT
            | EXPIRED_EVENT
            | SKIPPED_EVENT
            | SHADOW_EVENT
            | EXPIRED_TOKEN_EVENT
            | EXPIRED_CERTIFICATE_EVENT
    )
}

/// The last block of a stream its credential ended: a `retry:` hint and an
/// event without `id:`, so the client's Last-Event-ID stays where it was.
pub fn credential_ended(event_type: &str, reason: &str, retry_ms: u64) -> Bytes {
    let mut buf = BytesMut::from(format!("retry: {retry_ms}\n").as_bytes());
    write_body(
        &mut buf,
        Some(event_type),
        &format!("{{\"reason\":\"{reason}\"}}"),
    );
    buf.put_u8(b'\n');
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(event_type: Option<&str>, data: &str, id: &str) -> SseEvent {
        let mut p = Parser::new();
        let mut out = p.feed(&event(event_type, data, Some(id)));
        assert_eq!(out.len(), 1, "exactly one event for {data:?}");
        out.pop().unwrap()
    }

    #[test]
    fn payloads_read_back_exactly() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", ""),
            ("a\nb", "a\nb"),
            ("a\r\nb", "a\nb"),
            ("a\rb", "a\nb"),
            ("\n", "\n"),
            ("a\n\nb\n", "a\n\nb\n"),
            (" leading space", " leading space"),
            ("data: looks like a field", "data: looks like a field"),
            ("ünïcødé ✓ 🚀", "ünïcødé ✓ 🚀"),
            (":not a comment", ":not a comment"),
        ];
        for (sent, read) in cases {
            let ev = round_trip(Some("update"), sent, "c1");
            assert_eq!(&ev.data, read, "payload {sent:?}");
            assert_eq!(ev.event_type, "update");
            assert_eq!(ev.id, "c1");
        }
    }

    #[test]
    fn default_event_type_is_message() {
        let ev = round_trip(None, "x", "i");
        assert_eq!(ev.event_type, "message");
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(
            &event(Some("t"), "a\r\nb", Some("X"))[..],
            b"event: t\ndata: a\ndata: b\nid: X\n\n"
        );
        assert_eq!(&retry(1500)[..], b"retry: 1500\n\n");
        assert_eq!(
            &credential_ended(EXPIRED_TOKEN_EVENT, "token_expired", 900)[..],
            b"retry: 900\nevent: expired-token\ndata: {\"reason\":\"token_expired\"}\n\n"
        );
    }

    #[test]
    fn retry_and_heartbeat_are_understood() {
        let mut p = Parser::new();
        let mut bytes = retry(2500).to_vec();
        bytes.extend_from_slice(HEARTBEAT);
        assert!(p.feed(&bytes).is_empty());
        assert_eq!(p.retry(), Some(2500));
    }
}
