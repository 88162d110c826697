//! A subscriber that behaves like a browser `EventSource`: it reconnects with
//! `Last-Event-ID` whenever its stream ends or is refused, until it has the
//! number of events it expects. Used to check "every event exactly once".

use std::time::Duration;

use anyhow::{bail, Result};
use pushgate::sse::SseEvent;
use tokio::time::Instant;

use crate::sse_client::{Opened, SseClient};

/// Everything one resuming subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Data events (not `reset`), in arrival order.
    pub events: Vec<SseEvent>,
    /// `reset` events.
    pub resets: Vec<SseEvent>,
    /// Streams opened (1 + reconnects).
    pub connections: usize,
    /// Refusals for now (a 200 that only said "retry later").
    pub refusals: usize,
}

/// Follows `path_and_query` on the given gateway base URLs (rotating through
/// them on each reconnect) until `expected` data events arrived or `deadline` passed.
pub async fn follow(
    client: reqwest::Client,
    bases: Vec<String>,
    path_and_query: String,
    cursor: Option<String>,
    expected: usize,
    deadline: Duration,
) -> Result<Seen> {
    follow_until(client, bases, path_and_query, cursor, deadline, move |s| {
        s.events.len() >= expected
    })
    .await
}

/// Follows until an event with data `marker` arrives (the marker is kept in `events`).
pub async fn follow_to_marker(
    client: reqwest::Client,
    bases: Vec<String>,
    path_and_query: String,
    cursor: Option<String>,
    marker: &'static str,
    deadline: Duration,
) -> Result<Seen> {
    follow_until(client, bases, path_and_query, cursor, deadline, move |s| {
        s.events.last().is_some_and(|e| e.data == marker)
    })
    .await
}

/// Follows until `done(&seen)` holds, reconnecting like an `EventSource`.
pub async fn follow_until(
    client: reqwest::Client,
    bases: Vec<String>,
    path_and_query: String,
    mut cursor: Option<String>,
    deadline: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Result<Seen> {
    let end = Instant::now() + deadline;
    let mut seen = Seen::default();
    let mut attempt = 0usize;
    while !done(&seen) {
        if Instant::now() > end {
            bail!(
                "not done after {} events within {deadline:?} ({} connections)",
                seen.events.len(),
                seen.connections
            );
        }
        let base = &bases[attempt % bases.len()];
        attempt += 1;
        let url = format!("{base}{path_and_query}");
        let mut s = match SseClient::open(&client, &url, cursor.as_deref()).await {
            Ok(Opened::Stream(s)) => *s,
            Ok(Opened::Refused(status, body)) if status == 400 => {
                bail!("stream refused with 400: {body}")
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if s.refusal().is_some() {
            seen.refusals += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        seen.connections += 1;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match s.next(left.max(Duration::from_millis(1))).await {
                Ok(Some(ev)) => {
                    if ev.event_type == "reset" {
                        seen.resets.push(ev);
                    } else {
                        seen.events.push(ev);
                    }
                    if done(&seen) {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if !s.last_event_id().is_empty() {
            cursor = Some(s.last_event_id().to_owned());
        }
    }
    Ok(seen)
}

/// Publishes with an `Idempotency-Key`, retrying (bounded) across `bases` until
/// one acknowledges: a retry of an acknowledged publish is a no-op, so nothing
/// is stored twice.
pub async fn publish_reliably(
    client: &reqwest::Client,
    bases: &[String],
    topic: &str,
    data: &str,
    key: &str,
    deadline: Duration,
) -> Result<u64> {
    let end = Instant::now() + deadline;
    let mut i = 0;
    loop {
        let base = &bases[i % bases.len()];
        i += 1;
        let resp = client
            .post(format!("{base}/v1/topics/{topic}/events"))
            .header("idempotency-key", key)
            .body(data.to_owned())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = resp {
            if r.status() == 201 {
                let v: serde_json::Value = r.json().await?;
                return Ok(v["seq"].as_u64().unwrap_or(0));
            }
            if r.status().is_client_error() && r.status() != 429 {
                bail!("publish refused: {}", r.status());
            }
        }
        if Instant::now() > end {
            bail!("publish of {key} not acknowledged within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `seen` holds, per topic, exactly `data` in order, each once.
pub fn assert_exactly_once(seen: &[SseEvent], want: &[String]) {
    let got: Vec<&str> = seen.iter().map(|e| e.data.as_str()).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(got.len(), want.len(), "count differs");
    assert_eq!(got, want, "events differ from what was published");
}

/// What a [`follow_traced`] subscriber has seen so far, readable while it runs.
#[derive(Debug, Default)]
pub struct TracedState {
    /// Streams opened (1 + reconnects).
    pub connections: usize,
    /// Data of every event, in arrival order (the `END` marker included).
    pub events: Vec<String>,
    /// `x-pushgate-track` of the current stream: which track serves it.
    pub served_by: Option<String>,
    /// Opens that were refused or failed (retried after 50 ms).
    pub refusals: usize,
}

/// An `EventSource`-like subscriber of `topic` with a fixed `traceparent`
/// trace id (its canary routing key): it resumes with `Last-Event-ID`
/// whenever its stream is closed, until an event with data `END` arrives.
pub async fn follow_traced(
    client: reqwest::Client,
    base: String,
    topic: &'static str,
    trace: String,
    state: std::sync::Arc<std::sync::Mutex<TracedState>>,
) {
    let headers = vec![(
        "traceparent".to_owned(),
        format!("00-{trace}-00f067aa0ba902b7-01"),
    )];
    let mut cursor: Option<String> = None;
    for _ in 0..400 {
        let url = format!("{base}/v1/stream?topic={topic}");
        let mut s = match SseClient::open_with(&client, &url, cursor.as_deref(), &headers).await {
            Ok(Opened::Stream(s)) if s.refusal().is_none() => s,
            _ => {
                state.lock().unwrap().refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        {
            let mut st = state.lock().unwrap();
            st.connections += 1;
            st.served_by = s
                .headers()
                .get("x-pushgate-track")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        while let Ok(Some(ev)) = s.next(Duration::from_secs(60)).await {
            let done = ev.data == "END";
            state.lock().unwrap().events.push(ev.data);
            if done {
                return;
            }
        }
        if !s.last_event_id().is_empty() {
            cursor = Some(s.last_event_id().to_owned());
        }
    }
    panic!("subscriber {trace} never finished");
}

/// Asserts that every [`follow_traced`] subscriber got a suffix of `sent` —
/// everything from the event it attached at, each once, in order.
pub fn assert_traced_exactly_once(
    states: &[std::sync::Arc<std::sync::Mutex<TracedState>>],
    sent: &[String],
) {
    for (i, st) in states.iter().enumerate() {
        let st = st.lock().unwrap();
        // Subscribers joined live: their history starts wherever they attached.
        let first = sent
            .iter()
            .position(|d| *d == st.events[0])
            .expect("known event");
        assert_eq!(
            st.events,
            sent[first..],
            "subscriber {i}: every event once, in order"
        );
    }
}
