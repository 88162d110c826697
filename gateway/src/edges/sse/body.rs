//! A stream of deliveries as the body of an SSE response.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::engine::delivery::Delivery;

/// Encodes each delivery once as it is polled; the chunks are the ones a
/// response body writes (a multi-topic event is two: shared lines, own id).
pub struct SseBody<S> {
    deliveries: S,
    /// The second chunk of the last delivery, not yet handed out.
    pending: Option<Bytes>,
}

impl<S> SseBody<S> {
    /// The body of `deliveries`.
    pub fn new(deliveries: S) -> SseBody<S> {
        SseBody {
            deliveries,
            pending: None,
        }
    }
}

impl<S: Stream<Item = Delivery> + Unpin> Stream for SseBody<S> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(b) = self.pending.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        match ready!(self.deliveries.poll_next_unpin(cx)) {
            None => Poll::Ready(None),
            Some(d) => {
                let (first, second) = super::encode(d);
                self.pending = second;
                Poll::Ready(Some(Ok(first)))
            }
        }
    }
}
