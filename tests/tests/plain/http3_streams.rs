//! HTTP/3 against the real binary (`--http3 true` with TLS from a test CA):
//! TCP responses advertise it with `Alt-Svc`; an h3 client streams,
//! publishes, is cut by a drain and resumes on the restarted gateway with
//! every event once; auth and refusals are the TCP ones; HTTP/3 without TLS
//! does not start.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use pushgate_e2e::gateway::{
    binary, config_file, hs256_key, mint_token, publish, wait_draining, GatewayProcess,
};
use pushgate_e2e::h3_client::H3Client;
use pushgate_e2e::pki::TestCa;
use pushgate_e2e::wait::wait_until;

const T: Duration = Duration::from_secs(10);

fn tls_args(ca: &TestCa, dir: &Path) -> Result<Vec<String>> {
    let (cert, key) = ca.leaf("h3")?.write_to(dir)?;
    Ok(vec![
        "--tls-cert-file".into(),
        cert.display().to_string(),
        "--tls-key-file".into(),
        key.display().to_string(),
        "--http3".into(),
        "true".into(),
    ])
}

fn https(ca: &TestCa, gw: &GatewayProcess) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes())?)
        .resolve("localhost", gw.addr)
        .build()?)
}

fn data(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

#[tokio::test]
async fn an_h3_stream_resumes_exactly_across_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new()?;
    let mut args = tls_args(&ca, dir.path())?;
    args.extend(["--drain-window", "300ms", "--retry", "200ms"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gw = GatewayProcess::start(&args)?;
    let base = format!("https://localhost:{}", gw.addr.port());
    let tcp = https(&ca, &gw)?;

    // TCP answers advertise HTTP/3 on the same port.
    let health = tcp.get(format!("{base}/healthz")).send().await?;
    assert_eq!(
        health.headers()["alt-svc"],
        format!("h3=\":{}\"; ma=86400", gw.addr.port()).as_str()
    );

    let mut h3 = H3Client::connect(gw.addr, &ca.pem).await?;
    let mut stream = h3.stream("topic=h/1", None, &[]).await?;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    stream.await_id(T).await?;
    for d in data(1..=5) {
        let (status, body) = h3.publish("h/1", &d, &[]).await?;
        assert_eq!(status, 201, "{body}");
    }
    for want in data(1..=5) {
        assert_eq!(stream.next(T).await?.expect("open").data, want);
    }

    // A drain ends the stream with a retry hint; the restarted gateway
    // serves the rest from where it stood.
    gw.sigterm();
    while stream.next(T).await?.is_some() {}
    let last = stream.last_event_id().to_owned();
    gw.wait_exit(T)?;
    gw.restart()?;
    for d in data(6..=10) {
        publish(&https(&ca, &gw)?, &base, "h/1", &d).await?;
    }
    let mut h3 = H3Client::connect(gw.addr, &ca.pem).await?;
    let mut resumed = h3.stream("topic=h/1", Some(&last), &[]).await?;
    for want in data(6..=10) {
        assert_eq!(resumed.next(T).await?.expect("open").data, want);
    }
    let (status, _) = h3.publish("h/1", "e11", &[]).await?;
    assert_eq!(status, 201);
    assert_eq!(
        resumed.next(T).await?.expect("open").data,
        "e11",
        "nothing between e10 and e11"
    );
    h3.close().await;
    Ok(())
}

#[tokio::test]
async fn auth_and_drain_over_h3_are_the_tcp_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new()?;
    let key = hs256_key(dir.path())?;
    let mut args = tls_args(&ca, dir.path())?;
    args.extend(["--auth-key-file".into(), key.display().to_string()]);
    args.extend(["--drain-window", "5s"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = GatewayProcess::start(&args)?;
    let token = mint_token(
        &key,
        &[
            "--sub",
            "d",
            "--subscribe",
            "a/**",
            "--publish",
            "a/1",
            "--ttl",
            "5m",
        ],
    )?;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let mut h3 = H3Client::connect(gw.addr, &ca.pem).await?;

    let mut r = h3.stream("topic=a/1", None, &[]).await?;
    assert_eq!(r.status, 401);
    assert!(r.text().await?.contains("\"unauthorized\""));
    let mut r = h3.stream("topic=b/1", None, &auth).await?;
    assert_eq!(r.status, 403);
    assert!(r.text().await?.contains("\"forbidden\""));
    assert_eq!(h3.publish("a/2", "x", &auth).await?.0, 403);
    assert_eq!(h3.publish("a/1", "x", &[]).await?.0, 401);

    let mut open = h3.stream("topic=a/1", None, &auth).await?;
    assert_eq!(open.status, 200);
    open.await_id(T).await?;
    assert_eq!(h3.publish("a/1", "kept", &auth).await?.0, 201);
    assert_eq!(open.next(T).await?.expect("open").data, "kept");

    // Draining: the connection open at the drain takes no new request (it
    // got a GOAWAY); a stream opened on a fresh one is served, as on TCP,
    // and ends with the open one by the end of the window.
    gw.sigterm();
    let tcp = https(&ca, &gw)?;
    let base = format!("https://localhost:{}", gw.addr.port());
    wait_draining(&tcp, &base, T).await?;
    // The GOAWAY leaves a moment after readiness falls: a request that
    // beats it is still served, one after it is not.
    let h3 = tokio::sync::Mutex::new(&mut h3);
    wait_until(
        "the connection open at the drain to refuse requests",
        T,
        || async {
            match h3.lock().await.stream("topic=a/1", None, &auth).await {
                Err(_) => Ok(()),
                Ok(r) => Err(format!("a request was answered {}", r.status)),
            }
        },
    )
    .await?;
    let mut fresh = H3Client::connect(gw.addr, &ca.pem).await?;
    let mut late = fresh.stream("topic=a/1", None, &auth).await?;
    assert_eq!(late.status, 200);
    assert!(late.headers.get("x-pushgate-refused").is_none());
    late.await_id(T).await?;
    assert_eq!(fresh.publish("a/1", "late", &auth).await?.0, 201);
    assert_eq!(late.next(T).await?.expect("open").data, "late");
    // The open one ends at its moment in the window, the late one at its end.
    for s in [&mut open, &mut late] {
        while s.next(T).await?.is_some() {}
    }
    Ok(())
}

#[test]
fn http3_without_tls_does_not_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http3",
            "true",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocols.http3 needs tls"), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_quic_socket_gets_the_buffers_the_config_asks_for() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new()?;
    let metric = |d: &str| format!("pushgate_quic_socket_buffer_bytes{{direction=\"{d}\"}}");
    let mut granted = Vec::new();
    for asked in [0usize, 3 << 20] {
        let config = config_file(&format!(
            "protocols:\n  http3:\n    recv_buffer_bytes: {asked}\n    send_buffer_bytes: {asked}\n"
        ))?;
        let mut args = tls_args(&ca, dir.path())?;
        args.extend(["--config".into(), config.path().display().to_string()]);
        // Plain HTTP metrics beside the TLS API.
        args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gw = GatewayProcess::start(&args)?;
        let (recv, send) = (
            gw.metric(&metric("recv")).await?,
            gw.metric(&metric("send")).await?,
        );
        granted.push((recv, send));
    }
    let [(default_recv, default_send), (recv, send)] = granted[..] else {
        unreachable!()
    };
    assert!(default_recv > 0.0 && default_send > 0.0, "{granted:?}");
    // These tests run as root: beyond the sysctl cap if need be (the
    // kernel reports twice the usable size).
    assert!(
        recv >= (3 << 20) as f64 && send >= (3 << 20) as f64,
        "asked for 3 MiB each, granted {granted:?}"
    );
    assert!(recv > default_recv, "{granted:?}");
    Ok(())
}
