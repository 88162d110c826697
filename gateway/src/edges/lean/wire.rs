//! The response head and body framing, byte for byte as hyper 1.x writes
//! them for an HTTP/1.1 response to a GET: status line, the headers in map
//! order, then the framing header it adds, then `date`.

use std::fmt::Write as _;
use std::time::SystemTime;

use axum::http::{header, response::Parts, StatusCode};
use bytes::{BufMut, BytesMut};

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `transfer-encoding: chunked`, one chunk per body frame.
    Chunked,
    /// `content-length`.
    Length,
    /// No body may follow (204, 304).
    Empty,
}

fn can_have_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes the head of `parts` to `out`; `exact` is the body's exact length
/// if known (hyper then writes `content-length`, else it chunks).
pub fn head(parts: &Parts, exact: Option<u64>, out: &mut BytesMut) -> Framing {
    let status = parts.status;
    out.reserve(64 + parts.headers.len() * 40);
    if status == StatusCode::OK {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
    }
    let (mut framing, mut wrote_len, mut wrote_date) = (Framing::Chunked, false, false);
    for (name, value) in parts.headers.iter() {
        match *name {
            header::CONTENT_LENGTH => (framing, wrote_len) = (Framing::Length, true),
            header::TRANSFER_ENCODING => (framing, wrote_len) = (Framing::Chunked, true),
            header::DATE => wrote_date = true,
            _ => {}
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !wrote_len {
        match exact {
            None if can_have_body(status) => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                framing = Framing::Chunked;
            }
            None => {}
            Some(len) if status != StatusCode::NO_CONTENT && !status.is_informational() => {
                let _ = write!(Writer(out), "content-length: {len}\r\n");
                framing = Framing::Length;
            }
            Some(_) => {}
        }
    }
    if !can_have_body(status) {
        framing = Framing::Empty;
    }
    if !wrote_date {
        out.put_slice(b"date: ");
        out.put_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    framing
}

/// The size line of a chunk of `len` bytes (hyper writes upper-case hex).
pub fn chunk_size(len: usize, out: &mut BytesMut) {
    let _ = write!(Writer(out), "{len:X}\r\n");
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The end of one chunk.
pub const CRLF: &[u8] = b"\r\n";

struct Writer<'a>(&'a mut BytesMut);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Response;

    fn render(resp: Response<()>, exact: Option<u64>) -> (String, Framing) {
        let (parts, ()) = resp.into_parts();
        let mut out = BytesMut::new();
        let f = head(&parts, exact, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        // The date changes every second; everything else is fixed.
        let masked = match text.find("date: ") {
            Some(i) => format!("{}date: *\r\n\r\n", &text[..i]),
            None => text,
        };
        (masked, f)
    }

    #[test]
    fn heads_are_written_as_hyper_writes_them() {
        let resp = Response::builder()
            .header("content-type", "text/event-stream")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        assert_eq!(
            render(resp, None),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-a: 1\r\nx-a: 2\r\n\
                 transfer-encoding: chunked\r\ndate: *\r\n\r\n"
                    .to_string(),
                Framing::Chunked
            )
        );
        let resp = Response::builder().status(400).body(()).unwrap();
        assert_eq!(
            render(resp, Some(12)),
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\ndate: *\r\n\r\n".to_string(),
                Framing::Length
            )
        );
        let resp = Response::builder().status(204).body(()).unwrap();
        assert_eq!(render(resp, Some(0)).1, Framing::Empty);
        let mut size = BytesMut::new();
        chunk_size(0x1AF, &mut size);
        assert_eq!(&size[..], b"1AF\r\n");
    }
}
