//! gRPC against the real binary (`--grpc true`): a tonic subscriber is cut
//! by a restart and resumes with its last id, every event once; its ids
//! work as `Last-Event-ID` on SSE and SSE ids work as its `last_event_id`;
//! auth, refusals while draining and errors are the HTTP API's, as gRPC
//! codes; health follows readiness and reflection lists the services; an
//! outside client (gRPC's Python implementation, through reflection only)
//! subscribes, is cut by `kill -9` and resumes with its last id.

use std::time::Duration;

use anyhow::Result;
use pushgate_e2e::gateway::{hs256_key, mint_token, publish, wait_draining, GatewayProcess};
use pushgate_e2e::grpc::{GrpcClient, GrpcioSubscriber};
use pushgate_e2e::sse_client::SseClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const T: Duration = Duration::from_secs(10);

fn data(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

#[tokio::test]
async fn a_grpc_subscriber_resumes_across_a_restart_and_shares_cursors_with_sse() -> Result<()> {
    let mut gw = GatewayProcess::start(&[
        "--grpc",
        "true",
        "--drain-window",
        "300ms",
        "--retry",
        "200ms",
    ])?;
    let grpc = GrpcClient::new(gw.addr)?;
    let mut stream = grpc.subscribe(&["g/1"], "").await?;
    stream.await_id(T).await?;

    let mut acks = Vec::new();
    for d in data(1..=10) {
        acks.push(grpc.publish("g/1", &d).await?);
    }
    let got = stream.take(10, T).await?;
    assert_eq!(
        got.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        data(1..=10)
    );
    for (ev, ack) in got.iter().zip(&acks) {
        assert_eq!((ev.topic.as_str(), ev.seq), ("g/1", ack.seq));
        assert_eq!(ev.id, ack.id, "an event's id is its publish id");
    }
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );

    // SIGTERM: the stream ends within the drain window with UNAVAILABLE.
    gw.sigterm();
    assert_eq!(stream.end(T).await?, Code::Unavailable);
    gw.wait_exit(T)?;
    gw.restart()?;
    let http = reqwest::Client::new();
    let base = gw.url("");
    for d in data(11..=20) {
        publish(&http, &base, "g/1", &d).await?;
    }
    let grpc = GrpcClient::new(gw.addr)?;
    let mut resumed = grpc.subscribe(&["g/1"], &stream.last_id).await?;
    let got = resumed.take(10, T).await?;
    assert_eq!(
        got.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        data(11..=20)
    );
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );

    // A gRPC id as Last-Event-ID: SSE continues right after e5.
    let url = gw.url("/v1/stream?topic=g/1");
    let mut sse = SseClient::connect(&http, &url, Some(&acks[4].id)).await?;
    let mut sse_ids = Vec::new();
    for want in data(6..=20) {
        let ev = sse.next(T).await?.expect("stream open");
        assert_eq!(ev.data, want);
        sse_ids.push(ev.id);
    }
    // An SSE id as last_event_id: gRPC continues right after e12, and the
    // next live event follows e20 with nothing between.
    let mut from_sse = grpc.subscribe(&["g/1"], &sse_ids[6]).await?;
    let got = from_sse.take(8, T).await?;
    assert_eq!(
        got.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        data(13..=20)
    );
    grpc.publish("g/1", "e21").await?;
    assert_eq!(from_sse.take(1, T).await?[0].data, "e21");
    assert_eq!(resumed.take(1, T).await?[0].data, "e21");
    assert_eq!(sse.next(T).await?.expect("stream open").data, "e21");
    Ok(())
}

#[tokio::test]
async fn multi_topic_events_name_their_topic_and_seq() -> Result<()> {
    let gw = GatewayProcess::start(&["--grpc", "true"])?;
    let grpc = GrpcClient::new(gw.addr)?;
    for (t, d) in [("m/a", "a1"), ("m/b", "b1"), ("m/a", "a2")] {
        grpc.publish(t, d).await?;
    }
    let mut s = grpc.subscribe(&["m/a", "m/b"], "earliest").await?;
    let got = s.take(3, T).await?;
    let seen: Vec<(String, u64, String)> =
        got.into_iter().map(|e| (e.topic, e.seq, e.data)).collect();
    let mut by_topic = seen.clone();
    by_topic.sort();
    assert_eq!(
        by_topic,
        [
            ("m/a".into(), 1, "a1".into()),
            ("m/a".into(), 2, "a2".into()),
            ("m/b".into(), 1, "b1".into())
        ]
    );
    // Live, after the replay.
    grpc.publish("m/b", "b2").await?;
    let live = s.take(1, T).await?.remove(0);
    assert_eq!(
        (live.topic.as_str(), live.seq, live.data.as_str()),
        ("m/b", 2, "b2")
    );
    Ok(())
}

