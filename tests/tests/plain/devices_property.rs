//! Property: a stateless device that acks what it processes, under random
//! publishes (with and without a short TTL), disconnects, waits that let
//! commands expire, and `kill -9` restarts of the gateway, on either store:
//! - nothing is delivered twice, and nothing at or before an acknowledged
//!   position is delivered after the ack;
//! - every event without a TTL is delivered (exactly once);
//! - an event with a TTL is delivered, or it expired unacknowledged and the
//!   loss counter counted it: the counter (summed over every process's
//!   lifetime) equals the number of events never delivered.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use proptest::prelude::*;
use pushgate_e2e::gateway::{config_file, publish_query, redis_pair, GatewayProcess};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::elapse;
use reqwest::StatusCode;
use serde_json::json;

const T: Duration = Duration::from_secs(10);
const LOSS: &str = "pushgate_messages_expired_unacked_total";
const TOPIC: &str = "dev/prop/cmd";
const DEVICE: &str = "prop";
/// The short TTL of commands (long enough to be delivered when online).
const TTL_MS: u64 = 400;

#[derive(Debug, Clone)]
enum Op {
    /// Publish through replica `via`, with the short TTL or none.
    Publish { ttl: bool, via: usize },
    /// Open the device's stream (no cursor) on replica `on`, if closed,
    /// and read what it replays.
    Connect { on: usize },
    /// Read everything published so far (up to a marker), acking each.
    Read,
    /// Close the stream.
    Disconnect,
    /// Let time pass (commands may expire).
    Wait { ms: u64 },
    /// `kill -9` replica `which` and start it again.
    Restart { which: usize },
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), 0..replicas).prop_map(|(ttl, via)| Op::Publish { ttl, via }),
        2 => (0..replicas).prop_map(|on| Op::Connect { on }),
        2 => Just(Op::Read),
        2 => Just(Op::Disconnect),
        2 => (0u64..700).prop_map(|ms| Op::Wait { ms }),
        1 => (0..replicas).prop_map(|which| Op::Restart { which }),
    ]
}

/// What the device and the test know.
struct World {
    fleet: Vec<GatewayProcess>,
    client: reqwest::Client,
    stream: Option<SseClient>,
    published: Vec<(String, bool)>,
    delivered: Vec<String>,
    /// Data of the events the device acknowledged.
    acked: HashSet<String>,
    /// Loss counted by processes that were killed since.
    loss_before: f64,
    markers: usize,
}

impl World {
    async fn publish(&mut self, data: String, ttl: bool, via: usize) -> Result<()> {
        let q = if ttl {
            format!("?ttl={TTL_MS}ms")
        } else {
            String::new()
        };
        let base = self.fleet[via].url("");
        publish_query(&self.client, &base, TOPIC, &data, &q).await?;
        self.published.push((data, ttl));
        Ok(())
    }

    async fn connect(&mut self, on: usize) -> Result<()> {
        if self.stream.is_some() {
            return Ok(());
        }
        let url = self.fleet[on].url(&format!("/v1/stream?topic={TOPIC}&device={DEVICE}"));
        match SseClient::open(&self.client, &url, None).await? {
            Opened::Stream(s) => {
                let mut s = *s;
                s.await_id(T).await?;
                self.stream = Some(s);
                // The replay is read (and its accounting done) before the
                // next step, so a restart cannot cut it short.
                self.read().await
            }
            Opened::Refused(status, body) => bail!("stream refused: {status} {body}"),
        }
    }

    /// Reads up to a fresh marker, acking every message right away (so a
    /// disconnect or a restart between steps never loses an ack).
    async fn read(&mut self) -> Result<()> {
        if self.stream.is_none() {
            return Ok(());
        }
        self.markers += 1;
        let marker = format!("m{}", self.markers);
        self.publish(marker.clone(), false, 0).await?;
        loop {
            let s = self.stream.as_mut().expect("checked");
            let Some(e) = s.next(T).await? else {
                bail!("stream ended before {marker}");
            };
            if e.event_type != "message" {
                continue;
            }
            if self.acked.contains(&e.data) {
                bail!("{} delivered after it was acknowledged", e.data);
            }
            if self.delivered.contains(&e.data) {
                bail!("{} delivered twice", e.data);
            }
            self.delivered.push(e.data.clone());
            let resp = self
                .client
                .post(self.fleet[0].url(&format!("/v1/devices/{DEVICE}/ack")))
                .json(&json!({ "id": e.id }))
                .send()
                .await?;
            if resp.status() != StatusCode::OK {
                bail!("ack answered {}", resp.status());
            }
            self.acked.insert(e.data.clone());
            if e.data == marker {
                return Ok(());
            }
        }
    }

