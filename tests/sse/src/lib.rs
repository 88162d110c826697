//! A `text/event-stream` parser for the tests and the load tool, written
//! from the WHATWG HTML standard, "Server-sent events", section
//! "Interpreting an event stream", and from nothing else: in particular not
//! from the gateway's own parser, so that a bug shared by the gateway's
//! encoder and its parser cannot cancel out in the tests.
//!
//! What it implements, rule by rule:
//! - the stream is UTF-8; one leading U+FEFF BYTE ORDER MARK is dropped;
//!   invalid bytes become U+FFFD;
//! - lines end with CRLF, LF or CR (a CRLF split over two reads is one end);
//! - an empty line dispatches the event;
//! - a line starting with `:` is a comment and is ignored;
//! - otherwise the field name is what comes before the first `:` and the
//!   value what follows, minus one leading space; a line without `:` is a
//!   field name with the empty value;
//! - `event` sets the event type buffer; `data` appends the value and a LF
//!   to the data buffer; `id` sets the last event ID buffer unless the value
//!   contains U+0000 NULL; `retry` sets the reconnection time if the value is
//!   ASCII digits only; any other field is ignored;
//! - dispatch: the last event ID (what a reconnect sends as `Last-Event-ID`)
//!   becomes the last event ID buffer, which is never cleared by dispatch
//!   and so persists over events without `id`; if the data buffer is empty
//!   nothing is fired (the type buffer is cleared); else one trailing LF is
//!   removed and an event fires with type `message` unless the type buffer
//!   says otherwise; both buffers are then cleared;
//! - at the end of the stream an event not yet followed by an empty line is
//!   discarded.

/// One dispatched event, as an `EventSource` would fire it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The event type: `message` unless an `event` field named another.
    pub event_type: String,
    /// The data, lines joined by LF.
    pub data: String,
    /// The `lastEventId` of the event: the last event ID at its dispatch.
    pub id: String,
}

/// An incremental parser: feed it the body as it arrives.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The previous byte was a CR: a LF right after it ends nothing.
    after_cr: bool,
    /// At least one line was read (a BOM can only open the first).
    started: bool,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parses the next bytes of the stream; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line(&mut out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    /// The last event ID: what a reconnecting `EventSource` sends as
    /// `Last-Event-ID` (empty: no header).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for with `retry:`, in ms.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        let mut bytes = std::mem::take(&mut self.line);
        if !self.started {
            self.started = true;
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits beyond u64 are no reconnection time anyone can wait.
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        self.last_event_id = self.id_buffer.clone();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = match std::mem::take(&mut self.event_type) {
            t if t.is_empty() => "message".to_owned(),
            t => t,
        };
        out.push(Event {
            event_type,
            data,
            id: self.last_event_id.clone(),
        });
    }
}

