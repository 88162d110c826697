//! A subscriber that behaves like a browser `EventSource`: it reconnects with
//! `Last-Event-ID` whenever its stream ends or is refused, until it has the
//! number of events it expects. Used to check "every event exactly once".

use std::time::Duration;

use crate::sse_client::SseEvent;
use anyhow::{bail, Result};
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
    let mut i = 0;
    let outcome = crate::wait::wait_until(
        &format!("publish of {key} to be acknowledged"),
        deadline,
        || {
            let base = bases[i % bases.len()].clone();
            i += 1;
            async move {
                let opts = crate::gateway::PublishOptions {
                    idempotency_key: Some(key),
                    timeout: Some(Duration::from_secs(5)),
                    ..Default::default()
                };
                let (status, body) = crate::gateway::publish_raw(client, &base, topic, data, opts)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                if status == 201 {
                    let v: serde_json::Value =
                        serde_json::from_str(&body).map_err(|e| e.to_string())?;
                    return Ok(Ok(v["seq"].as_u64().unwrap_or(0)));
                }
                if status.is_client_error() && status != 429 {
                    // Final: stop retrying.
                    return Ok(Err(format!("publish refused: {status}")));
                }
                Err(format!("{base} answered {status}"))
            }
        },
    )
    .await?;
    outcome.map_err(anyhow::Error::msg)
}

