//! Several `pushgate` replicas on one real Redis: shared history, live
//! fan-out across replicas, resume anywhere, and recovery from a Redis restart
//! and from a replica's crash — every acknowledged event exactly once.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pushgate_e2e::gateway::{publish, GatewayProcess, OPENED_HTTP1};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::SseClient;
use pushgate_e2e::subscriber::{follow, follow_to_marker, publish_in_background, publish_reliably};
use pushgate_e2e::wait::{elapse, wait_until};

const T: Duration = Duration::from_secs(10);

fn replicas(redis: &RedisServer, n: usize) -> Vec<GatewayProcess> {
    let prefix = format!("rep{:x}", rand::random::<u32>());
    (0..n)
        .map(|i| {
            GatewayProcess::start_named(
                &format!("replica{i}"),
                &[
                    "--store",
                    &redis.url(),
                    "--redis-key-prefix",
                    &prefix,
                    "--retry",
                    "200ms",
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Streams the replicas have opened (see [`OPENED_HTTP1`]).
async fn total_opened(gws: &[GatewayProcess]) -> usize {
    let mut n = 0;
    for g in gws {
        n += g.metric(OPENED_HTTP1).await.unwrap_or(0.0) as usize;
    }
    n
}

async fn wait_opened(gws: &[GatewayProcess], want: usize) {
    wait_until(
        &format!("{want} opened streams"),
        Duration::from_secs(10),
        || async {
            match total_opened(gws).await {
                n if n == want => Ok(()),
                n => Err(format!("{n} opened")),
            }
        },
    )
    .await
    .unwrap();
}

/// Groups `t<k>-<n>` payloads by topic, keeping arrival order.
fn by_topic(data: impl Iterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in data {
        let t = d.split('-').next().unwrap().to_owned();
        m.entry(t).or_default().push(d);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_every_event_exactly_once_in_order() {
    let redis = RedisServer::start().unwrap();
    let gws = replicas(&redis, 3);
    let c = reqwest::Client::new();
    let topics = 10;
    let subscribers = 30;
    let mut subs = Vec::new();
    let mut wanted_topics = Vec::new();
    for i in 0..subscribers {
        let mine = [i % topics, (i + 3) % topics, (i + 7) % topics];
        let q: String = mine.iter().map(|t| format!("topic=t{t}&")).collect();
        wanted_topics.push(mine);
        let base = gws[i % 3].url("");
        let c = c.clone();
        subs.push(tokio::spawn(async move {
            let mut s = SseClient::connect(&c, &format!("{base}/v1/stream?{q}"), None)
                .await
                .unwrap();
            let mut got = Vec::new();
            while let Some(ev) = s.next(Duration::from_secs(30)).await.unwrap() {
                if ev.data == "END" {
                    return got;
                }
                got.push(ev.data);
            }
            panic!("stream ended early after {} events", got.len());
        }));
    }
    wait_opened(&gws, subscribers).await;
    let mut published: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let base0 = gws[0].url("");
    for n in 0..400 {
        let t = format!("t{}", n % topics);
        let data = format!("{t}-{n}");
        publish(&c, &base0, &t, &data).await.unwrap();
        published.entry(t).or_default().push(data);
    }
    for t in 0..topics {
        publish(&c, &base0, &format!("t{t}"), "END")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for (i, s) in subs.into_iter().enumerate() {
        let got = by_topic(s.await.unwrap().into_iter());
        for t in wanted_topics[i] {
            let name = format!("t{t}");
            assert_eq!(
                got.get(&name),
                published.get(&name),
                "subscriber {i} (replica {}), {name}",
                i % 3
            );
        }
        assert_eq!(got.len(), 3, "subscriber {i} got only its own topics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_replica_gets_exactly_the_missed_events() {
    let redis = RedisServer::start().unwrap();
    let gws = replicas(&redis, 3);
    let c = reqwest::Client::new();
    let q = "/v1/stream?topic=ra&topic=rb";
    let mut s = SseClient::connect(&c, &gws[0].url(q), None).await.unwrap();
    s.await_id(T).await.unwrap();
    for i in 0..5 {
        publish(
            &c,
            &gws[1].url(""),
            if i % 2 == 0 { "ra" } else { "rb" },
            &format!("x{i}"),
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        assert_eq!(s.next(T).await.unwrap().unwrap().data, format!("x{i}"));
    }
    let cursor = s.last_event_id().to_owned();
    drop(s);
    for i in 5..10 {
        publish(
            &c,
            &gws[1].url(""),
            if i % 2 == 0 { "ra" } else { "rb" },
            &format!("x{i}"),
        )
        .await
        .unwrap();
    }
    let mut r = SseClient::connect(&c, &gws[2].url(q), Some(&cursor))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 5..10 {
        got.push(r.next(T).await.unwrap().unwrap().data);
    }
    // Order is per topic: ra carries the even ones, rb the odd ones.
    let evens: Vec<&String> = got
        .iter()
        .filter(|d| d[1..].parse::<u32>().unwrap() % 2 == 0)
        .collect();
    let odds: Vec<&String> = got
        .iter()
        .filter(|d| d[1..].parse::<u32>().unwrap() % 2 == 1)
        .collect();
    assert_eq!(evens, ["x6", "x8"]);
    assert_eq!(odds, ["x5", "x7", "x9"]);
    publish(&c, &gws[0].url(""), "ra", "live").await.unwrap();
    assert_eq!(
        r.next(T).await.unwrap().unwrap().data,
        "live",
        "then live, from another replica's publish"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), r.next(T))
            .await
            .is_err(),
        "no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_publishes_with_503_and_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start().unwrap();
    let gws = replicas(&redis, 2);
    let c = reqwest::Client::new();
    let bases: Vec<String> = gws.iter().map(|g| g.url("")).collect();
    let mut subs = Vec::new();
    for i in 0..10 {
        subs.push(tokio::spawn(follow_to_marker(
            c.clone(),
            vec![bases[i % 2].clone()],
            "/v1/stream?topic=outage".into(),
            None,
            "END",
            Duration::from_secs(90),
        )));
    }
    wait_opened(&gws, 10).await;
    let mut acked = Vec::new();
    let mut attempted = HashSet::new();
    let mut refused = 0;
    let mut publish_some = |n: usize, c: reqwest::Client, base: String| {
        let start = attempted.len();
        let datas: Vec<String> = (start..start + n).map(|i| format!("o{i:05}")).collect();
        attempted.extend(datas.iter().cloned());
        async move {
            let mut out = Vec::new();
            for d in datas {
                let r = c
                    .post(format!("{base}/v1/topics/outage/events"))
                    .body(d.clone())
                    .send()
                    .await;
                out.push((d, r.map(|r| r.status().as_u16()).unwrap_or(0)));
            }
            out
        }
    };
    for (d, status) in publish_some(50, c.clone(), bases[0].clone()).await {
        assert_eq!(status, 201);
        acked.push(d);
    }
    redis.stop();
    let errors_before = gws[0].metric("pushgate_store_errors_total").await.unwrap();
    for (d, status) in publish_some(20, c.clone(), bases[0].clone()).await {
        match status {
            201 => acked.push(d),
            503 => refused += 1,
            other => panic!("publish during the outage answered {other}"),
        }
    }
    assert!(
        refused >= 15,
        "publishes during the outage fail with 503 ({refused} of 20)"
    );
    wait_until(
        "/readyz to go 503 while Redis is down",
        Duration::from_secs(5),
        || async { c.get(gws[1].url("/readyz")).send().await.unwrap().status() == 503 },
    )
    .await
    .unwrap();
    assert!(gws[0].metric("pushgate_store_errors_total").await.unwrap() > errors_before);
    elapse("the outage to last a while", Duration::from_millis(500)).await;
    redis.resume().unwrap();
    wait_until(
        "readiness to return with Redis",
        Duration::from_secs(10),
        || async { c.get(gws[0].url("/readyz")).send().await.unwrap().status() == 200 },
    )
    .await
    .unwrap();
    // Publish on the *other* replica now, so live fan-out across replicas is exercised after recovery.
    for (d, status) in publish_some(50, c.clone(), bases[1].clone()).await {
        assert_eq!(status, 201, "{d}");
        acked.push(d);
    }
    publish_reliably(&c, &bases, "outage", "END", "end", Duration::from_secs(20))
        .await
        .unwrap();
    for s in subs {
        let seen = s.await.unwrap().unwrap();
        let got: Vec<String> = seen
            .events
            .iter()
            .map(|e| e.data.clone())
            .filter(|d| d != "END")
            .collect();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "no duplicates");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in publish order");
        for a in &acked {
            assert!(unique.contains(a), "acknowledged {a} was lost");
        }
        assert!(got.iter().all(|d| attempted.contains(d)));
        assert_eq!(
            seen.connections, 1,
            "open streams survive the outage on their connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_loses_nothing() {
    let redis = RedisServer::start().unwrap();
    let mut gws = replicas(&redis, 3);
    let c = reqwest::Client::new();
    let bases: Vec<String> = gws.iter().map(|g| g.url("")).collect();
    let n = 300;
    let mut subs = Vec::new();
    for i in 0..12 {
        // Start on replica i % 3, fail over to the next ones in turn.
        let order: Vec<String> = (0..3).map(|k| bases[(i + k) % 3].clone()).collect();
        subs.push(tokio::spawn(follow(
            c.clone(),
            order,
            "/v1/stream?topic=crash".into(),
            None,
            n,
            Duration::from_secs(90),
        )));
    }
    wait_opened(&gws, 12).await;
    // The crash comes in the middle of the publishing.
    let publisher = publish_in_background(
        &c,
        vec![bases[0].clone()],
        "crash",
        ("c", n, Duration::from_millis(3)),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    gws[2].kill9();
    publisher.await.unwrap();
    let want: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
    let mut failed_over = 0;
    for s in subs {
        let seen = s.await.unwrap().unwrap();
        let got: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(got, want);
        if seen.connections > 1 {
            failed_over += 1;
        }
    }
    assert_eq!(
        failed_over, 4,
        "the killed replica's subscribers moved elsewhere"
    );
}
