//! An incremental text/event-stream parser following the WHATWG algorithm
//! ("Interpreting an event stream"), fed arbitrary chunks.

/// One dispatched event as a browser's `EventSource` would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, or `message`.
    pub event_type: String,
    /// The data buffer with its final line feed removed.
    pub data: String,
    /// The last event ID in force when the event was dispatched.
    pub id: String,
}

/// Streaming parser: feed bytes, get events.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// A `\r` ended the previous chunk: a `\n` that starts the next one belongs to it.
    pending_cr: bool,
    started: bool,
    head: Vec<u8>,
    data: String,
    event_type: String,
    last_id: String,
    retry: Option<u64>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event ID (what `Last-Event-ID` would carry on reconnect).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The reconnection time set by the last valid `retry:` field.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Feeds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let head;
        let mut bytes = chunk;
        if !self.started {
            // The BOM may arrive split over chunks: hold bytes until it is decided.
            self.head.extend_from_slice(chunk);
            let n = self.head.len().min(BOM.len());
            if self.head[..n] == BOM[..n] && self.head.len() < BOM.len() {
                return out;
            }
            self.started = true;
            head = std::mem::take(&mut self.head);
            bytes = head.strip_prefix(BOM).unwrap_or(&head);
        }
        for &b in bytes {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    self.end_line(&mut out);
                }
                b'\n' => self.end_line(&mut out),
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(SseEvent {
            event_type: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        let mut p = Parser::new();
        let evs = p.feed(b"data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(evs[0].data, "YHOO\n+2\n10");
        let evs = p.feed(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n");
        assert_eq!(evs.len(), 3);
        assert_eq!(
            (evs[0].data.as_str(), evs[0].id.as_str()),
            ("first event", "1")
        );
        assert_eq!(
            (evs[1].data.as_str(), evs[1].id.as_str()),
            ("second event", "")
        );
        assert_eq!(evs[2].data, " third event");
        let evs = p.feed(b"data\n\ndata\ndata\n\ndata:");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].data, "");
        assert_eq!(evs[1].data, "\n");
    }

    #[test]
    fn chunk_boundaries_and_line_endings() {
        let text = b"\xEF\xBB\xBFevent: x\r\ndata: a\rdata: b\r\nid: 7\r\n\r\n";
        for split in 0..text.len() {
            let mut p = Parser::new();
            let mut evs = p.feed(&text[..split]);
            evs.extend(p.feed(&text[split..]));
            assert_eq!(evs.len(), 1, "split at {split}");
            assert_eq!(evs[0].data, "a\nb");
            assert_eq!(evs[0].event_type, "x");
            assert_eq!(evs[0].id, "7");
        }
    }

    #[test]
    fn id_with_nul_is_ignored_and_bad_retry_too() {
        let mut p = Parser::new();
        let evs = p.feed(b"id: ok\nretry: 10\n\nid: a\0b\nretry: 5x\ndata: d\n\n");
        assert_eq!(evs[0].id, "ok");
        assert_eq!(p.retry(), Some(10));
    }
}
