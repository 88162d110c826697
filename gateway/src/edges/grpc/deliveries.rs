//! Deliveries encoded once as `pushgate.v1.Event` messages: each event with
//! the cursor in force, its topic and seq; gateway events (reset, notices,
//! shadow, credential end) with no topic; a cursor that moves on its own as
//! a marker with only `id`; heartbeats as nothing (HTTP/2 keeps the call
//! alive). The stream ends with the status that tells the client what to do.

use futures_util::{Stream, StreamExt};
use tonic::Status;

use super::proto::Event;
use crate::engine::delivery::{credential_event_type, Delivery, End, DEFAULT_EVENT, SHADOW_EVENT};
use crate::engine::stream::Deliveries;

/// The cursor the client was last given.
#[derive(Default)]
struct Encoder {
    id: String,
}

/// What one delivery becomes: a message, and whether the call then ends.
enum Out {
    Message(Event),
    Nothing,
    Ended(Status, Option<Event>),
}

impl Encoder {
    /// A message that carries the cursor in force.
    fn gateway(&self, event_type: &str, data: String) -> Event {
        Event {
            id: self.id.clone(),
            event_type: event_type.to_owned(),
            data,
            ..Event::default()
        }
    }

    /// Records `id` as the client's position; false if it already was.
    fn advance(&mut self, id: &str) -> bool {
        if id.is_empty() || id == self.id {
            return false;
        }
        id.clone_into(&mut self.id);
        true
    }

    fn marker(&mut self, id: &str) -> Out {
        if self.advance(id) {
            Out::Message(Event {
                id: id.to_owned(),
                ..Event::default()
            })
        } else {
            Out::Nothing
        }
    }

    fn encode(&mut self, d: Delivery) -> Out {
        match d {
            Delivery::Start { id, .. } | Delivery::Position { id } => self.marker(&id),
            Delivery::Event { frame, id } => {
                let id = id.unwrap_or_else(|| frame.single_id().to_owned());
                self.advance(&id);
                let ev = &frame.event;
                Out::Message(Event {
                    id,
                    topic: ev.topic.as_str().to_owned(),
                    seq: ev.seq.get(),
                    event_type: ev.event_type.as_deref().unwrap_or(DEFAULT_EVENT).to_owned(),
                    data: as_read(&ev.data),
                })
            }
            Delivery::Reset { data, id } => {
                self.advance(&id);
                Out::Message(self.gateway(crate::engine::delivery::RESET_EVENT, data))
            }
            Delivery::Shadow { data, id } => {
                if let Some(id) = id {
                    self.advance(&id);
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
pub fn encode(mut deliveries: Deliveries) -> impl Stream<Item = Result<Event, Status>> + Send {
    let mut encoder = Encoder::default();
    async_stream::stream! {
        while let Some(d) = deliveries.next().await {
            match encoder.encode(d) {
                Out::Message(m) => yield Ok(m),
                Out::Nothing => {}
                Out::Ended(status, last) => {
                    if let Some(m) = last {
                        yield Ok(m);
                    }
                    yield Err(status);
                    return;
                }
            }
        }
        yield Err(closed());
    }
}
