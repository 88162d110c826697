//! Reads the first request head of a connection and decides who answers
//! it. Only what is certainly a plain stream request stays on the lean path:
//! a body, a connection-level instruction or anything malformed goes to
//! hyper, which answers it (400, 431, h2c) as it would without this front.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::edges::shared::conn::STREAM_PATH;

/// hyper's limit on request headers; more go to hyper, which answers 431.
const MAX_HEADERS: usize = 100;

/// Read size: most stream heads (a JWT included) fit in one read.
const READ_CHUNK: usize = 2048;

/// Whose request it is.
pub enum Head {
    /// A stream request for the router; its bytes are consumed from the buffer.
    Stream(Box<Request<Body>>),
    /// hyper's: the buffer holds everything read so far.
    Hyper,
    /// The client closed before sending a request.
    Gone,
}

/// Reads until the head in `buf` is complete, or it is clear hyper must
/// take it (it grows past `max_head`, or does not parse).
pub async fn read(tcp: &mut TcpStream, buf: &mut BytesMut, max_head: usize) -> Head {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Partial if buf.len() < max_head => {}
                Parsed::Partial | Parsed::Hyper => return Head::Hyper,
                Parsed::Stream(req, len) => {
                    let _ = buf.split_to(len);
                    return Head::Stream(req);
                }
            }
        }
        buf.reserve(READ_CHUNK.min(max_head.saturating_sub(buf.len()).max(1)));
        match tcp.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Head::Gone,
            // A half-sent head then EOF: hyper reports it as it always has.
            Ok(0) => return Head::Hyper,
            Ok(_) => {}
            Err(_) => return Head::Gone,
        }
    }
}

enum Parsed {
    Partial,
    Hyper,
    Stream(Box<Request<Body>>, usize),
}

fn parse(bytes: &[u8]) -> Parsed {
    match stream_line(bytes) {
        None => return Parsed::Partial,
        Some(false) => return Parsed::Hyper,
        Some(true) => {}
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) => match stream_request(&req) {
            Some(r) => Parsed::Stream(Box::new(r), len),
            None => Parsed::Hyper,
        },
        Err(_) => Parsed::Hyper,
    }
}

/// Whether the request line starts `GET /v1/stream` followed by `?` or a
/// space; `None` until enough bytes have come to tell. Anything else (a
/// publish, a probe) goes to hyper from its first bytes, so its head is
/// parsed once, by hyper.
fn stream_line(bytes: &[u8]) -> Option<bool> {
    let want = b"GET ".iter().chain(STREAM_PATH.as_bytes());
    let mut n = 0;
    for (i, w) in want.enumerate() {
        if *bytes.get(i)? != *w {
            return Some(false);
        }
        n = i + 1;
    }
    Some(matches!(bytes.get(n)?, b'?' | b' '))
}

/// The request as hyper would hand it to the router, if it is a plain
/// HTTP/1.1 stream GET.
fn stream_request(req: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    if req.method? != "GET" || req.version? != 1 {
        return None;
    }
    let path = req.path?;
    if path.split('?').next() != Some(STREAM_PATH) {
        return None;
    }
    let uri: Uri = path.parse().ok()?;
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if !plain(&name, &value) {
            return None;
        }
        map.append(name, value);
    }
    let mut out = Request::new(Body::empty());
    *out.method_mut() = Method::GET;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = map;
    Some(out)
}

/// A header the lean path can honour: no request body, no upgrade, no
/// expectation, and the connection stays open.
fn plain(name: &HeaderName, value: &HeaderValue) -> bool {
    match *name {
        header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => {
            false
        }
        header::CONNECTION => value.to_str().is_ok_and(|v| {
            v.split(',')
                .all(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
        }),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(bytes: &[u8]) -> &'static str {
        match parse(bytes) {
            Parsed::Partial => "partial",
            Parsed::Hyper => "hyper",
            Parsed::Stream(..) => "stream",
        }
    }

    #[test]
    fn only_plain_stream_gets_stay_lean() {
        let ok = b"GET /v1/stream?topic=a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(kind(ok), "stream");
        assert_eq!(kind(&ok[..20]), "partial");
        assert_eq!(kind(b"GE"), "partial");
        assert_eq!(kind(b"GET /v1/stream"), "partial");
        // Decided from the first bytes: hyper alone parses these heads.
        assert_eq!(kind(b"PO"), "hyper");
        assert_eq!(kind(b"GET /v1/streamz"), "hyper");
        assert_eq!(
            kind(b"\r\nGET /v1/stream?topic=a HTTP/1.1\r\n\r\n"),
            "hyper"
        );
        for other in [
            &b"POST /v1/stream?topic=a HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /v1/streams HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v1/stream?topic=a HTTP/1.0\r\nHost: x\r\n\r\n",
            b"GET /v1/stream?topic=a HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /v1/stream?topic=a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /v1/stream?topic=a HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /v1/stream?topic=a HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert_eq!(kind(other), "hyper", "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn the_request_is_what_hyper_would_build() {
        let Parsed::Stream(req, len) = parse(
            b"GET /v1/stream?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nrest",
        ) else {
            panic!("not a stream");
        };
        assert_eq!(len, 68);
        assert_eq!(req.uri().path(), "/v1/stream");
        assert_eq!(req.uri().query(), Some("topic=a&topic=b"));
        let values: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }
}
