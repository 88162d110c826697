//! The lean stream path writes exactly what hyper writes. The same gateway
//! (same data directory, so the same epoch and cursors) is run with
//! `--lean-streams true` and then `false`, and the raw bytes of the same
//! exchanges are compared: a replayed stream, an error answer followed by
//! another request on the same connection (the lean front hands over to
//! hyper), and a refusal for a client that does not take event streams.
//! Only the `date:` value and the jittered `retry:` differ by design.

use std::time::Duration;

use pushgate_e2e::gateway::{publish, GatewayProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const STREAM: &str = "GET /v1/stream?topic=wire&topic=wire.b HTTP/1.1\r\nHost: gw\r\n\
                      Accept: text/event-stream\r\nLast-Event-ID: earliest\r\n\
                      Cookie: pushgate_rk=0123456789abcdef0123456789abcdef\r\n\r\n";

/// Sends `request` on a fresh connection and reads until `done` holds for
/// what came back (or the server closes), bounded by 10 s.
async fn exchange(gw: &GatewayProcess, request: &[u8], done: impl Fn(&str) -> bool) -> String {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&String::from_utf8_lossy(&got)) {
        let mut buf = [0u8; 4096];
        let n = match timeout(deadline - Instant::now(), tcp.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("read: {e}"),
            Err(_) => panic!(
                "no complete answer within 10 s; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// How many `content-length` responses in `wire` are complete.
fn complete_responses(wire: &str) -> usize {
    let (mut rest, mut n) = (wire, 0);
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            return n;
        };
        let body = &rest[end + 4..];
        if body.len() < len {
            return n;
        }
        n += 1;
        rest = &body[len..];
    }
    n
}

/// Masks what differs by design: the `date:` value (same length every
/// second) and the digits of `retry:` (four digits for a 2 s base).
fn masked(wire: &str) -> String {
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(i) = rest.find(['d', 'r']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (prefix, len) = if rest.starts_with("date: ") {
            ("date: ", "Wed, 02 Dec 2026 13:50:09 GMT".len())
        } else if rest.starts_with("retry: ") {
            ("retry: ", 4)
        } else {
            out.push_str(&rest[..1]);
            rest = &rest[1..];
            continue;
        };
        out.push_str(prefix);
        out.push_str(&"*".repeat(len));
        rest = &rest[prefix.len() + len..];
    }
    out.push_str(rest);
    out
}

/// The three exchanges, as seen on the wire.
async fn capture(gw: &GatewayProcess) -> Vec<String> {
    // A replayed two-topic stream: head, first block, five events.
    let stream = exchange(gw, STREAM.as_bytes(), |s| s.matches("data: ").count() >= 5).await;
    // An error answer, then a second request on the same connection.
    let error_then_health = exchange(
        gw,
        b"GET /v1/stream HTTP/1.1\r\nHost: gw\r\n\r\nGET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
        |s| complete_responses(s) >= 2,
    )
    .await;
    let not_acceptable = exchange(
        gw,
        b"GET /v1/stream?topic=wire HTTP/1.1\r\nHost: gw\r\nAccept: text/plain\r\n\r\n",
        |s| complete_responses(s) >= 1,
    )
    .await;
    vec![stream, error_then_health, not_acceptable]
}

#[tokio::test]
async fn lean_and_hyper_streams_are_byte_identical() {
    let mut gw = GatewayProcess::start(&["--retry", "2s"]).unwrap();
    let http = reqwest::Client::new();
    let base = gw.url("");
    for (topic, data) in [
        ("wire", "one"),
        ("wire.b", "two\nlines"),
        ("wire", "three"),
        ("wire.b", "ünïcødé"),
        ("wire", ""),
    ] {
        publish(&http, &base, topic, data).await.unwrap();
    }
    let lean = capture(&gw).await;
    gw.restart_with_env(&[("PUSHGATE_LEAN_STREAMS", "false")])
        .unwrap();
    let hyper = capture(&gw).await;
    assert!(
        lean[0].starts_with("HTTP/1.1 200 OK\r\n")
            && lean[0].contains("transfer-encoding: chunked"),
        "{:?}",
        lean[0]
    );
    assert!(
        lean[1].starts_with("HTTP/1.1 400 ") && lean[1].contains("HTTP/1.1 200 OK"),
        "{:?}",
        lean[1]
    );
    assert!(lean[2].starts_with("HTTP/1.1 406 "), "{:?}", lean[2]);
    for (l, h) in lean.iter().zip(&hyper) {
        assert_eq!(masked(l), masked(h), "lean vs hyper");
    }
}
