//! HTTP/2 as raw frames over h2c, written without any HTTP/2 library (so
//! it shares no code with the gateway's): enough to open streams, reset
//! them, and send what a hostile client sends. Header blocks use the HPACK
//! static table and literals only, no Huffman and no dynamic table.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frame types.
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;
/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
/// `RST_STREAM` error code CANCEL.
pub const CANCEL: u32 = 0x8;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY && self.payload.len() >= 8)
            .then(|| u32::from_be_bytes(self.payload[4..8].try_into().expect("4 bytes")))
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block for `GET path` with `accept: text/event-stream`.
pub fn get(path: &str) -> Vec<u8> {
    let mut h = vec![0x82, 0x86]; // :method GET, :scheme http
    for (prefix, value) in [
        (&[0x04u8][..], path),                // :path (literal, name index 4)
        (&[0x01], "gw"),                      // :authority (index 1)
        (&[0x0f, 0x04], "text/event-stream"), // accept (index 19)
    ] {
        h.extend_from_slice(prefix);
        literal(&mut h, value.as_bytes());
    }
    h
}

/// A string literal: length (7-bit prefix integer, no Huffman), then bytes.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// One h2c connection.
pub struct H2Conn {
    pub tcp: TcpStream,
}

impl H2Conn {
    /// Connects and sends the preface with empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> Result<H2Conn> {
        let mut tcp = TcpStream::connect(addr).await?;
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tcp.write_all(&hello).await?;
        Ok(H2Conn { tcp })
    }

    /// Opens stream `id` with `GET path` (no body).
    pub async fn open(&mut self, id: u32, path: &str) -> Result<()> {
        self.tcp
            .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, id, &get(path)))
            .await?;
        Ok(())
    }

    /// The next frame other than SETTINGS and PING, which it answers on
    /// the way; an error at the deadline or when the connection ends.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Result<Frame> {
        loop {
            let mut head = [0u8; 9];
            tokio::time::timeout_at(deadline, self.tcp.read_exact(&mut head))
                .await
                .context("no frame before the deadline")?
                .context("the connection ended")?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            if len > 1 << 20 {
                bail!("a frame of {len} bytes");
            }
            let mut payload = vec![0u8; len];
            self.tcp.read_exact(&mut payload).await?;
            let f = Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                payload,
            };
            match (f.kind, f.flags & ACK) {
                (SETTINGS, 0) => self.tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await?,
                (PING, 0) => self.tcp.write_all(&frame(PING, ACK, 0, &f.payload)).await?,
                (SETTINGS | PING, _) => {}
                _ => return Ok(f),
            }
        }
    }
}