    async fn restart(&mut self, which: usize) -> Result<()> {
        // Counters die with the process: read what it counted first (a
        // stream is read up to now, so nothing is being counted).
        self.read().await?;
        self.loss_before += self.fleet[which].metric(LOSS).await?;
        self.fleet[which].kill9();
        self.fleet[which].restart()?;
        // Pooled connections died with the process; so did a stream on it.
        self.client = reqwest::Client::new();
        self.stream = None;
        Ok(())
    }

    async fn loss(&self) -> Result<f64> {
        let mut sum = self.loss_before;
        for g in &self.fleet {
            sum += g.metric(LOSS).await?;
        }
        Ok(sum)
    }
}

async fn run(fleet: Vec<GatewayProcess>, ops: &[Op]) -> Result<()> {
    let mut w = World {
        fleet,
        client: reqwest::Client::new(),
        stream: None,
        published: Vec::new(),
        delivered: Vec::new(),
        acked: HashSet::new(),
        loss_before: 0.0,
        markers: 0,
    };
    // A device that never acknowledged joins live; from its first ack on
    // it resumes from its acknowledged position.
    w.connect(0).await?;
    w.stream = None;
    for (n, op) in ops.iter().enumerate() {
        let step = async {
            match *op {
                Op::Publish { ttl, via } => w.publish(format!("e{n}"), ttl, via).await,
                Op::Connect { on } => w.connect(on).await,
                Op::Read => w.read().await,
                Op::Disconnect => {
                    w.stream = None;
                    Ok(())
                }
                Op::Wait { ms } => {
                    elapse(
                        "a generated pause (TTLs run out in some)",
                        Duration::from_millis(ms),
                    )
                    .await;
                    Ok(())
                }
                Op::Restart { which } => w.restart(which).await,
            }
        };
        step.await.with_context(|| format!("step {n}: {op:?}"))?;
    }
    // Settle: every command has expired by now; the device comes back once more.
    elapse("every TTL to run out", Duration::from_millis(TTL_MS + 200)).await;
    w.stream = None;
    w.connect(0).await?;

    let delivered: HashSet<&String> = w.delivered.iter().collect();
    let mut never = 0;
    for (data, ttl) in &w.published {
        if !delivered.contains(data) {
            if !ttl {
                bail!("{data} has no TTL and was never delivered");
            }
            never += 1;
        }
    }
    let order: Vec<usize> = w
        .delivered
        .iter()
        .map(|d| {
            w.published
                .iter()
                .position(|(p, _)| p == d)
                .expect("published")
        })
        .collect();
    if !order.windows(2).all(|p| p[0] < p[1]) {
        bail!("delivered out of order: {:?}", w.delivered);
    }
    let loss = w.loss().await?;
    eprintln!(
        "case: {} published, {} delivered, {never} expired undelivered, {} ops",
        w.published.len(),
        w.delivered.len(),
        ops.len()
    );
    if loss != never as f64 {
        bail!("loss counter {loss}, but {never} events were never delivered");
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 6,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fast_trim() -> tempfile::NamedTempFile {
    config_file("retention:\n  trim_interval: 100ms\n").unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_device_loses_only_what_expired_and_counts_it_embedded(ops in prop::collection::vec(op(1), 10..40)) {
        let cfg = fast_trim();
        let gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()]).unwrap();
        let r = runtime().block_on(run(vec![gw], &ops));
        prop_assert!(r.is_ok(), "{:#}", r.unwrap_err());
    }

    #[test]
    fn a_device_loses_only_what_expired_and_counts_it_on_redis(ops in prop::collection::vec(op(2), 10..40)) {
        let redis = RedisServer::start().unwrap();
        let cfg = fast_trim();
        let (a, b) = redis_pair(&redis, &["--config", cfg.path().to_str().unwrap()]).unwrap();
        let fleet = vec![a, b];
        let r = runtime().block_on(run(fleet, &ops));
        prop_assert!(r.is_ok(), "{:#}", r.unwrap_err());
    }
}
