//! Streams over gRPC: `pushgate.v1.Pushgate/Subscribe` over TLS, one
//! channel (HTTP/2 connection) per stream. Each event is handed on as the
//! SSE block it stands for, so dedupe, latency and the resume id are
//! counted by the same reader as every other protocol.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use pushgate::edges::grpc::proto::pushgate_client::PushgateClient;
use pushgate::edges::grpc::proto::SubscribeRequest;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::net::{StreamEnd, Template};

static CA_PEM: OnceLock<String> = OnceLock::new();

/// Trusts `pem` (the `--ca-file` contents) for gRPC channels.
pub fn trust_ca(pem: String) {
    let _ = CA_PEM.set(pem);
}

/// Subscribes to `topic` from `last_id` and feeds each event to `on_data`
/// as an SSE block until the call ends.
pub async fn stream_grpc(
    t: &Template,
    topic: &str,
    last_id: &[u8],
    stop: &CancellationToken,
    opened: &mut (dyn FnMut() + Send),
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> anyhow::Result<StreamEnd> {
    let ca = CA_PEM.get().context("gRPC needs --ca-file")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(t.server_name()?.to_str().into_owned());
    let endpoint = Endpoint::from_shared(format!("https://{}", t.host))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(30));
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let channel = tokio::select! {
        _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        c = endpoint.connect() => c?,
    };
    let msg = SubscribeRequest {
        topics: vec![topic.to_owned()],
        last_event_id: String::from_utf8_lossy(last_id).into_owned(),
        shadow_version: 0,
    };
    let mut client = PushgateClient::new(channel);
    let call = tokio::select! {
        _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        r = client.subscribe(msg) => r,
    };
    let mut events = match call {
        Ok(r) => r.into_inner(),
        // As the HTTP status the refusal stands for (UNAVAILABLE is the 503).
        Err(s) if s.code() == tonic::Code::Unavailable => return Ok(StreamEnd::Status(503)),
        Err(_) => return Ok(StreamEnd::Status(500)),
    };
    opened();
    let mut block = Vec::with_capacity(256);
    loop {
        let next = tokio::select! {
            biased;
            m = events.message() => m,
            _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        };
        let ev = match next {
            Ok(Some(ev)) => ev,
            Ok(None) | Err(_) => return Ok(StreamEnd::Closed),
        };
        block.clear();
        // A marker (no event type) only moves the id.
        if !ev.event_type.is_empty() {
            if ev.event_type != "message" {
                block.extend_from_slice(format!("event: {}\n", ev.event_type).as_bytes());
            }
            for line in ev.data.split('\n') {
                block.extend_from_slice(b"data: ");
                block.extend_from_slice(line.as_bytes());
                block.push(b'\n');
            }
        }
        block.extend_from_slice(b"id: ");
        block.extend_from_slice(ev.id.as_bytes());
        block.extend_from_slice(b"\n\n");
        on_data(&block);
    }
}
