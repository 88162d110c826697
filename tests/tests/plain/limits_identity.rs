//! Limits count the client, not the socket. Two tokens behind one address
//! have a publish budget each; one token holds at most
//! `max_streams_per_identity` streams and gets its slots back as streams
//! close. Behind a trusted proxy every client address named in
//! `X-Forwarded-For` has its own budget, and a client cannot buy a fresh one
//! by writing the header itself. Every refusal is counted by layer.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use pushgate_e2e::gateway::{
    binary, mint_token, publish_raw, GatewayProcess, PublishOptions, OPENED_HTTP1,
};
use pushgate_e2e::grpc::GrpcClient;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::wait_until;
use reqwest::StatusCode;
use tonic::Code;

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "a-test-secret-of-enough-length-for-hs256-0123456789";

fn refusals(layer: &str) -> String {
    format!("pushgate_limit_refusals_total{{layer=\"{layer}\"}}")
}

/// A POST with an `X-Forwarded-For` header; the status.
async fn publish_from(c: &reqwest::Client, gw: &GatewayProcess, xff: &str) -> Result<StatusCode> {
    let resp = c
        .post(gw.url("/v1/topics/t/events"))
        .header("x-forwarded-for", xff)
        .body("x")
        .send()
        .await?;
    Ok(resp.status())
}

/// Opens a stream as an EventSource would, with extra headers.
async fn open(
    c: &reqwest::Client,
    gw: &GatewayProcess,
    headers: &[(&str, &str)],
) -> Result<Box<SseClient>> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match SseClient::open_with(c, &gw.url("/v1/stream?topic=t"), None, &headers).await? {
        Opened::Stream(s) => Ok(s),
        Opened::Refused(status, body) => anyhow::bail!("{status}: {body}"),
    }
}

/// A gateway with auth on (an HS256 secret) and `extra` arguments; the
/// secret's directory (kept as long as the gateway) and its path.
fn auth_gateway(extra: &[&str]) -> Result<(tempfile::TempDir, PathBuf, GatewayProcess)> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("secret");
    std::fs::write(&key, SECRET)?;
    let mut args = vec!["--auth-key-file", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let gw = GatewayProcess::start(&args)?;
    Ok((dir, key, gw))
}

#[tokio::test]
async fn two_tokens_behind_one_address_each_have_a_publish_budget() -> Result<()> {
    let (_dir, key, gw) = auth_gateway(&["--publish-rate", "3"])?;
    let a = mint_token(&key, &["--sub", "a", "--publish", "t"])?;
    let b = mint_token(&key, &["--sub", "b", "--publish", "t"])?;
    let c = reqwest::Client::new();
    let base = gw.url("");
    let opts = |token| PublishOptions::token(Some(token));
    let mut of_a = Vec::new();
    for _ in 0..5 {
        of_a.push(publish_raw(&c, &base, "t", "x", opts(&a)).await?.0.as_u16());
    }
    assert_eq!(&of_a[..3], [201; 3], "a's burst");
    assert!(of_a[3..].contains(&429), "a is over its budget: {of_a:?}");
    let (status, body) = publish_raw(&c, &base, "t", "x", opts(&b)).await?;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "b shares a's address but not its budget: {body}"
    );
    assert!(gw.metric(&refusals("identity_publish")).await? >= 1.0);
    assert_eq!(gw.metric(&refusals("address_publish")).await?, 0.0);
    Ok(())
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_budget() -> Result<()> {
    let gw = GatewayProcess::start(&["--publish-rate", "2", "--trusted-proxies", "127.0.0.1"])?;
    let c = reqwest::Client::new();
    assert_eq!(publish_from(&c, &gw, "198.51.100.1").await?, 201);
    assert_eq!(publish_from(&c, &gw, "198.51.100.1").await?, 201);
    assert_eq!(publish_from(&c, &gw, "198.51.100.1").await?, 429);
    assert_eq!(
        publish_from(&c, &gw, "198.51.100.2").await?,
        201,
        "another client behind the same proxy"
    );
    assert_eq!(
        publish_from(&c, &gw, "203.0.113.77, 198.51.100.1").await?,
        429,
        "an address the client wrote left of what the proxy saw buys nothing"
    );
    assert!(gw.metric(&refusals("address_publish")).await? >= 2.0);

    // Without trusted proxies the header is ignored: one peer, one budget.
    let plain = GatewayProcess::start(&["--publish-rate", "2"])?;
    assert_eq!(publish_from(&c, &plain, "198.51.100.3").await?, 201);
    assert_eq!(publish_from(&c, &plain, "198.51.100.4").await?, 201);
    assert_eq!(
        publish_from(&c, &plain, "198.51.100.5").await?,
        429,
        "a client cannot pick a fresh address per request"
    );
    Ok(())
}

