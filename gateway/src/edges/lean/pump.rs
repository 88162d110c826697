//! Writes one response straight to the socket. Whatever the body has ready
//! leaves in one vectored write (a burst queued for a subscriber costs one
//! syscall); between writes the task holds no buffer, and it watches the
//! socket so a client that left is noticed at once, as hyper does.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::Response;
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::wire::{self, Framing};

/// Body frames gathered into one write at most.
const BATCH: usize = 64;

/// Batches written in one poll before yielding to other tasks.
const TURNS: usize = 8;

/// Slices handed to one `writev` (below every IOV_MAX).
const IOV: usize = 128;

/// How a response ended.
pub enum Ended {
    /// Complete: the next request may follow on the connection.
    KeepAlive,
    /// The client left or broke the protocol: close.
    Close,
}

/// Bytes waiting to be written, and how body frames are framed.
struct Out {
    segs: VecDeque<Bytes>,
    chunked: bool,
    /// Chunk size lines of the frames waiting (one allocation per batch).
    sizes: BytesMut,
}

impl Out {
    fn data(&mut self, data: Bytes) {
        // An empty chunk would end the body; hyper skips them too.
        if data.is_empty() {
            return;
        }
        if self.chunked {
            if self.sizes.capacity() - self.sizes.len() < 16 {
                self.sizes.reserve(256);
            }
            wire::chunk_size(data.len(), &mut self.sizes);
            self.segs.push_back(self.sizes.split().freeze());
            self.segs.push_back(data);
            self.segs.push_back(Bytes::from_static(wire::CRLF));
        } else {
            self.segs.push_back(data);
        }
    }

    fn end(&mut self) {
        if self.chunked {
            self.segs.push_back(Bytes::from_static(wire::LAST_CHUNK));
        }
    }

    /// Takes one polled body item; true once the body is over.
    fn take(
        &mut self,
        item: Option<Result<http_body::Frame<Bytes>, axum::Error>>,
    ) -> io::Result<bool> {
        match item {
            None => {
                self.end();
                Ok(true)
            }
            Some(Ok(frame)) => {
                // Trailers have no place in an SSE response: dropped, as
                // hyper drops them for a client that did not ask.
                if let Ok(data) = frame.into_data() {
                    self.data(data);
                }
                Ok(false)
            }
            Some(Err(e)) => Err(io::Error::other(e)),
        }
    }

    /// Writes everything waiting, then lets go of the buffers.
    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &mut W,
    ) -> Poll<io::Result<()>> {
        while !self.segs.is_empty() {
            let mut slices = [IoSlice::new(&[]); IOV];
            let k = slices.len().min(self.segs.len());
            for (s, b) in slices.iter_mut().zip(self.segs.iter()) {
                *s = IoSlice::new(b);
            }
            let n = ready!(Pin::new(&mut *tcp).poll_write_vectored(cx, &slices[..k]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            advance(&mut self.segs, n);
        }
        // Idle streams hold no write memory.
        if self.segs.capacity() > 0 {
            self.segs = VecDeque::new();
            self.sizes = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

fn advance(segs: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = segs.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            segs.pop_front();
        } else {
            front.advance(n);
            return;
        }
    }
}

/// A response being written: its body and the bytes not yet sent.
pub struct Pump {
    body: Body,
    out: Out,
    done: bool,
}

impl Pump {
    /// Frames the head of `resp` (the body is polled by [`Pump::run`]).
    pub fn new(resp: Response<Body>) -> Pump {
        let (parts, body) = resp.into_parts();
        let mut head = BytesMut::new();
        let framing = wire::head(&parts, body.size_hint().exact(), &mut head);
        Pump {
            body,
            out: Out {
                segs: VecDeque::from([head.freeze()]),
                chunked: framing == Framing::Chunked,
                sizes: BytesMut::new(),
            },
            done: framing == Framing::Empty,
        }
    }

    /// True while bytes wait for the socket to take them.
    pub fn writing(&self) -> bool {
        !self.out.segs.is_empty()
    }

    /// Takes everything the body has ready, so that it goes out together;
    /// while the client does not read, at most a few batches wait here (the
    /// subscription's queue holds the rest, and cuts it when full).
    fn gather(&mut self, cx: &mut Context<'_>) -> io::Result<usize> {
        let mut frames = 0;
        while !self.done && frames < BATCH && self.out.segs.len() < 3 * IOV {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(item) => self.done = self.out.take(item)?,
                Poll::Pending => break,
            }
            frames += 1;
        }
        Ok(frames)
    }

    /// Writes the response to `tcp`. Bytes the client sends meanwhile (a
    /// pipelined request) are kept in `pending`, up to `max_pending`.
    /// Poll-based, with no future of its own: the wait between events is
    /// where an idle stream spends its life, and it costs nothing here.
    pub fn poll_run(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &mut TcpStream,
        pending: &mut BytesMut,
        max_pending: usize,
    ) -> Poll<io::Result<Ended>> {
        for _ in 0..TURNS {
            let frames = self.gather(cx)?;
            ready!(self.out.poll_flush(cx, tcp))?;
            if self.done {
                return Poll::Ready(Ok(Ended::KeepAlive));
            }
            if frames > 0 {
                continue;
            }
            // The body waits for its next event: watch the socket meanwhile.
            ready!(tcp.poll_read_ready(cx))?;
            if !read_pending(tcp, pending, max_pending)? {
                return Poll::Ready(Ok(Ended::Close));
            }
        }
        // A body that never runs dry must not keep this worker from the
        // other tasks: come back after them.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Reads what the client sent during the response; false when it closed
/// (or sent more than a pipelined head may be).
fn read_pending(tcp: &TcpStream, pending: &mut BytesMut, max_pending: usize) -> io::Result<bool> {
    let mut scratch = [0u8; 1024];
    loop {
        match tcp.try_read(&mut scratch) {
            Ok(0) => return Ok(false),
            Ok(n) if pending.len() + n > max_pending => return Ok(false),
            Ok(n) => pending.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::convert::Infallible;

    /// Accepts everything, counting the calls.
    #[derive(Default)]
    struct Counting {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            let mut n = 0;
            for b in bufs {
                self.bytes.extend_from_slice(b);
                n += b.len();
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_burst_leaves_in_one_write() {
        let frames = (0..20).map(|i| Ok::<_, Infallible>(Bytes::from(format!("data: {i}\n\n"))));
        // Twenty events queued, then the stream waits for more.
        let body = Body::from_stream(
            futures_util::stream::iter(frames).chain(futures_util::stream::pending()),
        );
        let mut pump = Pump::new(Response::new(body));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(pump.gather(&mut cx).unwrap(), 20);
        let mut w = Counting::default();
        assert!(pump.out.poll_flush(&mut cx, &mut w).is_ready());
        assert_eq!(w.writes, 1, "head and twenty chunks in one write");
        let text = String::from_utf8(w.bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\nA\r\ndata: 19\n\n\r\n"), "{text}");
        assert_eq!(text.matches("data: ").count(), 20);
        assert!(!pump.done, "the body is still open");
    }

    #[test]
    fn advance_crosses_segments() {
        let mut segs: VecDeque<Bytes> = [&b"ab"[..], b"cde", b"f"].map(Bytes::from_static).into();
        advance(&mut segs, 3);
        assert_eq!(segs, [&b"de"[..], b"f"].map(Bytes::from_static));
        advance(&mut segs, 3);
        assert!(segs.is_empty());
    }
}
