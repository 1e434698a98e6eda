//! Incremental JSON scanner that captures a few values at fixed paths.
//!
//! It never holds the document. The top-level object and the objects under
//! `response`, `message` and `x_groq` are tracked key by key; any other
//! container is skipped by counting brackets outside strings (a counter, so
//! nesting depth costs no memory and no stack). Only the values at the paths
//! the usage tap needs (`type`, `usage`, `response.usage`, `message.usage`,
//! `x_groq.usage`) are copied out, each bounded by [`MAX_CAPTURE`] and parsed
//! with serde_json (whose recursion limit guards deep captures). So it finds
//! `usage` at the end of a 100 MB body in constant memory, and the same
//! scanner parses SSE `data:` payloads without buffering events.

use memchr::memchr2;
use serde_json::Value;

/// Levels tracked key by key (deeper containers are skipped).
const TRACKED_DEPTH: usize = 2;
/// Largest captured value (usage objects are a few hundred bytes).
pub const MAX_CAPTURE: usize = 16 * 1024;
/// Longest key compared (escaped forms of our keys fit).
const MAX_KEY: usize = 48;

/// Captured paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Top-level `usage`.
    Usage = 0,
    /// `response.usage` (Responses API stream events).
    ResponseUsage = 1,
    /// `message.usage` (Anthropic `message_start`).
    MessageUsage = 2,
    /// `x_groq.usage` (Groq stream chunks).
    GroqUsage = 3,
}

const SLOTS: usize = 4;

/// Event or object kind from a top-level `type` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
    ResponseCompleted,
    ResponseIncomplete,
    ResponseFailed,
    Other,
}

impl Kind {
    pub(crate) fn from_name(s: &[u8]) -> Self {
        match s {
            b"message_start" => Self::MessageStart,
            b"message_delta" => Self::MessageDelta,
            b"message_stop" => Self::MessageStop,
            b"error" => Self::Error,
            b"response.completed" => Self::ResponseCompleted,
            b"response.incomplete" => Self::ResponseIncomplete,
            b"response.failed" => Self::ResponseFailed,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    Type,
    Usage,
    Response,
    Message,
    XGroq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a value.
    Value,
    /// After `[`: a value or `]`.
    ArrFirst,
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    ObjKey,
    Key,
    KeyEsc,
    Colon,
    Str,
    StrEsc,
    Scalar,
    /// After a value: `,` or a closing bracket.
    After,
    /// Inside a container whose content cannot hold a captured path: only
    /// brackets and strings are tracked (`skip_depth` open brackets).
    Skip,
    SkipStr,
    SkipEsc,
    /// The top-level value is complete.
    Done,
    /// Syntax error or bound exceeded: the rest is ignored.
    Failed,
}

/// What is being captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Type,
    Slot(Slot),
}

/// The scanner. Reusable across documents via [`Scanner::reset`].
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    /// Nesting: true = object.
    stack: Vec<bool>,
    /// Whether the value being entered is an object member (vs array element).
    member: bool,
    /// Keys of the current member at depth 1 and 2.
    keys: [Key; 2],
    key_buf: Vec<u8>,
    key_escaped: bool,
    key_over: bool,
    /// Open brackets in [`State::Skip`].
    skip_depth: u64,
    /// Active capture: target and the stack depth at which its value started.
    cap: Option<(Target, usize)>,
    cap_buf: Vec<u8>,
    cap_from: usize,
    cap_over: bool,
    /// A capture exceeded [`MAX_CAPTURE`] (sticky across documents).
    pub(crate) overflowed: bool,
    kind: Option<Kind>,
    slots: [Option<Value>; SLOTS],
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Value,
            stack: Vec::new(),
            member: false,
            skip_depth: 0,
            keys: [Key::Other; 2],
            key_buf: Vec::new(),
            key_escaped: false,
            key_over: false,
            cap: None,
            cap_buf: Vec::new(),
            cap_from: 0,
            cap_over: false,
            overflowed: false,
            kind: None,
            slots: [None, None, None, None],
        }
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Byte classes in skipped containers: 1 quote, 2 open, 3 close.
static SKIP_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = 1;
    t[b'{' as usize] = 2;
    t[b'[' as usize] = 2;
    t[b'}' as usize] = 3;
    t[b']' as usize] = 3;
    t
};

/// Bytes that end a number or literal (or make it malformed).
#[inline]
fn is_scalar_end(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}' | b'"' | b'{' | b'[' | b':'
    )
}

