//! The text/event-stream blocks themselves, exactly as the WHATWG rules
//! read them back. The engine's fan-out writes an event's lines once with
//! these, to share them among every HTTP stream.

use bytes::{BufMut, Bytes, BytesMut};

/// A heartbeat: a comment line, ignored by clients, that keeps proxies and NATs from idling out.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// `retry: <ms>` as a standalone block.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// Writes `event:` (if any) and the `data:` lines of one event, without `id:`
/// and without the blank line that dispatches it. Payload line breaks (`\n`,
/// `\r`, `\r\n`) each start a new `data:` line, so the client reads back the
/// payload with every break normalised to `\n` (the only form the spec can carry).
pub fn write_body(buf: &mut BytesMut, event_type: Option<&str>, data: &str) {
    buf.reserve(data.len() + 16);
    if let Some(t) = event_type {
        buf.put_slice(b"event: ");
        buf.put_slice(t.as_bytes());
        buf.put_u8(b'\n');
    }
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\r' => {
                put_data_line(buf, &bytes[start..i]);
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    put_data_line(buf, &bytes[start..]);
}

fn put_data_line(buf: &mut BytesMut, line: &[u8]) {
    // Always a space after the colon: the parser strips exactly one, so a
    // payload line that itself starts with a space survives.
    buf.put_slice(b"data: ");
    buf.put_slice(line);
    buf.put_u8(b'\n');
}

/// Writes `id: <id>` and the blank line that dispatches the event.
/// The id must not contain `\0`, `\n` or `\r` (cursors never do).
pub fn write_id_and_end(buf: &mut BytesMut, id: &str) {
    debug_assert!(!id.contains(['\0', '\n', '\r']));
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_slice(b"\n\n");
}

/// One complete event block.
pub fn event(event_type: Option<&str>, data: &str, id: Option<&str>) -> Bytes {
    let mut buf = BytesMut::new();
    write_body(&mut buf, event_type, data);
    match id {
        Some(id) => write_id_and_end(&mut buf, id),
        None => buf.put_u8(b'\n'),
    }
    buf.freeze()
}

/// The last block of a stream its credential ended: a `retry:` hint and an
/// event without `id:`, so the client's Last-Event-ID stays where it was.
pub fn credential_ended(event_type: &str, reason: &str, retry_ms: u64) -> Bytes {
    let mut buf = BytesMut::from(format!("retry: {retry_ms}\n").as_bytes());
    write_body(
        &mut buf,
        Some(event_type),
        &format!("{{\"reason\":\"{reason}\"}}"),
    );
    buf.put_u8(b'\n');
    buf.freeze()
}
