//! A budget of HTTP/2 control frames per connection. SETTINGS, PING,
//! PRIORITY and RST_STREAM carry no request, yet the server must process
//! each one (apply and acknowledge, answer, bookkeep), so a client that
//! sends them as fast as it can buys a core of the gateway's CPU with four
//! connections. The HTTP/2 library bounds what such frames make it hold,
//! not how many it processes. This reader walks the client's frame headers
//! (never their payloads) and cuts a connection that sends more than its
//! budget: a token bucket of `edge.max_control_frames_per_s`, that many in
//! a burst. Legitimate clients send a handful per second (keep-alive and
//! flow-control pings). HTTP/1.1 connections pass through untouched: the
//! reader stops looking once their first bytes are not the HTTP/2 preface.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::edges::tcp::{Closed, Conn};

/// What every HTTP/2 connection starts with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEAD: usize = 9;

/// Frame types that count against the budget.
fn counts(kind: u8) -> bool {
    // PRIORITY, RST_STREAM, SETTINGS, PING.
    matches!(kind, 0x2 | 0x3 | 0x4 | 0x6)
}

/// Where the reader is in the client's bytes.
#[derive(Debug)]
enum Phase {
    /// Matching the HTTP/2 preface; this many bytes of it so far.
    Preface(usize),
    /// Between frames: this many bytes of the next header are in `head`.
    Head(usize),
    /// Inside a frame's payload: this many bytes still to skip.
    Payload(usize),
    /// Not HTTP/2, or no budget: nothing to look at.
    Off,
}

/// The frame walker and the token bucket, apart from any I/O.
#[derive(Debug)]
pub struct Budget {
    phase: Phase,
    head: [u8; HEAD],
    per_s: f64,
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    /// A budget of `per_s` control frames per second (0: none).
    pub fn new(per_s: u32) -> Budget {
        Budget {
            phase: if per_s == 0 {
                Phase::Off
            } else {
                Phase::Preface(0)
            },
            head: [0; HEAD],
            per_s: f64::from(per_s),
            tokens: f64::from(per_s),
            refilled: Instant::now(),
        }
    }

    /// Walks bytes the client sent; false once it is over its budget.
    pub fn read(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return true,
                Phase::Preface(seen) => {
                    let n = bytes.len().min(PREFACE.len() - seen);
                    if bytes[..n] != PREFACE[seen..seen + n] {
                        self.phase = Phase::Off;
                        return true;
                    }
                    bytes = &bytes[n..];
                    self.phase = match seen + n {
                        done if done == PREFACE.len() => Phase::Head(0),
                        more => Phase::Preface(more),
                    };
                }
                Phase::Head(have) => {
                    let n = bytes.len().min(HEAD - have);
                    self.head[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have + n < HEAD {
                        self.phase = Phase::Head(have + n);
                        continue;
                    }
                    let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]);
                    if counts(self.head[3]) && !self.take() {
                        return false;
                    }
                    self.phase = match len {
                        0 => Phase::Head(0),
                        len => Phase::Payload(len as usize),
                    };
                }
                Phase::Payload(left) => {
                    let n = bytes.len().min(left);
                    bytes = &bytes[n..];
                    self.phase = match left - n {
                        0 => Phase::Head(0),
                        left => Phase::Payload(left),
                    };
                }
            }
        }
        true
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_s;
        self.tokens = (self.tokens + earned).min(self.per_s);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connection's byte stream with its client's control frames counted.
pub struct Budgeted<I> {
    io: I,
    budget: Budget,
    conn: Arc<Conn>,
}

impl<I> Budgeted<I> {
    /// `io` with a budget of `per_s` control frames per second (0: none).
    pub fn new(io: I, per_s: u32, conn: Arc<Conn>) -> Budgeted<I> {
        Budgeted {
            io,
            budget: Budget::new(per_s),
            conn,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Budgeted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if !this.budget.read(&buf.filled()[before..]) {
            this.conn.closed_by_protocol(Closed::ControlFlood);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "HTTP/2 control frames over edge.max_control_frames_per_s",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Budgeted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, 0, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn http1_passes_untouched() {
        let mut b = Budget::new(1);
        assert!(b.read(b"GET / HTTP/1.1\r\n\r\n"));
        // Whatever follows is not looked at.
        for _ in 0..10 {
            assert!(b.read(&frame(0x6, &[0; 8])));
        }
    }

    #[test]
    fn control_frames_over_the_burst_are_refused_whatever_the_chunking() {
        let mut bytes = PREFACE.to_vec();
        for _ in 0..5 {
            bytes.extend(frame(0x4, &[0, 4, 0, 0, 0xff, 0xff])); // SETTINGS
            bytes.extend(frame(0x0, &[7; 300])); // DATA: free
        }
        bytes.extend(frame(0x6, &[0; 8])); // the sixth control frame
                                           // The sixth control frame is refused once its header is complete.
        let sixth_head_end = bytes.len() - 8 - 1;
        for chunk in [1, 2, 9, 10, 64, bytes.len()] {
            let mut b = Budget::new(5);
            let refused = bytes.chunks(chunk).position(|c| !b.read(c));
            assert_eq!(refused, Some(sixth_head_end / chunk), "chunks of {chunk}");
        }
    }

    #[test]
    fn data_and_window_updates_are_free_and_zero_turns_it_off() {
        let mut b = Budget::new(1);
        assert!(b.read(PREFACE));
        for _ in 0..1000 {
            assert!(b.read(&frame(0x0, b"x")));
            assert!(b.read(&frame(0x8, &[0, 0, 1, 0])));
        }
        let mut off = Budget::new(0);
        assert!(off.read(PREFACE));
        for _ in 0..1000 {
            assert!(off.read(&frame(0x6, &[0; 8])));
        }
    }
}