#[tokio::test]
async fn auth_errors_are_grpc_codes_and_a_drain_serves_calls_until_it_ends() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = hs256_key(dir.path())?;
    let mut gw = GatewayProcess::start(&[
        "--grpc",
        "true",
        "--auth-key-file",
        key.to_str().unwrap(),
        "--drain-window",
        "5s",
    ])?;
    let token = mint_token(
        &key,
        &[
            "--sub",
            "dev-1",
            "--subscribe",
            "a/**",
            "--publish",
            "a/1",
            "--ttl",
            "5m",
        ],
    )?;
    let anon = GrpcClient::new(gw.addr)?;
    let grpc = anon.with_token(&token);

    let e = anon.subscribe(&["a/1"], "").await.err().expect("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(e.metadata().get("pushgate-code").unwrap(), "unauthorized");
    let e = grpc
        .subscribe(&["b/1"], "")
        .await
        .err()
        .expect("another topic");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = grpc
        .publish("a/2", "x")
        .await
        .expect_err("not a publish grant");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = anon.publish("a/1", "x").await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = grpc
        .subscribe(&["a/1"], "not-a-cursor")
        .await
        .err()
        .expect("bad cursor");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(e.metadata().get("pushgate-code").unwrap(), "bad_cursor");
    let e = grpc.subscribe(&[], "").await.err().expect("no topic");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let mut open = grpc.subscribe(&["a/1"], "").await?;
    open.await_id(T).await?;
    let ack = grpc.publish("a/1", "kept").await?;
    assert_eq!(open.take(1, T).await?[0].id, ack.id);

    // Draining: the open stream ends within the drain window with
    // UNAVAILABLE. Its connection was told to go (GOAWAY), so a call that
    // still arrives comes on a fresh connection: nothing else would take
    // it, and it is served until the window ends, then ends the same way.
    gw.sigterm();
    let http = reqwest::Client::new();
    wait_draining(&http, &gw.url(""), T).await?;
    let fresh = GrpcClient::new(gw.addr)?.with_token(&token);
    let mut late = fresh.subscribe(&["a/1"], "").await?;
    late.await_id(T).await?;
    let ack = fresh.publish("a/1", "late").await?;
    let got = late.take(1, T).await?;
    assert_eq!(
        (got[0].id.as_str(), got[0].data.as_str()),
        (ack.id.as_str(), "late")
    );
    assert_eq!(open.end(T).await?, Code::Unavailable);
    assert_eq!(late.end(T).await?, Code::Unavailable);
    gw.wait_exit(T)?;
    Ok(())
}

