//! What the examples share: a few lines of `text/event-stream` parsing (feed
//! the body's chunks, get whole events; comments and heartbeats are skipped)
//! and the reconnect loop of an `EventSource`.

use futures_util::StreamExt;
use std::time::Duration;

/// One dispatched event.
#[derive(Debug, Default)]
pub struct Event {
    /// `id:` of this event, if it carried one.
    pub id: Option<String>,
    /// `event:` type; `None` is a plain message.
    pub event: Option<String>,
    /// The data lines joined with `\n`; `None` for a block without data.
    pub data: Option<String>,
    /// A `retry:` hint in milliseconds, if the block carried one.
    pub retry_ms: Option<u64>,
}

/// Splits a stream into events.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    block: Event,
}

impl Reader {
    /// Adds a chunk; returns the blocks it completed (with or without data).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let b = std::mem::take(&mut self.block);
                if b.data.is_some() || b.id.is_some() || b.retry_ms.is_some() {
                    out.push(b);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => self.block.id = Some(value),
                "event" => self.block.event = Some(value),
                "data" => {
                    self.block.data = Some(match self.block.data.take() {
                        Some(d) => d + "\n" + &value,
                        None => value,
                    })
                }
                "retry" => self.block.retry_ms = value.parse().ok(),
                _ => {} // comments (heartbeats) and unknown fields
            }
        }
        out
    }
}

/// A stream client: how it asks for its stream, and what it does per event.
pub trait Follower {
    /// The request for the next connection (with whatever it remembers).
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder;
    /// Handles one event; `false` stops following.
    async fn event(&mut self, http: &reqwest::Client, ev: Event) -> bool;
}

/// Follows the stream until the follower stops: after any end of the stream
/// or failed attempt it waits the server's `retry:` hint and reconnects.
pub async fn follow(http: &reqwest::Client, f: &mut impl Follower) {
    let mut retry = Duration::from_secs(1);
    loop {
        match f.request(http).send().await {
            Ok(resp) if resp.status().is_success() => {
                let mut body = resp.bytes_stream();
                let mut reader = Reader::default();
                // Ends on EOF or a read error; both mean: reconnect.
                while let Some(Ok(chunk)) = body.next().await {
                    for ev in reader.feed(&chunk) {
                        if let Some(ms) = ev.retry_ms {
                            retry = Duration::from_millis(ms);
                        }
                        if !f.event(http, ev).await {
                            return;
                        }
                    }
                }
                eprintln!("stream ended; resuming in {retry:?}");
            }
            Ok(resp) => eprintln!("gateway answered {}; retrying in {retry:?}", resp.status()),
            Err(e) => eprintln!("cannot connect ({e}); retrying in {retry:?}"),
        }
        tokio::time::sleep(retry).await;
    }
}