#[tokio::test]
async fn one_identity_holds_at_most_its_streams_and_gets_slots_back() -> Result<()> {
    let (_dir, key, gw) = auth_gateway(&["--max-streams-per-identity", "2"])?;
    let a = mint_token(&key, &["--sub", "a", "--subscribe", "t"])?;
    let b = mint_token(&key, &["--sub", "b", "--subscribe", "t"])?;
    let bearer = |t: &str| format!("Bearer {t}");
    let (auth_a, auth_b) = (bearer(&a), bearer(&b));
    // One connection per stream: a closed stream closes its connection.
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build();
    let first = open(&fresh()?, &gw, &[("authorization", &auth_a)]).await?;
    let second = open(&fresh()?, &gw, &[("authorization", &auth_a)]).await?;
    assert!(first.refusal().is_none() && second.refusal().is_none());
    gw.wait_metric(OPENED_HTTP1, 2.0).await?;

    let third = open(&fresh()?, &gw, &[("authorization", &auth_a)]).await?;
    assert_eq!(
        third.refusal(),
        Some("identity_streams"),
        "an EventSource is told to come back, with a 200"
    );
    let resp = fresh()?
        .get(gw.url("/v1/stream?topic=t"))
        .bearer_auth(&a)
        .send()
        .await?;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["code"], "stream_limit", "{body}");

    let of_b = open(&fresh()?, &gw, &[("authorization", &auth_b)]).await?;
    assert!(of_b.refusal().is_none(), "b has slots of its own");
    assert!(gw.metric(&refusals("identity_streams")).await? >= 2.0);

    drop(first);
    let c = fresh()?;
    let reopened = wait_until("a's closed stream to give its slot back", T, || async {
        match open(&c, &gw, &[("authorization", &auth_a)]).await {
            Ok(s) if s.refusal().is_none() => Ok(s),
            Ok(s) => Err(format!("refused: {:?}", s.refusal())),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    drop((second, reopened, of_b));
    Ok(())
}

#[tokio::test]
async fn an_identity_counts_its_streams_over_every_protocol() -> Result<()> {
    let (_dir, key, gw) = auth_gateway(&["--max-streams-per-identity", "2", "--grpc", "true"])?;
    let a = mint_token(&key, &["--sub", "a", "--subscribe", "t"])?;
    let grpc = GrpcClient::new(gw.addr)?.with_token(&a);
    let mut over_grpc = grpc.subscribe(&["t"], "").await?;
    over_grpc.await_id(T).await?;
    let over_sse = open(
        &reqwest::Client::new(),
        &gw,
        &[("authorization", &format!("Bearer {a}"))],
    )
    .await?;
    assert!(over_sse.refusal().is_none());
    let status = match grpc.subscribe(&["t"], "").await {
        Ok(mut third) => third.end(T).await?,
        Err(status) => status.code(),
    };
    assert_eq!(
        status,
        Code::ResourceExhausted,
        "the third stream of a is refused, over gRPC too"
    );
    assert_eq!(gw.metric(&refusals("identity_streams")).await?, 1.0);
    Ok(())
}

#[tokio::test]
async fn streams_without_a_credential_are_counted_per_client_address() -> Result<()> {
    let gw = GatewayProcess::start(&[
        "--max-streams-per-address",
        "1",
        "--trusted-proxies",
        "127.0.0.0/8,::1",
    ])?;
    let c = reqwest::Client::new();
    let one = open(&c, &gw, &[("x-forwarded-for", "198.51.100.1")]).await?;
    assert!(one.refusal().is_none());
    let again = open(&c, &gw, &[("x-forwarded-for", "198.51.100.1")]).await?;
    assert_eq!(again.refusal(), Some("address_streams"));
    let other = open(&c, &gw, &[("x-forwarded-for", "198.51.100.2")]).await?;
    assert!(other.refusal().is_none(), "another client behind the proxy");
    assert_eq!(gw.metric(&refusals("address_streams")).await?, 1.0);
    assert_eq!(gw.metric(&refusals("identity_streams")).await?, 0.0);
    drop((one, other));
    Ok(())
}

#[test]
fn a_trusted_proxy_that_is_not_an_address_is_refused_at_startup() {
    for bad in ["10.0.0.0/33", "ingress", "10.0.0.1:80"] {
        let out = Command::new(binary())
            .args(["serve", "--trusted-proxies", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("trusted proxy") && err.contains(bad),
            "the error names the value: {err}"
        );
    }
}
