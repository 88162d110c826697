//! What a subscription yields: typed deliveries, free of any wire format.
//! Each protocol edge encodes a delivery exactly once into its own form
//! (SSE bytes, a protobuf message); the engine never writes bytes.

use std::sync::Arc;

use crate::auth::lifetime::Ended;
use crate::engine::fanout::Frame;

/// Why a stream passed over events that it announces instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Their TTL had passed (`expired`).
    Expired,
    /// A full queue dropped them under the topic's policy (`skipped`).
    Skipped,
}

impl Notice {
    /// The event type that announces them.
    pub fn event_type(self) -> &'static str {
        match self {
            Notice::Expired => EXPIRED_EVENT,
            Notice::Skipped => SKIPPED_EVENT,
        }
    }
}

/// The event type that tells a client its credential ended.
pub fn credential_event_type(why: Ended) -> &'static str {
    match why {
        Ended::TokenExpired | Ended::KeyRemoved => EXPIRED_TOKEN_EVENT,
        Ended::CertificateExpired => EXPIRED_CERTIFICATE_EVENT,
    }
}

/// How a stream ends when the gateway ends it (a client that leaves just drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Come back in `retry_ms` and resume by cursor: drain, slow consumer,
    /// a canary move, a store failure.
    Retry {
        /// Jittered.
        retry_ms: u64,
    },
    /// The credential that opened it ended: come back with a fresh one.
    Credential {
        /// What ended.
        why: Ended,
        /// Jittered.
        retry_ms: u64,
    },
}

/// One thing a stream tells its client, in order.
#[derive(Debug)]
pub enum Delivery {
    /// The first word: where the stream stands (a client that drops before
    /// its first event resumes from exactly here) and when to come back.
    Start {
        /// Jittered reconnect delay.
        retry_ms: u64,
        /// The stream's cursor.
        id: String,
    },
    /// An event. `id` is the stream's cursor after it; `None` on a
    /// single-topic stream, whose cursor the shared frame already carries.
    Event {
        /// The stored event, encoded once for every subscriber.
        frame: Arc<Frame>,
        /// The multi-topic cursor, if the frame's own is not the stream's.
        id: Option<String>,
    },
    /// History was cut: `data` names the topics and how; `id` is where the stream now stands.
    Reset {
        /// `{"topics":[{"topic":..,"reason":..,..}]}`.
        data: String,
        /// The stream's cursor.
        id: String,
    },
    /// A device's shadow delta, `{"version":N,"delta":{..}}`; with the
    /// stream's cursor only when it opens the stream.
    Shadow {
        /// The delta document.
        data: Arc<str>,
        /// The stream's cursor, if sent with it.
        id: Option<String>,
    },
    /// Events passed over, counted per topic; no cursor, so a client that
    /// drops before the next position hears of them again.
    Notice {
        /// Why they were passed over.
        kind: Notice,
        /// `{"topics":[{"topic":..,"count":N}]}`.
        data: String,
    },
    /// The cursor moved past announced events with no event to carry it.
    Position {
        /// The stream's cursor.
        id: String,
    },
    /// Nothing happened for a heartbeat interval.
    Heartbeat,
    /// The gateway ends the stream.
    End(End),
}

/// Event type that tells a client its history was cut.
pub const RESET_EVENT: &str = "reset";
/// Event type that tells a resuming client how many events per topic expired.
pub const EXPIRED_EVENT: &str = "expired";
/// Event type that tells a slow subscriber how many events its full queue dropped.
pub const SKIPPED_EVENT: &str = "skipped";
/// Event type of a device's shadow delta.
pub const SHADOW_EVENT: &str = "shadow";
/// Event type that ends a stream whose token expired or whose key was removed.
pub const EXPIRED_TOKEN_EVENT: &str = "expired-token";
/// Event type that ends a stream whose client certificate expired.
pub const EXPIRED_CERTIFICATE_EVENT: &str = "expired-certificate";
/// The type of an event published without one (what a browser dispatches).
pub const DEFAULT_EVENT: &str = "message";

/// Event types that publishers may not use: the gateway's own.
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
