//! A small SSE client for tests: reqwest for HTTP, and for the stream the
//! parser of `tests/sse`, written from the WHATWG rules independently of the
//! gateway's (so an encoder bug and a parser bug cannot cancel out).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Result};
pub use pushgate_test_sse::Event as SseEvent;
use pushgate_test_sse::Parser;

/// One open stream.
pub struct SseClient {
    resp: reqwest::Response,
    parser: Parser,
    queue: VecDeque<SseEvent>,
    ended: bool,
}

/// What a stream request returned.
pub enum Opened {
    /// 200 and a stream.
    Stream(Box<SseClient>),
    /// Any other status, with its body.
    Refused(reqwest::StatusCode, String),
}

impl SseClient {
    /// GET `url` with an optional `Last-Event-ID`.
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Result<Opened> {
        Self::open_with(client, url, last_event_id, &[]).await
    }

    /// Like [`SseClient::open`], with extra request headers.
    pub async fn open_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<Opened> {
        let mut req = client.get(url).header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await?;
        if resp.status() != reqwest::StatusCode::OK {
            let status = resp.status();
            return Ok(Opened::Refused(
                status,
                resp.text().await.unwrap_or_default(),
            ));
        }
        Ok(Opened::Stream(Box::new(SseClient {
            resp,
            parser: Parser::new(),
            queue: VecDeque::new(),
            ended: false,
        })))
    }

    /// Like [`SseClient::open`] but fails unless the stream opened.
    pub async fn connect(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseClient> {
        match Self::open(client, url, last_event_id).await? {
            Opened::Stream(s) => Ok(*s),
            Opened::Refused(status, body) => bail!("stream refused: {status} {body}"),
        }
    }

    /// The next event; `Ok(None)` when the server ended the stream (or the
    /// connection broke); an error if nothing came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => bail!("no event within {timeout:?}"),
                Ok(Ok(Some(chunk))) => self.queue.extend(self.parser.feed(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// Every event up to and including the `message` whose data is
    /// `marker` (a marker published after what is awaited: anything that
    /// should not have come shows up before it); fails if the stream ends or
    /// stays silent for `timeout` first.
    pub async fn until(&mut self, marker: &str, timeout: Duration) -> Result<Vec<SseEvent>> {
        let mut seen = Vec::new();
        loop {
            match self.next(timeout).await? {
                Some(e) => {
                    let done = e.event_type == "message" && e.data == marker;
                    seen.push(e);
                    if done {
                        return Ok(seen);
                    }
                }
                None => bail!("stream ended before {marker}; saw {seen:?}"),
            }
        }
    }

    /// Reads until the stream has given an id (its first block always does).
    pub async fn await_id(&mut self, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.parser.last_event_id().is_empty() {
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => bail!("no id within {timeout:?}"),
                Ok(Ok(Some(chunk))) => self.queue.extend(self.parser.feed(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => bail!("stream ended before its first id"),
            }
        }
        Ok(self.parser.last_event_id().to_owned())
    }

    /// The `Last-Event-ID` a browser would send on reconnect.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The last `retry:` the server sent.
    pub fn retry(&self) -> Option<u64> {
        self.parser.retry()
    }

    /// The reason of a refusal: a 200 stream that only says "retry later"
    /// (an EventSource must not see an error status, or it gives up).
    pub fn refusal(&self) -> Option<&str> {
        self.resp
            .headers()
            .get("x-pushgate-refused")
            .and_then(|v| v.to_str().ok())
    }

    /// Response headers.
    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        self.resp.headers()
    }

    /// HTTP version of the response.
    pub fn version(&self) -> reqwest::Version {
        self.resp.version()
    }
}