#[tokio::test]
async fn health_follows_readiness_and_reflection_lists_the_services() -> Result<()> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let gw = GatewayProcess::start(&["--grpc", "true", "--drain-window", "5s"])?;
    let grpc = GrpcClient::new(gw.addr)?;
    let mut health = HealthClient::new(grpc.channel());
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in ["", "pushgate.v1.Pushgate"] {
        let got = health.check(status(service)).await?.into_inner().status;
        assert_eq!(got, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(grpc.channel());
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([list]))
        .await?
        .into_inner();
    let answer = answers.message().await?.expect("one answer");
    let Some(MessageResponse::ListServicesResponse(services)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert!(
        names.contains(&"pushgate.v1.Pushgate".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // Draining: the health service turns NOT_SERVING, as /readyz turns 503
    // (watched from before: the drain sends the connection a GOAWAY).
    let mut watch = health.watch(status("")).await?.into_inner();
    gw.sigterm();
    tokio::time::timeout(T, async {
        while let Some(r) = watch.message().await? {
            if r.status == ServingStatus::NotServing as i32 {
                return Ok::<_, tonic::Status>(());
            }
        }
        Err(tonic::Status::unknown("watch ended while serving"))
    })
    .await??;
    Ok(())
}

/// `(id, topic, seq, event_type, data)` of a message.
type Fields<'a> = (
    String,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

/// One line of the outside client, proto3 JSON as any generic client prints
/// it (`seq`, a uint64, as a string; default values left out).
fn fields(v: &serde_json::Value) -> Fields<'_> {
    (
        v["id"]
            .as_str()
            .expect("every message has an id")
            .to_owned(),
        v["topic"].as_str(),
        v["seq"].as_str(),
        v["event_type"].as_str(),
        v["data"].as_str(),
    )
}

#[tokio::test]
async fn an_outside_client_subscribes_through_reflection_and_resumes_after_kill_9() -> Result<()> {
    // gRPC's Python implementation, knowing the API only from reflection.
    let mut gw = GatewayProcess::start(&["--grpc", "true"])?;
    let http = reqwest::Client::new();
    let mut sub = GrpcioSubscriber::subscribe(gw.addr, &["o/1"], "")?;
    // Its first message is the marker with the cursor it attached at.
    let marker = sub
        .next(T)
        .await?
        .expect("the client prints the first marker");
    let (_, topic, _, event_type, body) = fields(&marker);
    assert_eq!((topic, event_type, body), (None, None, None), "{marker}");
    let mut acks = Vec::new();
    for d in data(1..=5) {
        acks.push(publish(&http, &gw.url(""), "o/1", &d).await?);
    }
    for (want, ack) in data(1..=5).iter().zip(&acks) {
        let ev = sub.next(T).await?.expect("an event");
        let seq = ack.seq.to_string();
        assert_eq!(
            fields(&ev),
            (
                ack.id.clone(),
                Some("o/1"),
                Some(seq.as_str()),
                Some("message"),
                Some(want.as_str())
            ),
            "an event's id is its publish id"
        );
    }
    let last = acks.last().expect("five acks").id.clone();
    gw.kill9();
    assert!(
        sub.next(T).await?.is_none(),
        "the client's stream ends with the connection"
    );
    let (code, said) = sub.exit(T).await?;
    assert!(
        said.contains("Code: UNAVAILABLE"),
        "the client said: {said}"
    );
    assert_eq!(code, Some(64 + Code::Unavailable as i32), "{said}");

    gw.restart()?;
    let mut missed = Vec::new();
    for d in data(6..=10) {
        missed.push(publish(&http, &gw.url(""), "o/1", &d).await?);
    }
    let mut resumed = GrpcioSubscriber::subscribe(gw.addr, &["o/1"], &last)?;
    let mut got = Vec::new();
    while got.len() < 5 {
        let ev = resumed.next(T).await?.expect("an event");
        let (id, _, _, _, body) = fields(&ev);
        if let Some(d) = body {
            got.push((id, d.to_owned()));
        }
    }
    assert_eq!(
        got,
        missed
            .iter()
            .zip(data(6..=10))
            .map(|(a, d)| (a.id.clone(), d))
            .collect::<Vec<_>>(),
        "exactly the events after its last id, with their publish ids"
    );
    // Then the live one, and nothing between.
    let live = publish(&http, &gw.url(""), "o/1", "e11").await?;
    loop {
        let ev = resumed.next(T).await?.expect("the live event");
        let (id, _, _, _, body) = fields(&ev);
        if let Some(d) = body {
            assert_eq!((id, d), (live.id.clone(), "e11"), "{ev}");
            break;
        }
    }
    Ok(())
}

#[tokio::test]
async fn grpc_is_off_unless_enabled() -> Result<()> {
    let gw = GatewayProcess::start(&[])?;
    let e = GrpcClient::new(gw.addr)?
        .publish("off/1", "x")
        .await
        .expect_err("no gRPC service");
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    Ok(())
}

#[tokio::test]
async fn grpc_messages_at_and_over_the_size_limit() -> Result<()> {
    let gw = GatewayProcess::start(&["--grpc", "true", "--max-body-bytes", "65536"])?;
    let grpc = GrpcClient::new(gw.addr)?;
    let mut sub = grpc.subscribe(&["big/1"], "").await?;
    sub.await_id(T).await?;
    // At the limit: stored and delivered whole.
    let at = "x".repeat(65536);
    grpc.publish("big/1", &at).await?;
    assert_eq!(sub.take(1, T).await?[0].data.len(), 65536);
    // One byte over: the API's own refusal.
    let e = grpc
        .publish("big/1", &"x".repeat(65537))
        .await
        .expect_err("over the limit");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.metadata().get("pushgate-code").unwrap(), "body_too_large");
    // Far over (1 MiB, which tonic's default limit of 4 MiB would read
    // whole): refused from its length prefix, before it is read.
    let e = grpc
        .publish("big/1", &"x".repeat(1 << 20))
        .await
        .expect_err("far over the limit");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // The connection, the stream and the gateway go on.
    let ack = grpc.publish("big/1", "small").await?;
    let next = sub.take(1, T).await?;
    assert_eq!(
        (next[0].id.as_str(), next[0].data.as_str()),
        (ack.id.as_str(), "small")
    );
    Ok(())
}
