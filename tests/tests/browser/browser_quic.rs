//! Headless Chromium over HTTP/3: QUIC forced on for the gateway's origin
//! and the test certificate trusted by its key hash. The page's plain
//! EventSource (and a fetch) report `nextHopProtocol == "h3"`; the source
//! receives events, the gateway restarts, and it resumes by itself with
//! every event exactly once.

use std::process::Command;
use std::time::Duration;

use pushgate_e2e::browser::{Browser, Site};
use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::pki::TestCa;
use pushgate_e2e::process::run_ok;

const PAGE: &str = include_str!("../../browser/quic.html");
const T: Duration = Duration::from_secs(60);

/// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, with the
/// `openssl` CLI the harness already needs.
fn spki_sha256(cert_pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("leaf.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    let out = run_ok(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | openssl base64 -A",
        cert.display()
    )));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_streams_over_h3_and_resumes_across_a_restart() {
    let site = Site::serve(PAGE);
    let ca = TestCa::new().unwrap();
    let leaf = ca.leaf("gateway").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write_to(dir.path()).unwrap();
    let mut g = GatewayProcess::start(&[
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--http3",
        "true",
        "--retry",
        "300ms",
        "--drain-window",
        "200ms",
        "--cors-allowed-origins",
        &site.origin(),
    ])
    .unwrap();
    let origin = format!("localhost:{}", g.addr.port());
    let base = format!("https://{origin}");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", g.addr)
        .build()
        .unwrap();
    let page = site.url(&format!("/quic.html?gateway={base}&topic=q"));
    let browser = Browser::open_quic(&page, &origin, &spki_sha256(&leaf.cert_pem));
    browser
        .wait_for("quic.html", "the stream opened over h3", T, |s| {
            s["opens"] == 1 && s["fetch"] == "h3"
        })
        .await;
    for i in 1..=5 {
        publish(&http, &base, "q", &format!("e{i}")).await.unwrap();
    }
    browser
        .wait_for("quic.html", "e1..e5", T, |s| s["got"] == 5)
        .await;

    // SIGTERM: the stream is closed with a retry hint; the EventSource
    // reconnects by itself into the restarted gateway with its Last-Event-ID.
    g.sigterm();
    g.wait_exit(Duration::from_secs(10)).unwrap();
    g.restart().unwrap();
    for i in 6..=10 {
        publish(&http, &base, "q", &format!("e{i}")).await.unwrap();
    }
    let s = browser
        .wait_for("quic.html", "e1..e10 after the restart", T, |s| {
            s["got"].as_u64() >= Some(10) && s["opens"].as_u64() >= Some(2)
        })
        .await;
    assert_eq!(s["got"], 10, "every event exactly once: {s}");
    assert_eq!(s["ordered"], 1, "in order: {s}");
    assert_eq!(s["closed"], 0, "never closed for good: {s}");
    // The stream the drain ended is in Resource Timing now: it ran over h3.
    let streams = s["streams"].as_array().expect("streams");
    assert!(!streams.is_empty(), "{s}");
    assert!(
        streams.iter().all(|p| p == "h3"),
        "every stream over h3: {s}"
    );
}