/// Publishes `n` events to `topic` one after another, each retried through
/// `bases` until acknowledged (`{prefix}{i:04}` as data, `{prefix}{i}` as
/// idempotency key), pausing `pace` between them; resolves once a tenth are
/// acknowledged, so that a scenario can break something mid-way, and hands
/// back the task that publishes the rest.
pub async fn publish_in_background(
    client: &reqwest::Client,
    bases: Vec<String>,
    topic: &'static str,
    (prefix, n, pace): (&'static str, usize, Duration),
    deadline: Duration,
) -> Result<tokio::task::JoinHandle<()>> {
    let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = {
        let (c, published) = (client.clone(), published.clone());
        tokio::spawn(async move {
            for i in 0..n {
                publish_reliably(
                    &c,
                    &bases,
                    topic,
                    &format!("{prefix}{i:04}"),
                    &format!("{prefix}{i}"),
                    deadline,
                )
                .await
                .unwrap();
                published.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(pace).await;
            }
        })
    };
    crate::wait::wait_until(
        "a tenth of the events to be published",
        Duration::from_secs(30),
        || async { published.load(std::sync::atomic::Ordering::Relaxed) >= n / 10 },
    )
    .await?;
    Ok(task)
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

/// `n` [`follow_traced`] subscribers of `topic`, each with a random trace id,
/// entering alternately through each of `bases` (as a Service spreads them).
pub struct TracedFleet {
    /// Their trace ids (routing keys).
    pub traces: Vec<String>,
    /// What each has seen so far.
    pub states: Vec<std::sync::Arc<std::sync::Mutex<TracedState>>>,
    /// Their tasks; each ends when its `END` event arrived.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TracedFleet {
    /// Starts the subscribers.
    pub fn spawn(
        client: &reqwest::Client,
        bases: &[String],
        topic: &'static str,
        n: usize,
    ) -> TracedFleet {
        let traces: Vec<String> = (0..n)
            .map(|_| format!("{:032x}", rand::random::<u128>()))
            .collect();
        let states: Vec<_> = (0..n).map(|_| std::sync::Arc::default()).collect();
        let tasks = traces
            .iter()
            .zip(&states)
            .enumerate()
            .map(|(i, (t, st))| {
                tokio::spawn(follow_traced(
                    client.clone(),
                    bases[i % bases.len()].clone(),
                    topic,
                    t.clone(),
                    std::sync::Arc::clone(st),
                ))
            })
            .collect();
        TracedFleet {
            traces,
            states,
            tasks,
        }
    }

    /// Streams each has opened so far.
    pub fn connections(&self) -> Vec<usize> {
        self.states
            .iter()
            .map(|s| s.lock().unwrap().connections)
            .collect()
    }

    /// After the weight moved from `from_bp` to `to_bp`: every subscriber is
    /// served by the track its bucket now belongs to, and exactly those whose
    /// bucket changed owner reconnected since `before` (a [`Self::connections`]).
    pub fn assert_moved_exactly(
        &self,
        buckets: &[u16],
        before: &[usize],
        from_bp: u16,
        to_bp: u16,
    ) {
        use pushgate::routing::track_of;
        for (i, st) in self.states.iter().enumerate() {
            let st = st.lock().unwrap();
            let moved = track_of(buckets[i], from_bp) != track_of(buckets[i], to_bp);
            assert_eq!(
                st.served_by.as_deref(),
                Some(track_of(buckets[i], to_bp).as_str()),
                "subscriber {i} served by the wrong track at {to_bp} bp"
            );
            if moved {
                assert!(
                    st.connections > before[i],
                    "subscriber {i} moved but was not closed"
                );
            } else {
                assert_eq!(
                    st.connections, before[i],
                    "subscriber {i} did not move but was closed at {to_bp} bp"
                );
            }
        }
    }

    /// Waits (bounded) until, after the weight moved from `from_bp` to
    /// `to_bp`, every subscriber whose bucket changed owner has reconnected
    /// and every one is served by the track its bucket now belongs to. Then
    /// [`Self::assert_moved_exactly`] checks that no other one was closed.
    pub async fn wait_moved(
        &self,
        buckets: &[u16],
        before: &[usize],
        from_bp: u16,
        to_bp: u16,
        timeout: Duration,
    ) -> Result<()> {
        use pushgate::routing::track_of;
        crate::wait::wait_until(
            &format!("the moved subscribers to reconnect at {to_bp} bp"),
            timeout,
            || async {
                let pending = self
                    .states
                    .iter()
                    .enumerate()
                    .filter(|(i, st)| {
                        let st = st.lock().unwrap();
                        let moved = track_of(buckets[*i], from_bp) != track_of(buckets[*i], to_bp);
                        (moved && st.connections <= before[*i])
                            || st.served_by.as_deref()
                                != Some(track_of(buckets[*i], to_bp).as_str())
                    })
                    .count();
                match pending {
                    0 => Ok(()),
                    k => Err(format!("{k} not there yet")),
                }
            },
        )
        .await
    }

    /// How many have opened exactly one stream so far.
    pub fn connected_once(&self) -> usize {
        self.states
            .iter()
            .filter(|s| s.lock().unwrap().connections == 1)
            .count()
    }

    /// Waits (bounded) until every subscriber has opened exactly one stream.
    pub async fn wait_connected_once(&self, timeout: Duration) -> Result<()> {
        let n = self.states.len();
        crate::wait::wait_until("every subscriber connected once", timeout, || async {
            match self.connected_once() {
                k if k == n => Ok(()),
                k => Err(format!("{k}/{n}")),
            }
        })
        .await
    }

    /// Waits (bounded) for every subscriber to see `END`, then checks each
    /// got every event from where it attached, once and in order.
    pub async fn finish(self, sent: &[String]) {
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a subscriber did not finish within 60 s")
                .expect("subscriber task");
        }
        assert_traced_exactly_once(&self.states, sent);
    }
}

/// Publishes `e00000`, `e00001`, … to one topic every `every` until stopped,
/// each with its own idempotency key and retried until acknowledged (so a
/// gateway restarting under it loses and duplicates nothing).
pub struct Ticker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Ticker {
    /// Starts publishing through `base`.
    pub fn start(
        client: &reqwest::Client,
        base: String,
        topic: &'static str,
        every: Duration,
    ) -> Ticker {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, flag, count) = (client.clone(), stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let d = format!("e{:05}", sent.len());
                let bases = std::slice::from_ref(&base);
                publish_reliably(&c, bases, topic, &d, &d, Duration::from_secs(120))
                    .await
                    .unwrap();
                sent.push(d);
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
            sent
        });
        Ticker { stop, acked, task }
    }

    /// How many events have been acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` more events than now have been
    /// acknowledged: the publishing goes on through whatever just happened.
    pub async fn wait_more(&self, n: usize, timeout: Duration) -> Result<()> {
        let want = self.acked() + n;
        crate::wait::wait_until(
            &format!("{n} more acknowledged publishes"),
            timeout,
            || async {
                match self.acked() {
                    k if k >= want => Ok(()),
                    k => Err(format!("{k} of {want}")),
                }
            },
        )
        .await
    }

    /// Stops, then publishes `END`; returns everything it published, `END` last.
    pub async fn finish(self, client: &reqwest::Client, base: &str, topic: &str) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut sent = self.task.await.expect("publisher task");
        let bases = [base.to_owned()];
        publish_reliably(
            client,
            &bases,
            topic,
            "END",
            "END",
            Duration::from_secs(120),
        )
        .await
        .unwrap();
        sent.push("END".into());
        sent
    }
}
