//! The per-byte hot path of a subscriber: HTTP/1.1 chunked decoding and a
//! minimal text/event-stream reader. Both work in place on the read buffer
//! and only copy what spans two reads, so one event costs a few memchr calls.
//!
//! The SSE reader is deliberately smaller than the WHATWG algorithm (the
//! exact one, for checking, is `pushgate_test_sse::Parser` in `tests/sse`): it understands
//! `data:`, `id:`, `retry:` and comments, `\n` and `\r\n` line ends, and
//! hands over only the first `data:` line of an event, which is all the load
//! payloads (`SEQ TIMESTAMP padding`) use.

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    size: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size.
    #[default]
    Size,
    /// Skipping a chunk extension up to its line end.
    Ext,
    /// Expecting the `\n` that ends the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting `\r\n` after chunk data.
    DataCr,
    DataLf,
    /// The zero-size chunk was read; the body is over.
    Done,
}

/// A chunked body that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl Dechunker {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the terminating zero-size chunk was seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds raw body bytes; calls `out` with every run of decoded data.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), ChunkError> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size => {
                    let b = input[0];
                    input = &input[1..];
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        b'\r' => {
                            self.state = ChunkState::SizeLf;
                            continue;
                        }
                        b';' | b' ' | b'\t' => {
                            self.state = ChunkState::Ext;
                            continue;
                        }
                        _ => return Err(ChunkError("bad chunk size")),
                    };
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit as usize))
                        .filter(|s| *s < (1 << 40))
                        .ok_or(ChunkError("chunk size overflow"))?;
                }
                ChunkState::Ext => match memchr::memchr(b'\r', input) {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.state = ChunkState::SizeLf;
                    }
                    None => input = &[],
                },
                ChunkState::SizeLf => {
                    if input[0] != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    input = &input[1..];
                    if self.size == 0 {
                        // Trailers are not used by SSE servers; the body ends here.
                        self.state = ChunkState::Done;
                        return Ok(());
                    }
                    self.state = ChunkState::Data;
                }
                ChunkState::Data => {
                    let n = self.size.min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.size -= n;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                }
                ChunkState::DataCr => {
                    if input[0] != b'\r' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    input = &input[1..];
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if input[0] != b'\n' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    input = &input[1..];
                    self.state = ChunkState::Size;
                }
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

/// What the SSE reader reports.
#[derive(Debug, PartialEq, Eq)]
pub enum SseItem<'a> {
    /// A dispatched event: its first `data:` line.
    Event(&'a [u8]),
    /// A `retry:` field (milliseconds).
    Retry(u64),
}

/// Minimal incremental SSE reader (see the module docs for what it skips).
#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of a line that started in an earlier chunk.
    partial: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    last_id: Vec<u8>,
    /// Events dispatched so far.
    pub events: u64,
}

