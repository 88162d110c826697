//! An SSE stream body read back into gRPC events: the same blocks a
//! browser would dispatch, each with the cursor in force, plus the topic and
//! seq the cursor moved for, and a marker when a cursor arrives on its own.

use axum::body::Body;
use futures_util::{Stream, StreamExt};
use tonic::Status;

use super::codec::Encoded;
use super::deliveries;
use super::proto::Event;
use crate::core::cursor::Cursor;
use crate::core::topic::Topic;
use crate::edges::sse::{Parser, SseEvent};
use crate::engine::delivery;

/// What the stream has told the client so far.
struct Reader {
    /// The requested topics by tag (the cursor names topics by tag).
    topics: Vec<(u32, String)>,
    /// The id last given to the client, and its decoded cursor.
    id: String,
    cursor: Option<Cursor>,
}

impl Reader {
    fn new(requested: &[String]) -> Reader {
        let topics = requested
            .iter()
            .filter_map(|t| Topic::parse(t).ok().map(|p| (p.tag(), t.clone())))
            .collect();
        Reader {
            topics,
            id: String::new(),
            cursor: None,
        }
    }

    /// Takes `id` as the client's position; returns the topic and seq it
    /// moved forward, if it names a new position of one topic.
    fn advance(&mut self, id: &str) -> Option<(String, u64)> {
        if id == self.id {
            return None;
        }
        self.id = id.to_owned();
        let next = Cursor::decode(id).ok()?;
        let prev = self.cursor.replace(next.clone());
        let moved = next.positions.iter().find(|p| {
            prev.as_ref()
                .and_then(|c| c.positions.iter().find(|q| q.tag == p.tag))
                .is_none_or(|q| q.at != p.at)
        })?;
        let topic = self.topics.iter().find(|(tag, _)| *tag == moved.tag)?;
        Some((topic.1.clone(), moved.at.seq.get()))
    }

    fn event(&mut self, ev: SseEvent) -> Event {
        let gateway_event = delivery::is_reserved_event_type(&ev.event_type);
        let moved = self.advance(&ev.id);
        let (topic, seq) = match moved {
            Some(m) if !gateway_event => m,
            _ => (String::new(), 0),
        };
        Event {
            id: ev.id,
            topic,
            seq,
            event_type: ev.event_type,
            data: ev.data,
        }
    }

    /// A marker for a cursor that came without an event (a stream's first
    /// block, the one after `expired`/`skipped` counts).
    fn marker(&mut self, id: &str) -> Option<Event> {
        if id.is_empty() || id == self.id {
            return None;
        }
        self.advance(id);
        Some(Event {
            id: id.to_owned(),
            ..Event::default()
        })
    }
}

/// The events of an SSE body, ended by the status that tells the client
/// what to do next.
pub fn read(body: Body, topics: &[String]) -> impl Stream<Item = Result<Encoded, Status>> + Send {
    let mut reader = Reader::new(topics);
    async_stream::stream! {
        let mut parser = Parser::new();
        let mut chunks = body.into_data_stream();
        let mut credential_ended = false;
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else { break };
            for ev in parser.feed(&chunk) {
                credential_ended |= matches!(
                    ev.event_type.as_str(),
                    delivery::EXPIRED_TOKEN_EVENT | delivery::EXPIRED_CERTIFICATE_EVENT
                );
                yield Ok(Encoded::from(&reader.event(ev)));
            }
            if let Some(marker) = reader.marker(parser.last_event_id()) {
                yield Ok(Encoded::from(&marker));
            }
        }
        yield Err(if credential_ended { deliveries::credential_ended() } else { deliveries::closed() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::position::{Epoch, Seq, StreamPos};

    fn topic(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    fn two(a: u64, b: u64) -> String {
        let pos = |t: &str, seq| crate::core::cursor::Position {
            tag: topic(t).tag(),
            at: StreamPos {
                epoch: Epoch::new(1),
                seq: Seq::new(seq),
            },
        };
        Cursor {
            ts_ms: 0,
            positions: vec![pos("a", a), pos("b", b)],
        }
        .encode()
    }

    fn sse_event(event_type: &str, data: &str, id: String) -> SseEvent {
        SseEvent {
            event_type: event_type.into(),
            data: data.into(),
            id,
        }
    }

    #[test]
    fn the_moved_topic_and_seq_come_from_the_cursor() {
        let mut r = Reader::new(&["a".into(), "b".into()]);
        let first = r.marker(&two(0, 0)).expect("the first cursor is a marker");
        assert_eq!((first.event_type.as_str(), first.topic.as_str()), ("", ""));
        assert!(
            r.marker(&two(0, 0)).is_none(),
            "the same cursor is not repeated"
        );
        let e = r.event(sse_event("message", "x", two(0, 1)));
        assert_eq!((e.topic.as_str(), e.seq, e.data.as_str()), ("b", 1, "x"));
        let e = r.event(sse_event("t", "y", two(1, 1)));
        assert_eq!(
            (e.topic.as_str(), e.seq, e.event_type.as_str()),
            ("a", 1, "t")
        );
    }

    #[test]
    fn gateway_events_carry_no_topic() {
        let mut r = Reader::new(&["a".into(), "b".into()]);
        r.marker(&two(0, 0));
        let e = r.event(sse_event(delivery::RESET_EVENT, "{}", two(5, 0)));
        assert_eq!((e.topic.as_str(), e.seq), ("", 0));
        // The reset's cursor is the base: the next event is read against it.
        let e = r.event(sse_event("message", "z", two(6, 0)));
        assert_eq!((e.topic.as_str(), e.seq), ("a", 6));
    }

    #[test]
    fn a_single_topic_cursor_names_its_topic() {
        let mut r = Reader::new(&["a".into()]);
        let id = Cursor::single(&topic("a"), Epoch::new(1).unwrap(), Seq::new(3), 9).encode();
        let e = r.event(sse_event("message", "d", id));
        assert_eq!((e.topic.as_str(), e.seq), ("a", 3));
    }
}