/// Parses a whole stream at once.
pub fn parse(stream: &[u8]) -> (Vec<Event>, Parser) {
    let mut p = Parser::new();
    let events = p.feed(stream);
    (events, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(data: &str, id: &str) -> Event {
        Event {
            event_type: "message".into(),
            data: data.into(),
            id: id.into(),
        }
    }

    /// Every split of `stream` into two reads gives the same events.
    fn same_in_any_two_reads(stream: &[u8]) -> Vec<Event> {
        let (whole, _) = parse(stream);
        for cut in 0..=stream.len() {
            let mut p = Parser::new();
            let mut got = p.feed(&stream[..cut]);
            got.extend(p.feed(&stream[cut..]));
            assert_eq!(got, whole, "split at byte {cut}");
        }
        let mut p = Parser::new();
        let one_by_one: Vec<Event> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(one_by_one, whole, "byte by byte");
        whole
    }

    // The standard's examples, in its order.

    #[test]
    fn spec_three_data_lines_make_one_event() {
        let got = same_in_any_two_reads(b"data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(got, [msg("YHOO\n+2\n10", "")]);
    }

    #[test]
    fn spec_comment_id_and_id_reset() {
        let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        let got = same_in_any_two_reads(stream);
        assert_eq!(
            got,
            [
                msg("first event", "1"),
                msg("second event", ""),
                msg(" third event", "")
            ]
        );
        let (_, p) = parse(stream);
        assert_eq!(p.last_event_id(), "", "an empty id resets it");
    }

    #[test]
    fn spec_empty_data_fields() {
        // The first block fires an event with empty data; the middle one a
        // single newline; the last is not followed by a blank line.
        let got = same_in_any_two_reads(b"data\n\ndata\ndata\n\ndata:");
        assert_eq!(got, [msg("", ""), msg("\n", "")]);
    }

    #[test]
    fn spec_one_leading_space_is_dropped() {
        let got = same_in_any_two_reads(b"data:test\n\ndata: test\n\n");
        assert_eq!(got, [msg("test", ""), msg("test", "")]);
    }

    // The rules one by one.

    #[test]
    fn cr_lf_and_crlf_end_lines() {
        for stream in [
            &b"data: a\r\ndata: b\r\n\r\n"[..],
            b"data: a\rdata: b\r\r",
            b"data: a\ndata: b\n\n",
            b"data: a\r\ndata: b\rdata: c\n\r\n",
        ] {
            let got = same_in_any_two_reads(stream);
            assert!(
                got == [msg("a\nb", "")] || got == [msg("a\nb\nc", "")],
                "{got:?}"
            );
        }
        // CR CR is two line ends: the second is an empty line.
        assert_eq!(same_in_any_two_reads(b"data: x\r\rdata: y\r\r").len(), 2);
    }

    #[test]
    fn only_one_space_and_only_after_the_colon() {
        let got = same_in_any_two_reads(b"data:   two more\n\ndata:\tx\n\n");
        assert_eq!(got, [msg("  two more", ""), msg("\tx", "")]);
        // The value is everything after the first colon.
        assert_eq!(
            same_in_any_two_reads(b"data: a:b: c\n\n"),
            [msg("a:b: c", "")]
        );
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let got = same_in_any_two_reads(
            b":hi\n: data: no\nfoo: bar\nDATA: upper\ndata : spaced\ndata: yes\n\n",
        );
        assert_eq!(got, [msg("yes", "")]);
        // A comment-only block dispatches nothing.
        assert!(same_in_any_two_reads(b": keep-alive\n\n").is_empty());
    }

    #[test]
    fn event_type_applies_to_one_event() {
        let got =
            same_in_any_two_reads(b"event: reset\ndata: {}\n\ndata: next\n\nevent\ndata: x\n\n");
        assert_eq!(got[0].event_type, "reset");
        assert_eq!(got[1].event_type, "message");
        assert_eq!(got[2].event_type, "message", "an empty type is message");
        // A type without data fires nothing and does not leak into the next.
        let got = same_in_any_two_reads(b"event: lost\n\ndata: d\n\n");
        assert_eq!(got, [msg("d", "")]);
    }

    #[test]
    fn last_event_id_persists_and_updates_at_dispatch() {
        let mut p = Parser::new();
        assert!(p.feed(b"id: 7\n").is_empty());
        assert_eq!(p.last_event_id(), "", "only a dispatch sets it");
        // A block with an id and no data sets it and fires nothing.
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(p.last_event_id(), "7");
        // Later events without an id carry the last one.
        assert_eq!(p.feed(b"data: a\n\n"), [msg("a", "7")]);
        assert_eq!(p.feed(b"data: b\nid: 8\n\n"), [msg("b", "8")]);
        assert_eq!(p.last_event_id(), "8");
    }

    #[test]
    fn an_id_with_nul_is_ignored() {
        let (got, p) = parse(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n");
        assert_eq!(got, [msg("a", "1"), msg("b", "1")]);
        assert_eq!(p.last_event_id(), "1");
    }

    #[test]
    fn retry_takes_ascii_digits_only() {
        let mut p = Parser::new();
        p.feed(b"retry: 1500\n\n");
        assert_eq!(p.retry(), Some(1500));
        for bad in [
            &b"retry: 15x\n"[..],
            b"retry: -1\n",
            b"retry: 1.5\n",
            b"retry: \n",
            b"retry:  20\n",
            b"retry\n",
        ] {
            p.feed(bad);
            assert_eq!(
                p.retry(),
                Some(1500),
                "{:?} ignored",
                String::from_utf8_lossy(bad)
            );
        }
        p.feed(b"retry:0\n");
        assert_eq!(p.retry(), Some(0));
        // retry alone fires nothing.
        assert!(p.feed(b"\n").is_empty());
    }

    #[test]
    fn the_trailing_newline_only_once() {
        assert_eq!(
            same_in_any_two_reads(b"data: a\ndata:\n\n"),
            [msg("a\n", "")]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(same_in_any_two_reads(b"data: never\n").is_empty());
        assert!(same_in_any_two_reads(b"data: never").is_empty());
    }

    #[test]
    fn a_leading_bom_is_dropped_once() {
        let got = same_in_any_two_reads(b"\xEF\xBB\xBFdata: a\n\n");
        assert_eq!(got, [msg("a", "")]);
        // Only at the very start: a second one makes the first line a field
        // named "\u{FEFF}data", which is ignored.
        assert!(same_in_any_two_reads(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n").is_empty());
        // Not at the start of a later line.
        assert!(same_in_any_two_reads(b"\n\xEF\xBB\xBFdata: a\n\n").is_empty());
    }

    #[test]
    fn utf8_across_reads_and_invalid_bytes() {
        let got = same_in_any_two_reads("data: żółw ✓\n\n".as_bytes());
        assert_eq!(got, [msg("żółw ✓", "")]);
        let (got, _) = parse(b"data: a\xFFb\n\n");
        assert_eq!(got, [msg("a\u{FFFD}b", "")]);
    }
}
