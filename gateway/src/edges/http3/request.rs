//! One HTTP/3 request through the API router: the request body streams in,
//! the response body (an SSE stream included) streams out frame by frame.

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::edges::shared::conn::ConnInfo;

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves one request; the response ends early when `quic` closes.
pub async fn serve(
    router: Router,
    info: ConnInfo,
    req: Request<()>,
    stream: Stream,
    quic: quinn::Connection,
) {
    let (mut send, mut recv) = stream.split();
    let body = Body::from_stream(async_stream::stream! {
        loop {
            match recv.recv_data().await {
                Ok(Some(mut chunk)) => yield Ok(chunk.copy_to_bytes(chunk.remaining())),
                Ok(None) => break,
                Err(e) => {
                    yield Err(std::io::Error::other(e));
                    break;
                }
            }
        }
    });
    let (parts, ()) = req.into_parts();
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(info);
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, mut body) = resp.into_parts();
    if send
        .send_response(Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        return;
    }
    // Dropping the body when the client goes away frees the stream's state:
    // an idle stream would otherwise notice only at its next write.
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = quic.closed() => return,
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if send.send_data(data).await.is_err() {
                return;
            }
        }
    }
    let _ = send.finish().await;
}