/// Position of the next `"` or `\\`. Most JSON strings are short: a plain
/// loop over the first bytes beats the SIMD search's setup cost.
#[inline]
fn find_quote_or_escape(h: &[u8]) -> Option<usize> {
    const SHORT: usize = 24;
    let head = &h[..h.len().min(SHORT)];
    if let Some(p) = head.iter().position(|&b| b == b'"' || b == b'\\') {
        return Some(p);
    }
    if h.len() <= SHORT {
        return None;
    }
    memchr2(b'"', b'\\', &h[SHORT..]).map(|p| p + SHORT)
}

impl Scanner {
    /// Forgets the current document (keeps allocations).
    pub(crate) fn reset(&mut self) {
        self.state = State::Value;
        self.stack.clear();
        self.member = false;
        self.skip_depth = 0;
        self.keys = [Key::Other; 2];
        self.key_buf.clear();
        self.cap = None;
        self.cap_buf.clear();
        self.cap_over = false;
        self.kind = None;
        self.slots = [None, None, None, None];
    }

    /// The top-level value is complete and well formed so far.
    pub(crate) fn complete(&self) -> bool {
        self.state == State::Done
    }

    /// A syntax error or bound stopped the scan.
    #[cfg(test)]
    pub(crate) fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The top-level `type`, if captured.
    pub(crate) fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// A captured value (complete values only; `null` included).
    pub(crate) fn slot(&self, s: Slot) -> Option<&Value> {
        self.slots[s as usize].as_ref()
    }

    /// Bytes retained by the scanner (for bounded-memory checks).
    pub(crate) fn retained(&self) -> usize {
        self.stack.capacity() + self.key_buf.capacity() + self.cap_buf.capacity()
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.cap = None;
        self.cap_buf.clear();
    }

    fn cap_append(&mut self, bytes: &[u8]) {
        if self.cap_over {
            return;
        }
        if self.cap_buf.len() + bytes.len() > MAX_CAPTURE {
            self.cap_over = true;
            self.overflowed = true;
            self.cap_buf.clear();
            self.cap_buf.shrink_to(MAX_CAPTURE);
        } else {
            let need = self.cap_buf.len() + bytes.len();
            if need > self.cap_buf.capacity() {
                // Amortised growth, but never past the bound.
                let target = (self.cap_buf.capacity() * 2)
                    .max(need)
                    .clamp(64, MAX_CAPTURE);
                self.cap_buf.reserve_exact(target - self.cap_buf.len());
            }
            self.cap_buf.extend_from_slice(bytes);
        }
    }

    /// A value starting at `buf[i]` is entered at the current depth.
    #[inline]
    fn begin_value(&mut self, i: usize) {
        if !self.member || self.cap.is_some() {
            return;
        }
        let d = self.stack.len();
        let target = match d {
            1 => match self.keys[0] {
                Key::Type => Some(Target::Type),
                Key::Usage => Some(Target::Slot(Slot::Usage)),
                _ => None,
            },
            2 if self.stack[0] && self.keys[1] == Key::Usage => match self.keys[0] {
                Key::Response => Some(Target::Slot(Slot::ResponseUsage)),
                Key::Message => Some(Target::Slot(Slot::MessageUsage)),
                Key::XGroq => Some(Target::Slot(Slot::GroqUsage)),
                _ => None,
            },
            _ => None,
        };
        if let Some(t) = target {
            self.cap = Some((t, d));
            self.cap_buf.clear();
            self.cap_over = false;
            self.cap_from = i;
        }
    }

