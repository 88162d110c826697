//! Canary routing by trace-ID hash between two real `pushgate` processes (one
//! per track) on one Redis, driven by a routing-table file: the split matches
//! the weight exactly bucket for bucket, only streams whose bucket moved are
//! closed, and every subscriber gets every event exactly once, in order.

use std::time::Duration;

use pushgate::routing::{bucket, track_of, Track};
use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::subscriber::{Ticker, TracedFleet};
use pushgate_e2e::wait::wait_until;

const SALT: &str = "canary-test";
/// The tracks' shared peer token (the operator makes one per PushGateway).
const PEER_TOKEN: &str = "test-peer-token-0123456789abcdef";

fn peer_token_file(dir: &std::path::Path) -> String {
    let p = dir.join("peer-token");
    std::fs::write(&p, PEER_TOKEN).unwrap();
    p.to_str().unwrap().to_owned()
}

fn write_table(path: &std::path::Path, weight_bp: u16) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("weight_bp: {weight_bp}\nsalt: {SALT}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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
    let token = peer_token_file(dir.path());
    let common = |track: &str, peer: String| -> Vec<String> {
        vec![
            "--peer-token-file".into(),
            token.clone(),
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
    let fleet = TracedFleet::spawn(&c, &[stable.url(""), canary.url("")], "canary", n);
    let buckets: Vec<u16> = fleet.traces.iter().map(|t| bucket(SALT, t)).collect();
    let publisher = Ticker::start(&c, stable.url(""), "canary", Duration::from_millis(10));
    fleet
        .wait_connected_once(Duration::from_secs(10))
        .await
        .unwrap();
    let mut previous = 0u16;
    for weight in [0u16, 3000, 10000, 0] {
        let before = fleet.connections();
        write_table(&table, weight);
        let want_canary = buckets
            .iter()
            .filter(|b| track_of(**b, weight) == Track::Canary)
            .count();
        wait_until(
            &format!("weight {weight}: {want_canary} canary streams"),
            Duration::from_secs(10),
            || async {
                let (s, k) = (
                    stable.streams_on_track("stable").await,
                    canary.streams_on_track("canary").await,
                );
                if s == n - want_canary && k == want_canary {
                    Ok(())
                } else {
                    Err(format!("stable {s} canary {k}"))
                }
            },
        )
        .await
        .unwrap();
        // Every moved subscriber has reconnected on its new track: the
        // closings of this change are over, so one that was closed without
        // moving would show now.
        fleet
            .wait_moved(&buckets, &before, previous, weight, Duration::from_secs(10))
            .await
            .unwrap();
        fleet.assert_moved_exactly(&buckets, &before, previous, weight);
        previous = weight;
    }
    let sent = publisher.finish(&c, &stable.url(""), "canary").await;
    fleet.finish(&sent).await;
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
    let token = peer_token_file(dir.path());
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
            "--peer-token-file",
            &token,
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
            "--peer-token-file",
            &token,
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

/// A stable/canary pair on one Redis, every bucket on the canary, the
/// stable pod proxying: (stable, canary, table file dir).
fn all_to_canary(
    redis: &RedisServer,
    stable_extra: &[&str],
) -> (GatewayProcess, GatewayProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("routing.yaml");
    write_table(&table, 10_000);
    let token = peer_token_file(dir.path());
    let (a_stable, a_canary) = (
        GatewayProcess::free_addr().unwrap(),
        GatewayProcess::free_addr().unwrap(),
    );
    let t = table.to_str().unwrap().to_owned();
    let args = |track: &'static str, peer: String, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--store",
            &redis.url(),
            "--track",
            track,
            "--peer-url",
            &peer,
            "--routing-table-file",
            &t,
            "--peer-token-file",
            &token,
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let sargs = args("stable", format!("http://{a_canary}"), stable_extra);
    let cargs = args("canary", format!("http://{a_stable}"), &["--retry", "5s"]);
    let refs = |v: &[String]| v.iter().map(String::clone).collect::<Vec<_>>();
    let stable = GatewayProcess::start_on(
        "stable",
        a_stable,
        &refs(&sargs).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let canary = GatewayProcess::start_on(
        "canary",
        a_canary,
        &refs(&cargs).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    (stable, canary, dir)
}

fn traced(trace: &str) -> Vec<(String, String)> {
    vec![(
        "traceparent".to_owned(),
        format!("00-{trace}-00f067aa0ba902b7-01"),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_headers_are_refused_and_tables_must_agree() {
    let redis = RedisServer::start().unwrap();
    let (stable, mut canary, _dir) = all_to_canary(&redis, &[]);
    let c = reqwest::Client::new();
    let url = stable.url("/v1/stream?topic=forge");
    let trace = format!("{:032x}", rand::random::<u128>());
    let version =
        pushgate::routing::RoutingTable::from_yaml(&format!("weight_bp: 10000\nsalt: {SALT}\n"))
            .unwrap()
            .version()
            .to_string();
    // Routed as the table says: proxied to the canary, which serves it.
    let Opened::Stream(s) = SseClient::open_with(&c, &url, None, &traced(&trace))
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    assert_eq!(s.headers()["x-pushgate-track"], "canary");
    drop(s);
    // A client claiming to be the canary's proxy, to be served by stable:
    // without the token, or with a wrong one, it is refused (for now, so a
    // genuine peer with a stale token retries), never obeyed.
    for token in [None, Some("guessed-token-guessed-token")] {
        let mut h = traced(&trace);
        h.push(("x-pushgate-proxied".into(), "canary".into()));
        h.push(("x-pushgate-route-version".into(), version.clone()));
        if let Some(t) = token {
            h.push(("x-pushgate-proxy-token".into(), t.into()));
        }
        let Opened::Stream(s) = SseClient::open_with(&c, &url, None, &h).await.unwrap() else {
            panic!("an EventSource gets a 200")
        };
        assert_eq!(
            s.refusal(),
            Some("proxy_unauthenticated"),
            "token {token:?}"
        );
    }
    // A genuine peer request (as the stable pod forwards it to the canary)
    // routed with another table is refused until the tables agree; with the
    // same table the canary serves it itself and never sends it back.
    let curl = canary.url("/v1/stream?topic=forge");
    let mut h = traced(&trace);
    h.push(("x-pushgate-proxied".into(), "stable".into()));
    h.push(("x-pushgate-proxy-token".into(), PEER_TOKEN.into()));
    let mut stale = h.clone();
    stale.push(("x-pushgate-route-version".into(), "0000000000000001".into()));
    let Opened::Stream(s) = SseClient::open_with(&c, &curl, None, &stale).await.unwrap() else {
        panic!()
    };
    assert_eq!(s.refusal(), Some("route_changed"));
    h.push(("x-pushgate-route-version".into(), version.clone()));
    let Opened::Stream(s) = SseClient::open_with(&c, &curl, None, &h).await.unwrap() else {
        panic!()
    };
    assert_eq!(s.refusal(), None);
    assert_eq!(s.headers()["x-pushgate-track"], "canary");
    assert_eq!(canary.streams_on_track("canary").await, 1);
    drop(s);

    // The canary is gone: its streams are refused for now, not served on
    // the stable track where nothing would ever move them back.
    canary.kill9();
    let Opened::Stream(s) = SseClient::open_with(&c, &url, None, &traced(&trace))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(s.refusal(), Some("peer_unreachable"));
    let resp = c
        .get(&url)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "other clients get the JSON form");
    assert_eq!(stable.streams_on_track("stable").await, 0);
    let m = stable.metrics().await.unwrap();
    for reason in ["proxy_unauthenticated", "peer_unreachable"] {
        let n = pushgate_e2e::gateway::metric_value(
            &m,
            &format!("pushgate_streams_rejected_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1.0, "{reason}: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_pod_closes_the_streams_it_forwards_with_a_retry() {
    let redis = RedisServer::start().unwrap();
    let (mut stable, canary, _dir) =
        all_to_canary(&redis, &["--drain-window", "2s", "--retry", "300ms"]);
    let c = reqwest::Client::new();
    let trace = format!("{:032x}", rand::random::<u128>());
    let url = stable.url("/v1/stream?topic=fwd");
    let mut s = match SseClient::open_with(&c, &url, None, &traced(&trace))
        .await
        .unwrap()
    {
        Opened::Stream(s) => s,
        Opened::Refused(st, b) => panic!("{st}: {b}"),
    };
    assert_eq!(s.headers()["x-pushgate-track"], "canary");
    s.await_id(Duration::from_secs(5)).await.unwrap();
    let from_canary = s.retry().unwrap();
    assert!(from_canary >= 2500, "the canary's own retry: {from_canary}");
    publish(&c, &canary.url(""), "fwd", "f1").await.unwrap();
    assert_eq!(
        s.next(Duration::from_secs(5)).await.unwrap().unwrap().data,
        "f1"
    );
    stable.sigterm();
    // The forwarded stream ends within the drain window, with the stable
    // pod's own retry hint; the canary itself is not draining.
    assert!(s.next(Duration::from_secs(10)).await.unwrap().is_none());
    let hint = s.retry().unwrap();
    assert!(
        (150..=450).contains(&hint),
        "the draining pod's retry: {hint}"
    );
    let cursor = s.last_event_id().to_owned();
    stable.wait_exit(Duration::from_secs(10)).unwrap();
    publish(&c, &canary.url(""), "fwd", "f2").await.unwrap();
    let mut r = SseClient::connect(&c, &canary.url("/v1/stream?topic=fwd"), Some(&cursor))
        .await
        .unwrap();
    assert_eq!(
        r.next(Duration::from_secs(5)).await.unwrap().unwrap().data,
        "f2"
    );
}
