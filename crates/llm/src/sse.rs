//! Incremental `text/event-stream` parser (WHATWG HTML §9.2.6) that feeds each
//! event's data straight into the JSON [`Scanner`], so no event is buffered.
//!
//! Lines end with `\r\n`, `\r` or `\n` (a `\r\n` split across frames counts
//! once); a leading UTF-8 BOM is skipped; `:` lines are comments; a field
//! value drops one leading space; several `data:` lines join with `\n`
//! (which JSON reads as whitespace); an empty line dispatches the event.

use crate::extract::Accumulator;
use crate::scan::{Kind, Scanner};
use memchr::memchr2;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Longest `event:` name kept (ours are at most 19 bytes).
const MAX_EVENT_NAME: usize = 32;
/// Data bytes kept to recognise `[DONE]`.
const PEEK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// In the field name; `name[..len]` so far.
    Name,
    /// Just after the colon: one space may be skipped.
    ValueStart(Field),
    /// In the value.
    Value(Field),
    /// In a comment line.
    Comment,
}

/// SSE parser state.
#[derive(Debug)]
pub(crate) struct SseParser {
    line: Line,
    name: [u8; 8],
    name_len: usize,
    /// A `\r` ended the previous line: skip one `\n` right after it.
    skip_lf: bool,
    /// BOM bytes matched at stream start; `None` once decided.
    bom: Option<usize>,
    event: [u8; MAX_EVENT_NAME],
    event_len: usize,
    event_over: bool,
    has_data: bool,
    peek: [u8; PEEK],
    data_len: usize,
    /// Events whose data was not a complete JSON value (garbage, `[DONE]` is
    /// counted separately).
    pub(crate) bad_events: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self {
            line: Line::Start,
            name: [0; 8],
            name_len: 0,
            skip_lf: false,
            bom: Some(0),
            event: [0; MAX_EVENT_NAME],
            event_len: 0,
            event_over: false,
            has_data: false,
            peek: [0; PEEK],
            data_len: 0,
            bad_events: 0,
        }
    }
}

impl SseParser {
    /// Consumes the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut buf: &[u8], scan: &mut Scanner, acc: &mut Accumulator) {
        if let Some(matched) = self.bom {
            let mut m = matched;
            while m < BOM.len() {
                match buf.first() {
                    None => {
                        self.bom = Some(m);
                        return;
                    }
                    Some(&b) if b == BOM[m] => {
                        m += 1;
                        buf = &buf[1..];
                    }
                    Some(_) => {
                        // Not a BOM: replay what matched as line content.
                        self.bom = None;
                        self.feed_lines(&BOM[..m], scan, acc);
                        break;
                    }
                }
            }
            self.bom = None;
        }
        self.feed_lines(buf, scan, acc);
    }

    fn feed_lines(&mut self, buf: &[u8], scan: &mut Scanner, acc: &mut Accumulator) {
        let mut i = 0;
        while i < buf.len() {
            match self.line {
                Line::Start => {
                    let b = buf[i];
                    if self.skip_lf {
                        self.skip_lf = false;
                        if b == b'\n' {
                            i += 1;
                            continue;
                        }
                    }
                    match b {
                        b'\r' | b'\n' => {
                            self.skip_lf = b == b'\r';
                            i += 1;
                            self.dispatch(scan, acc);
                        }
                        b':' => {
                            i += 1;
                            self.line = Line::Comment;
                        }
                        _ => {
                            // Fast path for the two fields that matter.
                            let rest = &buf[i..];
                            if rest.starts_with(b"data:") {
                                i += 5;
                                self.line = Line::ValueStart(Field::Data);
                            } else if rest.starts_with(b"event:") {
                                i += 6;
                                self.line = Line::ValueStart(Field::Event);
                            } else {
                                self.name_len = 0;
                                self.line = Line::Name;
                            }
                        }
                    }
                }
                Line::Comment => match memchr2(b'\r', b'\n', &buf[i..]) {
                    None => i = buf.len(),
                    Some(off) => i += off + self.end_line(buf[i + off]),
                },
                Line::Name => {
                    let b = buf[i];
                    match b {
                        b'\r' | b'\n' => {
                            // A field with no colon: its value is empty.
                            self.begin_value(self.field(), scan);
                            i += self.end_line(b);
                        }
                        b':' => {
                            i += 1;
                            self.line = Line::ValueStart(self.field());
                        }
                        _ => {
                            if self.name_len < self.name.len() {
                                self.name[self.name_len] = b;
                            }
                            self.name_len = self.name_len.saturating_add(1);
                            i += 1;
                        }
                    }
                }
                Line::ValueStart(f) => {
                    if buf[i] == b' ' {
                        i += 1;
                    }
                    self.begin_value(f, scan);
                }
                Line::Value(f) => {
                    let (end, eol) = match memchr2(b'\r', b'\n', &buf[i..]) {
                        None => (buf.len(), None),
                        Some(off) => (i + off, Some(buf[i + off])),
                    };
                    let chunk = &buf[i..end];
                    match f {
                        Field::Data => self.data(chunk, scan),
                        Field::Event => self.event_bytes(chunk),
                        Field::Other => {}
                    }
                    i = end;
                    if let Some(b) = eol {
                        i += self.end_line(b);
                    }
                }
            }
        }
    }

    fn field(&self) -> Field {
        match &self.name[..self.name_len.min(self.name.len())] {
            b"data" if self.name_len == 4 => Field::Data,
            b"event" if self.name_len == 5 => Field::Event,
            _ => Field::Other,
        }
    }

    /// The value of field `f` starts: a `data` line after the first is joined
    /// with `\n`; an `event` line replaces the event name.
    fn begin_value(&mut self, f: Field, scan: &mut Scanner) {
        self.line = Line::Value(f);
        match f {
            Field::Data if self.has_data => self.data(b"\n", scan),
            Field::Data => {
                self.has_data = true;
                self.data_len = 0;
            }
            Field::Event => {
                self.event_len = 0;
                self.event_over = false;
            }
            Field::Other => {}
        }
    }

    fn data(&mut self, chunk: &[u8], scan: &mut Scanner) {
        if self.data_len < PEEK {
            let n = chunk.len().min(PEEK - self.data_len);
            self.peek[self.data_len..self.data_len + n].copy_from_slice(&chunk[..n]);
        }
        self.data_len = self.data_len.saturating_add(chunk.len());
        scan.feed(chunk);
    }

    fn event_bytes(&mut self, chunk: &[u8]) {
        if self.event_len + chunk.len() > MAX_EVENT_NAME {
            self.event_over = true;
            return;
        }
        self.event[self.event_len..self.event_len + chunk.len()].copy_from_slice(chunk);
        self.event_len += chunk.len();
    }

    /// Ends the current line at its terminator `b`; returns bytes consumed (1).
    fn end_line(&mut self, b: u8) -> usize {
        self.line = Line::Start;
        self.skip_lf = b == b'\r';
        1
    }

    /// An empty line: dispatch the pending event, if it has data.
    fn dispatch(&mut self, scan: &mut Scanner, acc: &mut Accumulator) {
        if self.has_data {
            let n = self.data_len.min(PEEK);
            if self.peek[..n].trim_ascii() == b"[DONE]" && self.data_len <= PEEK {
                acc.done_marker();
            } else {
                scan.finish();
                if scan.complete() {
                    acc.document(scan, self.event_kind(), true);
                } else {
                    self.bad_events = self.bad_events.saturating_add(1);
                }
            }
        }
        scan.reset();
        self.has_data = false;
        self.event_len = 0;
        self.event_over = false;
    }

    fn event_kind(&self) -> Option<Kind> {
        if self.event_over || self.event_len == 0 {
            None
        } else {
            Some(Kind::from_name(&self.event[..self.event_len]))
        }
    }

    /// End of stream: an event missing only its blank line is still used if
    /// its data is a complete JSON value (the provider billed it either way).
    pub(crate) fn finish(&mut self, scan: &mut Scanner, acc: &mut Accumulator) {
        if let Line::ValueStart(f) | Line::Value(f) = self.line {
            if f == Field::Data && !self.has_data {
                self.begin_value(f, scan);
            }
        } else if self.line == Line::Name {
            self.begin_value(self.field(), scan);
        }
        self.line = Line::Start;
        self.dispatch(scan, acc);
    }
}