    /// A value ended just before `buf[end]`, leaving the stack at its depth.
    #[inline]
    fn end_value(&mut self, buf: &[u8], end: usize) {
        match self.cap {
            Some((target, d)) if d == self.stack.len() => {
                self.cap_append(&buf[self.cap_from.min(end)..end]);
                self.cap = None;
                // An oversized capture is dropped (`overflowed` says so).
                let target = if self.cap_over { None } else { Some(target) };
                match target {
                    None => {}
                    Some(Target::Type) => {
                        let raw = &self.cap_buf;
                        let k = match raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
                            // Plain string: no allocation on the per-event path.
                            Some(inner) if !inner.contains(&b'\\') => Kind::from_name(inner),
                            _ => match serde_json::from_slice::<String>(raw) {
                                Ok(s) => Kind::from_name(s.as_bytes()),
                                Err(_) => Kind::Other,
                            },
                        };
                        self.kind = Some(k);
                    }
                    Some(Target::Slot(s)) => {
                        self.slots[s as usize] = if self.cap_buf == b"null" {
                            Some(Value::Null)
                        } else {
                            serde_json::from_slice::<Value>(&self.cap_buf).ok()
                        };
                    }
                }
            }
            _ => {}
        }
        if self.stack.is_empty() {
            self.state = State::Done;
        } else {
            self.state = State::After;
        }
    }

    /// Whether a container entered now may hold a captured path (or its
    /// keys matter): the top-level value, and the objects under `response`,
    /// `message` and `x_groq`. Everything else is skipped bracket-wise
    /// (a captured `usage` container is copied while skipped).
    #[inline]
    fn must_track(&self, obj: bool) -> bool {
        match self.stack.len() {
            0 => true,
            1 => {
                obj && self.member
                    && self.cap.is_none()
                    && matches!(self.keys[0], Key::Response | Key::Message | Key::XGroq)
            }
            _ => false,
        }
    }

    fn end_key(&mut self) {
        let d = self.stack.len();
        if d > 2 {
            return;
        }
        let key = if self.key_over {
            Key::Other
        } else if self.key_escaped {
            let mut q = Vec::with_capacity(self.key_buf.len() + 2);
            q.push(b'"');
            q.extend_from_slice(&self.key_buf);
            q.push(b'"');
            match serde_json::from_slice::<String>(&q) {
                Ok(s) => key_of(s.as_bytes()),
                Err(_) => Key::Other,
            }
        } else {
            key_of(&self.key_buf)
        };
        self.keys[d - 1] = key;
    }

    /// Consumes the next bytes of the document.
    pub(crate) fn feed(&mut self, buf: &[u8]) {
        let mut i = 0;
        if self.cap.is_some() {
            self.cap_from = 0;
        }
        while i < buf.len() {
            match self.state {
                State::Failed => return,
                State::Str => match find_quote_or_escape(&buf[i..]) {
                    None => i = buf.len(),
                    Some(off) => {
                        let j = i + off;
                        i = j + 1;
                        if buf[j] == b'\\' {
                            self.state = State::StrEsc;
                        } else {
                            self.end_value(buf, i);
                        }
                    }
                },
                State::Skip => {
                    let mut j = i;
                    let mut next = State::Skip;
                    while j < buf.len() {
                        let b = buf[j];
                        j += 1;
                        match SKIP_CLASS[usize::from(b)] {
                            0 => {}
                            1 => {
                                next = State::SkipStr;
                                break;
                            }
                            2 => self.skip_depth += 1,
                            _ => {
                                self.skip_depth -= 1;
                                if self.skip_depth == 0 {
                                    next = State::After;
                                    break;
                                }
                            }
                        }
                    }
                    i = j;
                    match next {
                        State::After => self.end_value(buf, i),
                        other => self.state = other,
                    }
                }
                State::SkipStr => match find_quote_or_escape(&buf[i..]) {
                    None => i = buf.len(),
                    Some(off) => {
                        let j = i + off;
                        i = j + 1;
                        self.state = if buf[j] == b'\\' {
                            State::SkipEsc
                        } else {
                            State::Skip
                        };
                    }
                },
                State::SkipEsc => {
                    i += 1;
                    self.state = State::SkipStr;
                }
                State::StrEsc => {
                    i += 1;
                    self.state = State::Str;
                }
                State::Key => {
                    let track = self.stack.len() <= 2;
                    let (seg_end, next) = match find_quote_or_escape(&buf[i..]) {
                        None => (buf.len(), None),
                        Some(off) => (i + off, Some(buf[i + off])),
                    };
                    if track {
                        self.key_push(&buf[i..seg_end]);
                    }
                    match next {
                        None => i = buf.len(),
                        Some(b'\\') => {
                            if track {
                                self.key_escaped = true;
                                self.key_push(b"\\");
                            }
                            self.state = State::KeyEsc;
                            i = seg_end + 1;
                        }
                        Some(_) => {
                            self.end_key();
                            self.state = State::Colon;
                            i = seg_end + 1;
                        }
                    }
                }
                State::KeyEsc => {
                    if self.stack.len() <= 2 {
                        self.key_push(&buf[i..i + 1]);
                    }
                    i += 1;
                    self.state = State::Key;
                }
                State::Scalar => {
                    // Numbers and literals: skip to the terminator in one go.
                    while i < buf.len() && !is_scalar_end(buf[i]) {
                        i += 1;
                    }
                    match buf.get(i) {
                        None => {}
                        Some(b'"' | b'{' | b'[' | b':') => self.fail(),
                        Some(_) => self.end_value(buf, i),
                    }
                }
                State::Value | State::ArrFirst => {
                    let b = buf[i];
                    if is_ws(b) {
                        i += 1;
                        continue;
                    }
                    if b == b']' && self.state == State::ArrFirst {
                        i += 1;
                        self.stack.pop();
                        self.end_value(buf, i);
                        continue;
                    }
                    self.begin_value(i);
                    match b {
                        b'{' | b'[' => {
                            let obj = b == b'{';
                            if !self.must_track(obj) {
                                self.skip_depth = 1;
                                self.state = State::Skip;
                                i += 1;
                                continue;
                            }
                            if self.stack.len() >= TRACKED_DEPTH {
                                self.fail();
                                return;
                            }
                            self.stack.push(obj);
                            self.state = if obj {
                                State::ObjFirst
                            } else {
                                State::ArrFirst
                            };
                            self.member = false;
                        }
                        b'"' => self.state = State::Str,
                        b',' | b':' | b']' | b'}' => {
                            self.fail();
                            return;
                        }
                        _ => self.state = State::Scalar,
                    }
                    i += 1;
                }
                State::ObjFirst | State::ObjKey => {
                    let b = buf[i];
                    i += 1;
                    match b {
                        b if is_ws(b) => {}
                        b'"' => {
                            self.key_buf.clear();
                            self.key_escaped = false;
                            self.key_over = false;
                            self.state = State::Key;
                        }
                        b'}' if self.state == State::ObjFirst => {
                            self.stack.pop();
                            self.end_value(buf, i);
                        }
                        _ => self.fail(),
                    }
                }
                State::Colon => {
                    let b = buf[i];
                    i += 1;
                    match b {
                        b if is_ws(b) => {}
                        b':' => {
                            self.state = State::Value;
                            self.member = true;
                        }
                        _ => self.fail(),
                    }
                }
                State::After => {
                    let b = buf[i];
                    i += 1;
                    let top = self.stack.last().copied();
                    match (b, top) {
                        (b, _) if is_ws(b) => {}
                        (b',', Some(true)) => self.state = State::ObjKey,
                        (b',', Some(false)) => {
                            self.state = State::Value;
                            self.member = false;
                        }
                        (b'}', Some(true)) | (b']', Some(false)) => {
                            self.stack.pop();
                            self.end_value(buf, i);
                        }
                        _ => self.fail(),
                    }
                }
                State::Done => {
                    if is_ws(buf[i]) {
                        i += 1;
                    } else {
                        self.fail();
                        return;
                    }
                }
            }
        }
        if self.cap.is_some() {
            let from = self.cap_from.min(buf.len());
            self.cap_append(&buf[from..]);
        }
    }

    /// Ends the document: a top-level scalar still open (e.g. `42` at EOF) is
    /// completed.
    pub(crate) fn finish(&mut self) {
        if self.state == State::Scalar && self.stack.is_empty() {
            self.end_value(&[], 0);
        }
    }

    fn key_push(&mut self, bytes: &[u8]) {
        if self.key_over {
            return;
        }
        if self.key_buf.len() + bytes.len() > MAX_KEY {
            self.key_over = true;
        } else {
            self.key_buf.extend_from_slice(bytes);
        }
    }
}

