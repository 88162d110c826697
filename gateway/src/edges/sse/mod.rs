//! The text/event-stream wire format (WHATWG HTML, "Server-sent events"):
//! the encoder of deliveries, which writes it exactly, and a parser that
//! reads it the way a browser does (for a stream the other canary track
//! serves to a gRPC caller).

mod body;
mod parser;
pub mod wire;

pub use body::SseBody;
pub use parser::{Parser, SseEvent};

use bytes::{Bytes, BytesMut};

use wire::{credential_ended, event, retry, write_id_and_end, HEARTBEAT};

use crate::engine::delivery::{credential_event_type, Delivery, End, RESET_EVENT, SHADOW_EVENT};

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
            credential_ended(credential_event_type(why), why.as_str(), retry_ms)
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

#[cfg(test)]
mod tests {
    use super::wire::*;
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
