//! An incremental `text/event-stream` parser (WHATWG HTML "event stream interpretation") that
//! yields whole events, each with the exact bytes it was made of, so a caller can pass events
//! through unchanged or replace one. Correct for any split of the stream into chunks, down to
//! one byte at a time: lines end with CR, LF or CRLF (a CRLF split across chunks counts once),
//! a leading UTF-8 BOM is skipped, `:` lines are comments, a field value drops one leading
//! space, `data` lines join with LF, and an empty line ends the event. Memory is bounded: an
//! event larger than `max_event` bytes is reported as oversized, its data dropped.

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The exact bytes of the event, from its first byte through the line ending of the blank
    /// line that ended it (empty when `oversized` and raw bytes are not kept).
    pub raw: Vec<u8>,
    /// The event's data (its `data` lines joined with LF), `None` without a `data` field.
    pub data: Option<Vec<u8>>,
    /// Larger than the bound: `data` is `None` and `raw` holds only what fit.
    pub oversized: bool,
    /// Leading bytes of `raw` that end the previous event's blank line (the LF of a CRLF whose
    /// CR ended it): whoever replaces this event keeps them.
    pub lead: usize,
}

/// Parser state; feed chunks in order.
#[derive(Debug)]
pub struct SseParser {
    max_event: usize,
    keep_raw: bool,
    raw: Vec<u8>,
    line: Vec<u8>,
    /// Bytes of the current line (kept or not).
    line_len: usize,
    data: Vec<u8>,
    has_data: bool,
    size: usize,
    oversized: bool,
    /// A CR ended the last line: a following LF belongs to it.
    after_cr: bool,
    /// Bytes of a leading BOM matched so far; `None` once past the start.
    bom: Option<usize>,
    /// Leading bytes of the current event that belong to the previous one.
    lead: usize,
}

impl SseParser {
    /// A parser keeping events up to `max_event` bytes; `keep_raw` keeps each event's bytes.
    pub fn new(max_event: usize, keep_raw: bool) -> Self {
        Self {
            max_event,
            keep_raw,
            raw: Vec::new(),
            line: Vec::new(),
            line_len: 0,
            data: Vec::new(),
            has_data: false,
            size: 0,
            oversized: false,
            after_cr: false,
            bom: Some(0),
            lead: 0,
        }
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        for &b in chunk {
            self.byte(b, out);
        }
    }

    /// The bytes of an event the stream ended in the middle of (a client never dispatches
    /// it), as far as they were kept.
    pub fn finish(self) -> Vec<u8> {
        self.raw
    }

    /// Whether the event being read is already over the bound.
    pub fn in_oversized_event(&self) -> bool {
        self.oversized
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Event>) {
        self.size += 1;
        if self.size > self.max_event && !self.oversized {
            self.oversized = true;
            self.data = Vec::new();
            self.line = Vec::new();
        }
        if self.keep_raw && !self.oversized {
            self.raw.push(b);
        }
        if let Some(seen) = self.bom {
            if b == BOM[seen] {
                self.bom = (seen + 1 < BOM.len()).then_some(seen + 1);
                return;
            }
            self.bom = None;
            // Not a BOM after all: the bytes matched so far are line content.
            for &h in &BOM[..seen] {
                self.content(h);
            }
        }
        match b {
            b'\n' if self.after_cr => {
                self.after_cr = false;
                if self.size == 1 {
                    self.lead = 1;
                }
            }
            b'\n' => self.end_line(out),
            b'\r' => {
                self.after_cr = true;
                self.end_line(out);
            }
            _ => {
                self.after_cr = false;
                self.content(b);
            }
        }
    }

    fn content(&mut self, b: u8) {
        self.line_len += 1;
        if !self.oversized {
            self.line.push(b);
        }
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        let len = std::mem::replace(&mut self.line_len, 0);
        let line = std::mem::take(&mut self.line);
        if len == 0 {
            return self.dispatch(out);
        }
        if self.oversized || line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        if name == b"data" {
            self.data.extend_from_slice(value);
            self.data.push(b'\n');
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let mut data = std::mem::take(&mut self.data);
        if data.last() == Some(&b'\n') {
            data.pop();
        }
        out.push(Event {
            raw: std::mem::take(&mut self.raw),
            data: (self.has_data && !self.oversized).then_some(data),
            oversized: self.oversized,
            lead: std::mem::replace(&mut self.lead, 0),
        });
        self.has_data = false;
        self.oversized = false;
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]], max: usize) -> (Vec<Event>, Vec<u8>) {
        let mut p = SseParser::new(max, true);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        (out, p.finish())
    }

    fn datas(ev: &[Event]) -> Vec<Option<String>> {
        ev.iter()
            .map(|e| {
                e.data
                    .as_ref()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
            })
            .collect()
    }

    const STREAM: &[u8] =
        b"\xEF\xBB\xBF: comment\r\nevent: message\r\nid: 1\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n\
data:x\rdata: y\r\r\n\ndata\n\nretry: 5\n\ndata: tail";

    #[test]
    fn parses_fields_line_endings_and_comments() {
        let (ev, rest) = events(&[STREAM], 1 << 20);
        assert_eq!(
            datas(&ev),
            [
                Some("{\"a\":\n1}".to_owned()),
                Some("x\ny".to_owned()),
                None,
                Some(String::new()),
                None
            ]
        );
        assert_eq!(rest, b"data: tail", "an unfinished event is not dispatched");
        let mut all: Vec<u8> = ev.iter().flat_map(|e| e.raw.clone()).collect();
        all.extend_from_slice(&rest);
        assert_eq!(all, STREAM, "raw bytes cover the stream exactly");
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let (whole, whole_rest) = events(&[STREAM], 1 << 20);
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let (ev, rest) = events(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]], 1 << 20);
                assert_eq!(datas(&ev), datas(&whole), "split at {i},{j}");
                let mut all: Vec<u8> = ev.iter().flat_map(|e| e.raw.clone()).collect();
                all.extend_from_slice(&rest);
                assert_eq!(all, STREAM);
            }
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (ev, rest) = events(&bytes, 1 << 20);
        assert_eq!(datas(&ev), datas(&whole));
        assert_eq!(rest, whole_rest);
    }

    #[test]
    fn a_partial_bom_is_content() {
        let (ev, _) = events(&[b"\xEFdata: a\n\n"], 100);
        assert_eq!(datas(&ev), [None]);
        let (ev, _) = events(&[b"\xEF\xBB", b"\xBFdata: a\n\n"], 100);
        assert_eq!(datas(&ev), [Some("a".to_owned())]);
    }

    #[test]
    fn oversized_events_are_bounded_and_flagged() {
        let big = format!("data: {}\n\ndata: ok\n\n", "x".repeat(1000));
        let (ev, _) = events(&[big.as_bytes()], 64);
        assert_eq!(ev.len(), 2);
        assert!(ev[0].oversized && ev[0].data.is_none());
        assert!(ev[0].raw.len() <= 64);
        assert_eq!(datas(&ev[1..]), [Some("ok".to_owned())]);
        // Raw bytes are not kept when not asked for.
        let mut p = SseParser::new(64, false);
        let mut out = Vec::new();
        p.feed(b"data: a\n\n", &mut out);
        assert!(out[0].raw.is_empty());
        assert_eq!(out[0].data.as_deref(), Some(&b"a"[..]));
    }
}
