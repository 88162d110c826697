//! HTTPS on the real `pushgate` binary with a CA made at test time: streams
//! over HTTP/2 (ALPN h2) and HTTP/1.1, and a certificate rotated on disk is
//! served to new connections without a restart while open streams go on.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{publish, replace_file, GatewayProcess};
use pushgate_e2e::pki::TestCa;
use pushgate_e2e::sse_client::SseClient;
use pushgate_e2e::wait::{holds_for, wait_until};

fn client(ca: &TestCa, gw: &GatewayProcess, http1: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes())?)
        .resolve("localhost", gw.addr)
        .tls_info(true)
        .pool_max_idle_per_host(0);
    if http1 {
        b = b.http1_only();
    }
    Ok(b.build()?)
}

fn base(gw: &GatewayProcess) -> String {
    format!("https://localhost:{}", gw.addr.port())
}

/// The certificate a fresh connection is served.
async fn served_cert(c: &reqwest::Client, gw: &GatewayProcess) -> Result<Vec<u8>> {
    let resp = c.get(format!("{}/healthz", base(gw))).send().await?;
    let Some(info) = resp.extensions().get::<reqwest::tls::TlsInfo>() else {
        bail!("no TLS info");
    };
    Ok(info.peer_certificate().unwrap_or_default().to_vec())
}

async fn tls_gateway(ca: &TestCa, dir: &Path) -> Result<(GatewayProcess, Vec<u8>)> {
    let leaf = ca.leaf("generation-1")?;
    let (cert_file, key_file) = leaf.write_to(dir)?;
    let der = leaf.der;
    let gw = GatewayProcess::start(&[
        "--tls-cert-file",
        cert_file.to_str().unwrap(),
        "--tls-key-file",
        key_file.to_str().unwrap(),
        "--tls-reload-interval",
        "100ms",
    ])?;
    Ok((gw, der))
}

#[tokio::test]
async fn streams_over_h2_and_http1_with_the_test_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new()?;
    let (gw, der) = tls_gateway(&ca, dir.path()).await?;
    for (http1, want) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let c = client(&ca, &gw, http1)?;
        assert_eq!(served_cert(&c, &gw).await?, der);
        let topic = if http1 { "tls-h1" } else { "tls-h2" };
        let mut s =
            SseClient::connect(&c, &format!("{}/v1/stream?topic={topic}", base(&gw)), None).await?;
        assert_eq!(s.version(), want);
        s.await_id(Duration::from_secs(5)).await?;
        publish(&c, &base(&gw), topic, "secret payload").await?;
        let ev = s.next(Duration::from_secs(5)).await?.expect("event");
        assert_eq!(ev.data, "secret payload");
    }

    // A client that does not trust the CA gets no connection, and plain
    // HTTP on the TLS port gets no answer.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .resolve("localhost", gw.addr)
        .build()?;
    assert!(untrusting
        .get(format!("{}/healthz", base(&gw)))
        .send()
        .await
        .is_err());
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    assert!(plain.get(gw.url("/healthz")).send().await.is_err());
    Ok(())
}

#[tokio::test]
async fn rotated_certificate_is_served_without_restart_and_streams_survive() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new()?;
    let (gw, first) = tls_gateway(&ca, dir.path()).await?;
    let pid = gw.pid();
    let c = client(&ca, &gw, false)?;
    let mut open =
        SseClient::connect(&c, &format!("{}/v1/stream?topic=rotation", base(&gw)), None).await?;
    open.await_id(Duration::from_secs(5)).await?;
    assert_eq!(served_cert(&c, &gw).await?, first);

    // A half-done rotation (new key, old certificate) is not taken.
    let next = ca.leaf("generation-2")?;
    let second = next.der;
    replace_file(&dir.path().join("tls.key"), &next.key_pem)?;
    // Nothing marks "not reloaded": watch a bounded window.
    holds_for(
        "the first certificate served while only the key changed",
        Duration::from_millis(500),
        || async {
            match client(&ca, &gw, false) {
                Ok(c) => match served_cert(&c, &gw).await {
                    Ok(cert) if cert == first => Ok(()),
                    Ok(_) => Err("another certificate".to_owned()),
                    Err(e) => Err(format!("{e:#}")),
                },
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await?;
    replace_file(&dir.path().join("tls.crt"), &next.cert_pem)?;

    wait_until(
        "the rotated certificate to be served",
        Duration::from_secs(10),
        || async {
            let c = client(&ca, &gw, false).map_err(|e| format!("{e:#}"))?;
            match served_cert(&c, &gw).await {
                Ok(cert) if cert == second => Ok(()),
                Ok(_) => Err("still the first certificate".to_owned()),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await?;
    assert_eq!(gw.pid(), pid, "no restart");

    // The stream opened under the first certificate is still delivering.
    let fresh = client(&ca, &gw, false)?;
    publish(&fresh, &base(&gw), "rotation", "after rotation").await?;
    let ev = open.next(Duration::from_secs(5)).await?.expect("event");
    assert_eq!(ev.data, "after rotation");
    Ok(())
}
