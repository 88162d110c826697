//! An HTTP/3 client of a gateway (quinn + h3), trusting a test CA: one QUIC
//! connection, requests with headers, SSE responses read as a browser would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::sse_client::SseEvent;
use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use pushgate_test_sse::Parser;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type RequestStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// One QUIC connection speaking HTTP/3.
pub struct H3Client {
    send: SendRequest,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

/// A response whose body is read as it arrives.
pub struct H3Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    stream: RequestStream,
    parser: Parser,
    queue: std::collections::VecDeque<SseEvent>,
    ended: bool,
}

impl H3Client {
    /// Connects to `addr` as `localhost`, trusting `ca_pem`.
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Result<H3Client> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(ca_pem)? {
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        // A loopback source cannot reach a ClusterIP: bind what the route picks.
        let local: SocketAddr = if addr.ip().is_loopback() {
            "127.0.0.1:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let mut endpoint = quinn::Endpoint::client(local)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn =
            tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr, "localhost")?)
                .await
                .context("QUIC handshake timed out")??;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Client {
            send,
            endpoint,
            conn,
        })
    }

    /// Sends a request and waits for its response head.
    pub async fn request(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<H3Response> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path_and_query}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut stream = self.send.send_request(req.body(())?).await?;
        if !body.is_empty() {
            stream.send_data(Bytes::from(body.to_owned())).await?;
        }
        stream.finish().await?;
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.recv_response())
            .await
            .context("no HTTP/3 response head")??;
        Ok(H3Response {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            stream,
            parser: Parser::new(),
            queue: Default::default(),
            ended: false,
        })
    }

    /// `GET /v1/stream?topic=…` with an optional `Last-Event-ID`.
    pub async fn stream(
        &mut self,
        query: &str,
        last_event_id: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<H3Response> {
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(id) = last_event_id {
            headers.push(("last-event-id", id));
        }
        headers.extend_from_slice(extra);
        self.request("GET", &format!("/v1/stream?{query}"), &headers, "")
            .await
    }

    /// `POST /v1/topics/{topic}/events`; the status and body.
    pub async fn publish(
        &mut self,
        topic: &str,
        data: &str,
        extra: &[(&str, &str)],
    ) -> Result<(u16, String)> {
        let mut resp = self
            .request("POST", &format!("/v1/topics/{topic}/events"), extra, data)
            .await?;
        let body = resp.text().await?;
        Ok((resp.status, body))
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl H3Response {
    async fn chunk(&mut self, timeout: Duration) -> Result<Option<Bytes>> {
        match tokio::time::timeout(timeout, self.stream.recv_data()).await {
            Err(_) => bail!("nothing within {timeout:?}"),
            Ok(Ok(Some(mut b))) => Ok(Some(b.copy_to_bytes(b.remaining()))),
            Ok(Ok(None)) | Ok(Err(_)) => Ok(None),
        }
    }

    /// The whole body as text.
    pub async fn text(&mut self) -> Result<String> {
        let mut out = Vec::new();
        while let Some(b) = self.chunk(Duration::from_secs(10)).await? {
            out.extend_from_slice(&b);
        }
        Ok(String::from_utf8(out)?)
    }

    /// The next SSE event; `None` once the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            if self.ended {
                return Ok(None);
            }
            match self.chunk(timeout).await? {
                Some(b) => self.queue.extend(self.parser.feed(&b)),
                None => self.ended = true,
            }
        }
    }

    /// Reads until the stream has given an id (its first block always does).
    pub async fn await_id(&mut self, timeout: Duration) -> Result<String> {
        while self.parser.last_event_id().is_empty() {
            match self.chunk(timeout).await? {
                Some(b) => self.queue.extend(self.parser.feed(&b)),
                None => bail!("stream ended before its first id"),
            }
        }
        Ok(self.parser.last_event_id().to_owned())
    }

    /// The `Last-Event-ID` a browser would send on reconnect.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }
}

fn rustls_pemfile_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("CA PEM: {e:?}"))
}
