//! Property: under random interleavings of publishes to three topics and
//! subscribers that disconnect at random points and resume with the last id
//! they saw, every subscriber sees every event of its topics exactly once, in
//! per-topic order, across the history→live seam. Runs an in-process gateway.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use pushgate::config::{Config, FsyncPolicy};
use pushgate::Gateway;
use pushgate_e2e::gateway::publish;
use pushgate_e2e::sse_client::SseClient;

const TOPICS: [&str; 3] = ["p0", "p1", "p2"];
/// Which topics each subscriber reads.
const SUBSCRIPTIONS: [&[usize]; 3] = [&[0], &[0, 1, 2], &[1, 2]];

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    /// Subscriber `sub` reads up to `read` more events, then drops its connection and resumes.
    Cut {
        sub: usize,
        read: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize).prop_map(Op::Publish),
        1 => (0..3usize, 0..6usize).prop_map(|(sub, read)| Op::Cut { sub, read }),
    ]
}

struct Sub {
    query: String,
    stream: SseClient,
    cursor: String,
    /// Per topic, the data received, in order.
    got: HashMap<String, Vec<String>>,
    received: usize,
}

impl Sub {
    async fn read(&mut self, n: usize) {
        for _ in 0..n {
            let ev = self
                .stream
                .next(Duration::from_secs(5))
                .await
                .unwrap()
                .expect("stream open");
            assert_ne!(ev.event_type, "reset", "nothing is trimmed in this test");
            let topic = ev.data.split('-').next().unwrap().to_owned();
            self.got.entry(topic).or_default().push(ev.data);
            self.received += 1;
            self.cursor = self.stream.last_event_id().to_owned();
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        fsync: FsyncPolicy::Normal,
        ..Config::default()
    };
    config.limits.accept_rate = 100_000;
    config.limits.publish_rate = 100_000;
    let gw = Gateway::start(config).await.unwrap();
    let base = format!("http://{}", gw.server.api_addr);
    let c = reqwest::Client::new();
    let mut subs = Vec::new();
    for topics in SUBSCRIPTIONS {
        let query: String = topics
            .iter()
            .map(|t| format!("topic={}&", TOPICS[*t]))
            .collect();
        let query = format!("/v1/stream?{query}");
        let mut stream = SseClient::connect(&c, &format!("{base}{query}"), None)
            .await
            .unwrap();
        let cursor = stream.await_id(Duration::from_secs(5)).await.unwrap();
        subs.push(Sub {
            query,
            stream,
            cursor,
            got: HashMap::new(),
            received: 0,
        });
    }
    let mut published: Vec<Vec<String>> = vec![Vec::new(); 3];
    for op in ops {
        match op {
            Op::Publish(t) => {
                let data = format!("{}-{}", TOPICS[t], published[t].len());
                publish(&c, &base, TOPICS[t], &data).await.unwrap();
                published[t].push(data);
            }
            Op::Cut { sub, read } => {
                let s = &mut subs[sub];
                let available: usize = SUBSCRIPTIONS[sub].iter().map(|t| published[*t].len()).sum();
                s.read(read.min(available - s.received)).await;
                let url = format!("{base}{}", s.query);
                s.stream = SseClient::connect(&c, &url, Some(&s.cursor)).await.unwrap();
            }
        }
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let available: usize = SUBSCRIPTIONS[i].iter().map(|t| published[*t].len()).sum();
        s.read(available - s.received).await;
        for t in SUBSCRIPTIONS[i] {
            let got = s.got.get(TOPICS[*t]).cloned().unwrap_or_default();
            assert_eq!(got, published[*t], "subscriber {i}, topic {}", TOPICS[*t]);
        }
        assert!(
            tokio::time::timeout(
                Duration::from_millis(50),
                s.stream.next(Duration::from_secs(1))
            )
            .await
            .is_err(),
            "subscriber {i} got more than was published"
        );
    }
    gw.server.shutdown(Duration::from_millis(100)).await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 50,
        // Found by path, not by proptest's guess from the source file (which
        // looks for a crate root next to it: this file is a module of `plain`).
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plain/resume_property.proptest-regressions"),
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn resume_is_exactly_once_in_order(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
