//! The text/event-stream wire format (WHATWG HTML, "Server-sent events"):
//! the encoder of deliveries, which writes it exactly, and a parser that
//! reads it the way a browser does (for a stream the other canary track
//! serves to a gRPC caller).

mod body;
mod parser;

pub use body::SseBody;
pub use parser::{Parser, SseEvent};

use bytes::{BufMut, Bytes, BytesMut};

use crate::engine::delivery::{Delivery, End, RESET_EVENT, SHADOW_EVENT};

/// A heartbeat: a comment line, ignored by clients, that keeps proxies and NATs from idling out.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// The bytes of one delivery: one block, or for a multi-topic event its
/// shared `event:`/`data:` lines and then its own `id:` (two chunks, so
/// the shared bytes are never copied).
pub fn encode(d: Delivery) -> (Bytes, Option<Bytes>) {
    let one = match d {
        Delivery::Start { retry_ms, id } => {
            let mut first = BytesMut::from(format!("retry: {retry_ms}\n").as_bytes());
            write_id_and_end(&mut first, &id);
            first.freeze()
        }
        Delivery::Event { frame, id: None } => frame.single(),
        Delivery::Event {
            frame,
            id: Some(id),
        } => return (frame.body(), Some(id_block(&id))),
        Delivery::Reset { data, id } => event(Some(RESET_EVENT), &data, Some(&id)),
        Delivery::Shadow { data, id } => event(Some(SHADOW_EVENT), &data, id.as_deref()),
        Delivery::Notice { kind, data } => event(Some(kind.event_type()), &data, None),
        Delivery::Position { id } => id_block(&id),
        Delivery::Heartbeat => Bytes::from_static(HEARTBEAT),
        Delivery::End(End::Retry { retry_ms }) => retry(retry_ms),
        Delivery::End(End::Credential { why, retry_ms }) => {
            credential_ended(why.event_type(), why.as_str(), retry_ms)
        }
    };
    (one, None)
}

/// `id: <id>` and the blank line: a block that only moves the cursor.
fn id_block(id: &str) -> Bytes {
    let mut tail = BytesMut::with_capacity(id.len() + 6);
    write_id_and_end(&mut tail, id);
    tail.freeze()
}

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
            &credential_ended(
                crate::engine::delivery::EXPIRED_TOKEN_EVENT,
                "token_expired",
                900
            )[..],
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
