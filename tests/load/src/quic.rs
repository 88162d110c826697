//! SSE streams over HTTP/3 (quinn + h3): one QUIC connection per stream, as
//! a browser tab or a device has, spread over a few client UDP sockets so
//! no single endpoint task carries every connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use bytes::{Buf, Bytes};
use tokio_util::sync::CancellationToken;

use crate::net::{tls_config, StreamEnd, Template};

/// Client endpoints (UDP sockets) connections are spread over.
const ENDPOINTS: usize = 8;
static POOL: OnceLock<Vec<quinn::Endpoint>> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn endpoint(t: &Template) -> anyhow::Result<quinn::Endpoint> {
    if POOL.get().is_none() {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config(&[b"h3"])?)?;
        let config = quinn::ClientConfig::new(Arc::new(crypto));
        // A loopback source cannot reach another namespace's address.
        let local: std::net::SocketAddr = if t.addr.ip().is_loopback() {
            "127.0.0.1:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let mut pool = Vec::with_capacity(ENDPOINTS);
        for _ in 0..ENDPOINTS {
            let mut e = quinn::Endpoint::client(local)?;
            e.set_default_client_config(config.clone());
            pool.push(e);
        }
        let _ = POOL.set(pool);
    }
    let pool = POOL.get().expect("just set");
    Ok(pool[NEXT.fetch_add(1, Ordering::Relaxed) % pool.len()].clone())
}

/// Lets every connection's close reach the server (bounded by `limit`)
/// before the process exits: a client that vanishes leaves the server
/// holding its connections, and their streams, until the idle timeout, and
/// that work would be counted against whatever is measured next.
pub async fn close_all(limit: std::time::Duration) {
    let Some(pool) = POOL.get() else { return };
    let idle = futures_util::future::join_all(pool.iter().map(|e| e.wait_idle()));
    let _ = tokio::time::timeout(limit, idle).await;
}

/// Opens one SSE stream over HTTP/3 and feeds its body bytes to `on_data`
/// until it ends. `opened` runs once the 200 head arrived.
pub async fn stream_h3(
    t: &Template,
    path: &str,
    last_id: &[u8],
    stop: &CancellationToken,
    opened: &mut (dyn FnMut() + Send),
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> anyhow::Result<StreamEnd> {
    let name = t.server_name()?.to_str().into_owned();
    let connecting = endpoint(t)?.connect(t.addr, &name)?;
    let conn = tokio::select! {
        _ = stop.cancelled() => return Ok(StreamEnd::Stopped),
        c = connecting => c.context("QUIC handshake")?,
    };
    let end = request(&conn, t, path, last_id, stop, opened, on_data).await;
    conn.close(0u32.into(), b"");
    end
}

async fn request(
    conn: &quinn::Connection,
    t: &Template,
    path: &str,
    last_id: &[u8],
    stop: &CancellationToken,
    opened: &mut (dyn FnMut() + Send),
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> anyhow::Result<StreamEnd> {
    let (mut driver, mut send): (_, h3::client::SendRequest<_, Bytes>) =
        h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let _drive = AbortOnDrop(drive);
    let mut req = http::Request::get(format!("https://{}{}", t.host, path))
        .header("accept", "text/event-stream");
    if !last_id.is_empty() {
        req = req.header("last-event-id", last_id);
    }
    let mut stream = send.send_request(req.body(())?).await?;
    stream.finish().await?;
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let resp = tokio::select! {
        _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        r = stream.recv_response() => r?,
    };
    if resp.status() != 200 {
        return Ok(StreamEnd::Status(resp.status().as_u16()));
    }
    opened();
    loop {
        let data = tokio::select! {
            biased;
            d = stream.recv_data() => d,
            _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        };
        match data {
            Ok(Some(mut b)) => {
                let bytes = b.copy_to_bytes(b.remaining());
                on_data(&bytes);
            }
            // The server ended the stream or the connection (a drain, a
            // slow-consumer cut): the caller reconnects, as EventSource does.
            Ok(None) | Err(_) => return Ok(StreamEnd::Closed),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