/// Whether `buf` at the stream start looks like SSE rather than JSON: the
/// first non-whitespace byte decides (`{`/`[` → JSON). `None` if undecided.
pub(crate) fn sniff(buf: &[u8]) -> Option<bool> {
    let pos = buf
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
    Some(!matches!(buf[pos], b'{' | b'['))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use portcullis_core::Usage;

    fn run(stream: &[u8], format: Format, splits: &[usize]) -> (Option<Usage>, bool, u64) {
        let mut p = SseParser::default();
        let mut s = Scanner::default();
        let mut a = Accumulator::new(format);
        let mut last = 0;
        for &at in splits {
            p.feed(&stream[last..at], &mut s, &mut a);
            last = at;
        }
        p.feed(&stream[last..], &mut s, &mut a);
        p.finish(&mut s, &mut a);
        (a.usage(), a.terminal, p.bad_events)
    }

    #[test]
    fn line_endings_bom_comments_multiline() {
        let stream = b"\xEF\xBB\xBF: keep-alive\r\nevent: x\rdata:{\"usage\":\r\ndata: {\"prompt_tokens\":3,\n\
data:\"completion_tokens\":4}}\r\n\r\ndata: [DONE]\n\n";
        for a in 0..=stream.len() {
            let (u, terminal, bad) = run(stream, Format::OpenAi, &[a]);
            assert_eq!(u, Some(Usage::provider(3, 4, 0, 0)), "split {a}");
            assert!(terminal, "split {a}");
            assert_eq!(bad, 0, "split {a}");
        }
    }

    #[test]
    fn bare_data_field_and_event_names() {
        // `data` without a colon appends an empty line; event name from the
        // `event:` field is used when the JSON has no `type`.
        let stream =
            b"event: message_start\ndata\ndata: {\"message\":{\"usage\":{\"input_tokens\":5}}}\n\n\
event: message_stop\ndata: {}\n\n";
        for a in 0..=stream.len() {
            let (u, terminal, bad) = run(stream, Format::Anthropic, &[a]);
            assert_eq!(u, Some(Usage::provider(5, 0, 0, 0)), "split {a}");
            assert!(terminal);
            assert_eq!(bad, 0);
        }
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"  \n"), None);
        assert_eq!(sniff(b" {\"a\""), Some(false));
        assert_eq!(sniff(b"data: x"), Some(true));
        assert_eq!(sniff(b"\xEF\xBB\xBFdata"), Some(true));
    }
}