fn key_of(k: &[u8]) -> Key {
    match k {
        b"type" => Key::Type,
        b"usage" => Key::Usage,
        b"response" => Key::Response,
        b"message" => Key::Message,
        b"x_groq" => Key::XGroq,
        _ => Key::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan_split(doc: &[u8], at: usize) -> Scanner {
        let mut s = Scanner::default();
        s.feed(&doc[..at]);
        s.feed(&doc[at..]);
        s.finish();
        s
    }

    #[test]
    fn captures_at_paths_for_every_split() {
        let doc = br#" {"id":"x","type" : "message_delta","nested":{"usage":{"no":1},"type":"x"},
            "arr":[{"usage":3},"\"usage\":{\"bad\":1}",[],{}],"esc":"a\\\"b\u00e9",
            "message":{"usage":{"input_tokens":7}},"x_groq":{"usage":{"prompt_tokens":2}},
            "response":{"id":"r","usage":null},
            "usage":{"output_tokens":15,"deep":[1,{"a":[true,false,null,-1.5e3]}]}} "#;
        for at in 0..=doc.len() {
            let s = scan_split(doc, at);
            assert!(s.complete(), "split {at}");
            assert_eq!(s.kind(), Some(Kind::MessageDelta), "split {at}");
            assert_eq!(
                s.slot(Slot::Usage),
                Some(&json!({"output_tokens":15,"deep":[1,{"a":[true,false,null,-1500.0]}]})),
                "split {at}"
            );
            assert_eq!(s.slot(Slot::MessageUsage), Some(&json!({"input_tokens":7})));
            assert_eq!(s.slot(Slot::GroqUsage), Some(&json!({"prompt_tokens":2})));
            assert_eq!(s.slot(Slot::ResponseUsage), Some(&Value::Null));
        }
    }

    #[test]
    fn escaped_keys_and_scalars() {
        let doc = br#"{"us\u0061ge":{"a":1},"ty\"pe":"x","type":"response.completed"}"#;
        for at in 0..=doc.len() {
            let s = scan_split(doc, at);
            assert_eq!(s.slot(Slot::Usage), Some(&json!({"a":1})));
            assert_eq!(s.kind(), Some(Kind::ResponseCompleted));
        }
        let s = scan_split(b"{\"usage\":12}", 10);
        assert_eq!(s.slot(Slot::Usage), Some(&json!(12)));
        let s = scan_split(b"42", 1);
        assert!(s.complete());
    }

    #[test]
    fn syntax_errors_fail() {
        for doc in [
            &b"{\"a\" 1}"[..],
            b"{\"a\":1,}x",
            b"{,}",
            b"[1 2",
            b"{\"a\":1}}",
            b"{\"a\":1} {",
            b"}",
            b"{\"a\":tr\"ue}",
        ] {
            let s = scan_split(doc, doc.len() / 2);
            assert!(!s.complete(), "{}", String::from_utf8_lossy(doc));
        }
        let mut s = Scanner::default();
        s.feed(b"{\"usage\":{\"a\":1}");
        assert!(!s.complete() && !s.failed());
        assert_eq!(s.slot(Slot::Usage), Some(&json!({"a":1})));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // Nesting below the tracked levels is only counted: no memory.
        let mut s = Scanner::default();
        let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        s.feed(deep.as_bytes());
        assert!(s.complete());
        assert!(s.retained() <= 64);
        let mut s = Scanner::default();
        s.feed(format!("{{\"a\":{}", "{\"b\":".repeat(1_000_000)).as_bytes());
        assert!(!s.complete() && !s.failed());
        assert!(s.retained() <= 64);
        // A deep value inside a captured slot: capture is bounded, parse is
        // bounded by serde_json's recursion limit (no stack overflow).
        let mut s = Scanner::default();
        let doc = format!("{{\"usage\":{}{}}}", "[".repeat(400), "]".repeat(400));
        s.feed(doc.as_bytes());
        assert!(s.complete());
        assert_eq!(s.slot(Slot::Usage), None);
    }

    #[test]
    fn oversized_scalar_capture_keeps_scanning() {
        let doc = format!(
            "{{\"type\":\"{}\",\"usage\":{{\"prompt_tokens\":1}}}}",
            "t".repeat(MAX_CAPTURE + 1)
        );
        for at in [0, 10, doc.len() / 2, doc.len() - 5] {
            let s = scan_split(doc.as_bytes(), at);
            assert!(s.complete() && s.overflowed);
            assert_eq!(s.kind(), None);
            assert_eq!(s.slot(Slot::Usage), Some(&json!({"prompt_tokens":1})));
        }
    }

    #[test]
    fn oversized_capture_is_dropped() {
        let mut s = Scanner::default();
        let doc = format!(
            "{{\"usage\":{{\"pad\":\"{}\",\"input_tokens\":1}}}}",
            "x".repeat(MAX_CAPTURE)
        );
        for chunk in doc.as_bytes().chunks(7) {
            s.feed(chunk);
        }
        assert!(s.complete());
        assert!(s.overflowed);
        assert_eq!(s.slot(Slot::Usage), None);
        assert!(s.retained() <= MAX_CAPTURE + 64);
        // Growth never exceeds the bound, whatever the chunking.
        let mut s = Scanner::default();
        let doc = format!("{{\"usage\":\"{}\"}}", "x".repeat(MAX_CAPTURE - 20));
        for c in doc.as_bytes().chunks(999) {
            s.feed(c);
            assert!(s.retained() <= MAX_CAPTURE + 64);
        }
        assert!(s.complete() && !s.overflowed);
    }
}