impl SseReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `id:` seen (what `Last-Event-ID` carries on reconnect).
    pub fn last_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Forgets a half-read event (the connection dropped) but keeps the last id.
    pub fn reset_stream(&mut self) {
        self.partial.clear();
        self.data.clear();
        self.has_data = false;
    }

    /// Feeds decoded body bytes and calls `out` for every complete item.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(SseItem<'_>)) {
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&input[..i]);
                    self.line(&line, &mut out);
                    line.clear();
                    self.partial = line;
                    input = &input[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(input);
                    return;
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', input) {
            self.line(&input[..i], &mut out);
            input = &input[i + 1..];
        }
        self.partial.extend_from_slice(input);
    }

    fn line(&mut self, mut line: &[u8], out: &mut impl FnMut(SseItem<'_>)) {
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.is_empty() {
            if self.has_data {
                self.events += 1;
                out(SseItem::Event(&self.data));
                self.data.clear();
                self.has_data = false;
            }
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return,
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" if !self.has_data => {
                self.data.clear();
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" => {
                if let Some(ms) = parse_u64(value) {
                    out(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }
}

/// Parses a run of ASCII digits (no sign, no spaces).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// The load payload: `SEQ SEND_US` then optional padding after a space.
pub fn parse_payload(data: &[u8]) -> Option<(u64, u64)> {
    let mut parts = data.splitn(3, |b| *b == b' ');
    let seq = parse_u64(parts.next()?)?;
    let ts = parse_u64(parts.next()?)?;
    Some((seq, ts))
}

/// Writes a load payload of at least `size` bytes into `buf`.
pub fn write_payload(buf: &mut Vec<u8>, seq: u64, send_us: u64, size: usize) {
    use std::io::Write;
    buf.clear();
    let _ = write!(buf, "{seq} {send_us}");
    if buf.len() < size {
        buf.push(b' ');
        buf.resize(size, b'x');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk_all(input: &[u8], split: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            d.feed(piece, |b| out.extend_from_slice(b))?;
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn dechunks_at_every_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        for split in 1..body.len() {
            let (out, done) = dechunk_all(body, split).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "split {split}");
            assert!(done);
        }
    }

    #[test]
    fn rejects_broken_chunking() {
        assert!(dechunk_all(b"zz\r\n", 4).is_err());
        assert!(dechunk_all(b"2\r\nabX\r\n", 9).is_err());
        assert!(dechunk_all(b"fffffffffffffffffff\r\n", 64).is_err());
        let (_, done) = dechunk_all(b"3\r\nabc\r\n", 64).unwrap();
        assert!(!done, "no zero chunk yet");
    }

    fn read_all(input: &[u8], split: usize) -> (Vec<Vec<u8>>, Vec<u64>, Vec<u8>) {
        let mut r = SseReader::new();
        let (mut events, mut retries) = (Vec::new(), Vec::new());
        for piece in input.chunks(split.max(1)) {
            r.feed(piece, |item| match item {
                SseItem::Event(d) => events.push(d.to_vec()),
                SseItem::Retry(ms) => retries.push(ms),
            });
        }
        (events, retries, r.last_id().to_vec())
    }

    #[test]
    fn reads_events_ids_retries_and_skips_comments() {
        let stream = b"retry: 2500\nid: c0\n\n:\n\ndata: 1 100 xx\nid: c1\n\n: hb\r\n\r\nevent: t\r\ndata: 2 200\r\nid: c2\r\n\r\ndata:3 300\n\n";
        for split in 1..stream.len() {
            let (events, retries, last) = read_all(stream, split);
            assert_eq!(
                events,
                vec![b"1 100 xx".to_vec(), b"2 200".to_vec(), b"3 300".to_vec()],
                "split {split}"
            );
            assert_eq!(retries, vec![2500]);
            assert_eq!(last, b"c2");
        }
    }

    #[test]
    fn keeps_first_data_line_and_id_across_reset() {
        let mut r = SseReader::new();
        let mut got = Vec::new();
        r.feed(b"data: a\ndata: b\nid: x\n\ndata: half", |i| {
            if let SseItem::Event(d) = i {
                got.push(d.to_vec())
            }
        });
        r.reset_stream();
        r.feed(b"data: c\n\n", |i| {
            if let SseItem::Event(d) = i {
                got.push(d.to_vec())
            }
        });
        assert_eq!(got, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(r.last_id(), b"x");
        assert_eq!(r.events, 2);
    }

    #[test]
    fn payload_round_trip() {
        let mut buf = Vec::new();
        write_payload(&mut buf, 42, 123_456, 64);
        assert_eq!(buf.len(), 64);
        assert_eq!(parse_payload(&buf), Some((42, 123_456)));
        write_payload(&mut buf, 7, 9, 0);
        assert_eq!(buf, b"7 9");
        assert_eq!(parse_payload(&buf), Some((7, 9)));
        assert_eq!(parse_payload(b"x 1"), None);
        assert_eq!(parse_payload(b"1"), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
    }
}
