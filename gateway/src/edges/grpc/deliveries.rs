//! Deliveries encoded once as `pushgate.v1.Event` messages: each event with
//! the cursor in force, its topic and seq; gateway events (reset, notices,
//! shadow, credential end) with no topic; a cursor that moves on its own as
//! a marker with only `id`; heartbeats as nothing (HTTP/2 keeps the call
//! alive). The stream ends with the status that tells the client what to do.
//!
//! An event on a single-topic stream carries the event's own cursor, so
//! its message is the same for every such stream: it is encoded for the
//! first and shared with the rest ([`Frame::other_encoding`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::{Stream, StreamExt};
use tonic::Status;

use super::codec::Encoded;
use super::proto::Event;
use crate::engine::delivery::{
    credential_event_type, Delivery, End, DEFAULT_EVENT, RESET_EVENT, SHADOW_EVENT,
};
use crate::engine::fanout::Frame;
use crate::engine::stream::Deliveries;

/// The cursor the client was last given: an event's own (kept as its frame,
/// so following a single-topic stream copies no text) or one of the stream's.
enum Given {
    None,
    Frame(Arc<Frame>),
    Own(String),
}

impl Given {
    fn as_str(&self) -> &str {
        match self {
            Given::None => "",
            Given::Frame(f) => f.single_id(),
            Given::Own(id) => id,
        }
    }
}

/// What one delivery becomes: a message, and whether the call then ends.
enum Out {
    Message(Encoded),
    Nothing,
    Ended(Status, Option<Encoded>),
}

/// A single-topic event's message, the same on every stream.
fn shared_event(frame: &Frame) -> bytes::Bytes {
    Encoded::from(&event_message(frame, frame.single_id().to_owned())).0
}

fn event_message(frame: &Frame, id: String) -> Event {
    let ev = &frame.event;
    Event {
        id,
        topic: ev.topic.as_str().to_owned(),
        seq: ev.seq.get(),
        event_type: ev.event_type.as_deref().unwrap_or(DEFAULT_EVENT).to_owned(),
        data: as_read(&ev.data),
    }
}

/// The encoding state of one stream.
struct Encoder {
    given: Given,
}

impl Encoder {
    /// A message that carries the cursor in force.
    fn gateway(&self, event_type: &str, data: String) -> Encoded {
        Encoded::from(&Event {
            id: self.given.as_str().to_owned(),
            event_type: event_type.to_owned(),
            data,
            ..Event::default()
        })
    }

    /// Records `id` as the client's position; false if it already was.
    fn advance(&mut self, id: String) -> bool {
        if id.is_empty() || id == self.given.as_str() {
            return false;
        }
        self.given = Given::Own(id);
        true
    }

    fn marker(&mut self, id: String) -> Out {
        if self.advance(id) {
            Out::Message(Encoded::from(&Event {
                id: self.given.as_str().to_owned(),
                ..Event::default()
            }))
        } else {
            Out::Nothing
        }
    }

    fn encode(&mut self, d: Delivery) -> Out {
        match d {
            Delivery::Start { id, .. } | Delivery::Position { id } => self.marker(id),
            Delivery::Event { frame, id: None } => {
                let message = Encoded(frame.other_encoding(shared_event));
                self.given = Given::Frame(frame);
                Out::Message(message)
            }
            Delivery::Event {
                frame,
                id: Some(id),
            } => {
                let message = Encoded::from(&event_message(&frame, id.clone()));
                self.advance(id);
                Out::Message(message)
            }
            Delivery::Reset { data, id } => {
                self.advance(id);
                Out::Message(self.gateway(RESET_EVENT, data))
            }
            Delivery::Shadow { data, id } => {
                if let Some(id) = id {
                    self.advance(id);
                }
                Out::Message(self.gateway(SHADOW_EVENT, as_read(&data)))
            }
            Delivery::Notice { kind, data } => Out::Message(self.gateway(kind.event_type(), data)),
            Delivery::Heartbeat => Out::Nothing,
            Delivery::End(End::Retry { .. }) => Out::Ended(closed(), None),
            Delivery::End(End::Credential { why, .. }) => {
                let data = format!("{{\"reason\":\"{}\"}}", why.as_str());
                Out::Ended(
                    credential_ended(),
                    Some(self.gateway(credential_event_type(why), data)),
                )
            }
        }
    }
}

/// Event data as an SSE client reads it back, every line break as `\n`:
/// the same text whichever protocol a client subscribes over.
fn as_read(data: &str) -> String {
    if !data.contains('\r') {
        return data.to_owned();
    }
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// The end of a stream the gateway closed: come back with the last id.
pub fn closed() -> Status {
    Status::unavailable("the gateway closed the stream: subscribe again with the last id")
}

/// The end of a stream whose credential ended.
pub fn credential_ended() -> Status {
    Status::unauthenticated(
        "the credential ended: subscribe again with a fresh one and the last id",
    )
}

/// The messages of a subscription, ended by a status.
pub struct Messages {
    deliveries: Deliveries,
    encoder: Encoder,
    /// The status still to send after the last message, or `None` once sent.
    end: Option<Status>,
    ended: bool,
}

/// Encodes `deliveries` as they come.
pub fn encode(deliveries: Deliveries) -> Messages {
    Messages {
        deliveries,
        encoder: Encoder { given: Given::None },
        end: None,
        ended: false,
    }
}

impl Stream for Messages {
    type Item = Result<Encoded, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(this.end.take().map(Err));
        }
        loop {
            let Some(d) = ready!(this.deliveries.poll_next_unpin(cx)) else {
                this.ended = true;
                return Poll::Ready(Some(Err(closed())));
            };
            match this.encoder.encode(d) {
                Out::Message(m) => return Poll::Ready(Some(Ok(m))),
                Out::Nothing => {}
                Out::Ended(status, last) => {
                    this.ended = true;
                    return Poll::Ready(Some(match last {
                        Some(m) => {
                            this.end = Some(status);
                            Ok(m)
                        }
                        None => Err(status),
                    }));
                }
            }
        }
    }
}
