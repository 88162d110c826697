//! Canary routing by trace-ID hash between two real `pushgate` processes (one
//! per track) on one Redis, driven by a routing-table file: the split matches
//! the weight exactly bucket for bucket, only streams whose bucket moved are
//! closed, and every subscriber gets every event exactly once, in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushgate::routing::bucket::{bucket, track_of, Track};
use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::subscriber::{assert_traced_exactly_once, follow_traced, TracedState};

const SALT: &str = "canary-test";

fn write_table(path: &std::path::Path, weight_bp: u16) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("weight_bp: {weight_bp}\nsalt: {SALT}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn served(gw: &GatewayProcess, track: &str) -> usize {
    gw.metric(&format!("pushgate_streams_by_track{{track=\"{track}\"}}"))
        .await
        .unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_move_only_the_moved_buckets_with_zero_loss() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("routing.yaml");
    write_table(&table, 0);
    let (a_stable, a_canary) = (
        GatewayProcess::free_addr().unwrap(),
        GatewayProcess::free_addr().unwrap(),
    );
    let prefix = format!("can{:x}", rand::random::<u32>());
    let common = |track: &str, peer: String| -> Vec<String> {
        vec![
            "--store".into(),
            redis.url(),
            "--redis-key-prefix".into(),
            prefix.clone(),
            "--track".into(),
            track.into(),
            "--peer-url".into(),
            peer,
            "--routing-table-file".into(),
            table.to_str().unwrap().into(),
            "--retry".into(),
            "200ms".into(),
            "--accept-rate".into(),
            "100000".into(),
        ]
    };
    let sargs = common("stable", format!("http://{a_canary}"));
    let cargs = common("canary", format!("http://{a_stable}"));
    let stable = GatewayProcess::start_on(
        "stable",
        a_stable,
        &sargs.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let canary = GatewayProcess::start_on(
        "canary",
        a_canary,
        &cargs.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let c = reqwest::Client::new();
    let n = 200;
    let traces: Vec<String> = (0..n)
        .map(|_| format!("{:032x}", rand::random::<u128>()))
        .collect();
    let buckets: Vec<u16> = traces.iter().map(|t| bucket(SALT, t)).collect();
    let states: Vec<Arc<Mutex<TracedState>>> = (0..n).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        // Half enter through each pod, as a Service would spread them.
        let base = if i % 2 == 0 {
            stable.url("")
        } else {
            canary.url("")
        };
        tasks.push(tokio::spawn(follow_traced(
            c.clone(),
            base,
            "canary",
            t.clone(),
            states[i].clone(),
        )));
    }
    let publisher = {
        let (c, base) = (c.clone(), stable.url(""));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let d = format!("e{:05}", sent.len());
                publish(&c, &base, "canary", &d).await.unwrap();
                sent.push(d);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        });
        (stop, task)
    };
    for _ in 0..500 {
        if states.iter().all(|s| s.lock().unwrap().connections == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        states.iter().all(|s| s.lock().unwrap().connections == 1),
        "every subscriber connected once"
    );
    let mut previous = 0u16;
    for weight in [0u16, 3000, 10000, 0] {
        let before: Vec<usize> = states
            .iter()
            .map(|s| s.lock().unwrap().connections)
            .collect();
        write_table(&table, weight);
        let want_canary = buckets
            .iter()
            .filter(|b| track_of(**b, weight) == Track::Canary)
            .count();
        let mut ok = false;
        for _ in 0..500 {
            let (s, k) = (
                served(&stable, "stable").await,
                served(&canary, "canary").await,
            );
            if s == n - want_canary && k == want_canary {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            ok,
            "weight {weight}: want {want_canary} canary streams, have stable {} canary {}",
            served(&stable, "stable").await,
            served(&canary, "canary").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (i, st) in states.iter().enumerate() {
            let st = st.lock().unwrap();
            let moved = track_of(buckets[i], previous) != track_of(buckets[i], weight);
            let expect = track_of(buckets[i], weight).as_str();
            assert_eq!(
                st.served_by.as_deref(),
                Some(expect),
                "subscriber {i} served by the wrong track at {weight}"
            );
            if moved {
                assert!(
                    st.connections > before[i],
                    "subscriber {i} moved but was not closed"
                );
            } else {
                assert_eq!(
                    st.connections, before[i],
                    "subscriber {i} did not move but was closed at {weight}"
                );
            }
        }
        previous = weight;
    }
    publisher
        .0
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = publisher.1.await.unwrap();
    publish(&c, &stable.url(""), "canary", "END").await.unwrap();
    sent.push("END".into());
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_traced_exactly_once(&states, &sent);
    assert!(stable.metric("pushgate_streams_moved_total").await.unwrap() > 0.0);
    assert!(canary.metric("pushgate_streams_moved_total").await.unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_header_and_issued_cookie_keep_their_track() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("routing.yaml");
    write_table(&table, 5000);
    let (a_stable, a_canary) = (
        GatewayProcess::free_addr().unwrap(),
        GatewayProcess::free_addr().unwrap(),
    );
    let t = table.to_str().unwrap();
    let (ps, pc) = (format!("http://{a_canary}"), format!("http://{a_stable}"));
    let stable = GatewayProcess::start_on(
        "stable",
        a_stable,
        &[
            "--store",
            &redis.url(),
            "--track",
            "stable",
            "--peer-url",
            &ps,
            "--routing-table-file",
            t,
        ],
    )
    .unwrap();
    let _canary = GatewayProcess::start_on(
        "canary",
        a_canary,
        &[
            "--store",
            &redis.url(),
            "--track",
            "canary",
            "--peer-url",
            &pc,
            "--routing-table-file",
            t,
        ],
    )
    .unwrap();
    let c = reqwest::Client::new();
    let url = stable.url("/v1/stream?topic=o");
    for forced in ["canary", "stable"] {
        let h = vec![("x-pushgate-track".to_owned(), forced.to_owned())];
        let Opened::Stream(s) = SseClient::open_with(&c, &url, None, &h).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.headers()["x-pushgate-track"], forced);
    }
    // No key at all: the gateway issues one in a cookie; replaying it keeps the track.
    for _ in 0..20 {
        let Opened::Stream(s) = SseClient::open(&c, &url, None).await.unwrap() else {
            panic!()
        };
        let cookie = s.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.starts_with("pushgate_rk=") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let track = s.headers()["x-pushgate-track"].to_str().unwrap().to_owned();
        let key = cookie.split(';').next().unwrap().to_owned();
        let expect = track_of(bucket(SALT, key.trim_start_matches("pushgate_rk=")), 5000).as_str();
        assert_eq!(
            track, expect,
            "the first stream already used the issued key"
        );
        drop(s);
        for _ in 0..3 {
            let h = vec![("cookie".to_owned(), key.clone())];
            let Opened::Stream(again) = SseClient::open_with(&c, &url, None, &h).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(again.headers()["x-pushgate-track"].to_str().unwrap(), track);
            assert!(
                again.headers().get("set-cookie").is_none(),
                "an existing key is kept"
            );
        }
    }
    // A malformed traceparent falls back to the next key source, never a 500.
    let h = vec![("traceparent".to_owned(), "00-zz-yy-01".to_owned())];
    assert!(matches!(
        SseClient::open_with(&c, &url, None, &h).await.unwrap(),
        Opened::Stream(_)
    ));
}
