//! Request framing as it arrived on the wire (sans-IO).
//!
//! hyper resolves `Content-Length` together with `Transfer-Encoding` (the latter wins, the
//! former is dropped) and collapses identical duplicate `Content-Length` headers before the
//! service sees the request, so the proxy cannot refuse such heads from the parsed request.
//! [`HeadScanner`] follows the raw HTTP/1 byte stream of a connection — each head, then its
//! body by its framing (`chunked` or `Content-Length`) — so every head is seen, pipelined ones
//! and those inside intercepted tunnels included, and reports the heads whose framing is
//! ambiguous. hyper stays authoritative: where the scanner cannot follow (a head hyper will
//! refuse, a malformed chunk), it stops, and hyper closes the connection anyway.
//!
//! A CONNECT or `Upgrade` head pauses the scanner: the bytes after it are either a tunnel
//! (then [`HeadScanner::resume`] with `upgraded = true` stops it) or the next request (the
//! buffered bytes are scanned on `resume(false)`).

/// Bytes buffered while paused before the scanner gives up (a tunnel's first flight).
const MAX_PAUSED: usize = 64 * 1024;

/// What was wrong with the framing of one head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFlaw {
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` header (identical values included).
    DuplicateContentLength,
}

/// Follows the heads and bodies of one HTTP/1 connection.
#[derive(Debug)]
pub struct HeadScanner {
    state: State,
    head: Vec<u8>,
    /// Where to resume looking for the end of the head in `head`.
    searched: usize,
    max_head: usize,
    max_headers: usize,
    heads: u64,
    paused: Vec<u8>,
    /// The body framing of the paused head, resumed when it was not upgraded.
    after_pause: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunk(Chunk),
    Paused,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size (`seen` digits so far).
    Size {
        size: u64,
        seen: bool,
    },
    /// After the size: whitespace or an extension until CR.
    Ext {
        size: u64,
    },
    /// CR seen after the size line; LF expected.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line, until LF.
    TrailerLine,
    /// CR of the final empty line; LF expected.
    EndLf,
}

impl HeadScanner {
    /// A scanner for heads of at most `max_head` bytes and `max_headers` headers (hyper's own
    /// limits: beyond them hyper refuses the head, so the scanner stops).
    pub fn new(max_head: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            searched: 0,
            max_head,
            max_headers,
            heads: 0,
            paused: Vec::new(),
            after_pause: State::Head,
        }
    }

    /// Whether the scanner has stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Feeds bytes read from the client; `flawed(n, flaw)` is called for head number `n`
    /// (1-based, in arrival order) when its framing is ambiguous.
    pub fn feed(&mut self, mut bytes: &[u8], flawed: &mut impl FnMut(u64, FramingFlaw)) {
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return,
                State::Paused => {
                    if self.paused.len() + bytes.len() > MAX_PAUSED {
                        self.stop();
                    } else {
                        self.paused.extend_from_slice(bytes);
                    }
                    return;
                }
                State::Head => bytes = self.feed_head(bytes, flawed),
                State::Length(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                }
                State::Chunk(c) => bytes = self.feed_chunk(c, bytes),
            }
        }
    }

    /// After a paused (CONNECT or `Upgrade`) head was answered: `upgraded` means the connection
    /// became a tunnel (stop for good); otherwise the bytes that arrived meanwhile are the next
    /// request.
    pub fn resume(&mut self, upgraded: bool, flawed: &mut impl FnMut(u64, FramingFlaw)) {
        if self.state != State::Paused {
            return;
        }
        if upgraded {
            self.stop();
            return;
        }
        self.state = self.after_pause;
        let pending = std::mem::take(&mut self.paused);
        self.feed(&pending, flawed);
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
        self.paused = Vec::new();
    }

    fn feed_head<'a>(
        &mut self,
        bytes: &'a [u8],
        flawed: &mut impl FnMut(u64, FramingFlaw),
    ) -> &'a [u8] {
        // Leading empty lines before a request line are skipped (as httparse does).
        let mut bytes = bytes;
        if self.head.is_empty() {
            let skip = bytes
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            bytes = &bytes[skip..];
            if bytes.is_empty() {
                return bytes;
            }
        }
        let room = self.max_head.saturating_sub(self.head.len());
        let take = bytes.len().min(room.max(1));
        let before = self.head.len();
        self.head.extend_from_slice(&bytes[..take]);
        let Some(end) = find_head_end(&self.head, self.searched) else {
            if self.head.len() >= self.max_head {
                self.stop();
                return &[];
            }
            self.searched = self.head.len().saturating_sub(3);
            return &bytes[take..];
        };
        // `end` is the length of the head in `self.head`; the rest belongs to the body.
        let used = end - before;
        let rest = &bytes[used..];
        let head = std::mem::take(&mut self.head);
        self.searched = 0;
        match self.parse_head(&head[..end]) {
            Some(next) => {
                self.heads += 1;
                if let Some(flaw) = next.flaw {
                    flawed(self.heads, flaw);
                }
                self.state = next.state;
                self.after_pause = next.after_pause;
                self.head = head;
                self.head.clear();
                rest
            }
            None => {
                self.stop();
                &[]
            }
        }
    }

    fn parse_head(&self, head: &[u8]) -> Option<Next> {
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        let mut content_lengths = 0usize;
        let mut length: Option<u64> = None;
        let mut te = false;
        let mut chunked = false;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let flaw = if te && content_lengths > 0 {
            Some(FramingFlaw::ContentLengthWithTransferEncoding)
        } else if content_lengths > 1 {
            Some(FramingFlaw::DuplicateContentLength)
        } else {
            None
        };
        let body = if te {
            if !chunked {
                // hyper refuses a request whose last coding is not chunked.
                return None;
            }
            State::Chunk(Chunk::Size {
                size: 0,
                seen: false,
            })
        } else {
            match (content_lengths, length) {
                (0, _) | (_, Some(0)) => State::Head,
                (_, Some(n)) => State::Length(n),
                (_, None) => return None,
            }
        };
        let (state, after_pause) = if upgrade {
            (State::Paused, body)
        } else {
            (body, State::Head)
        };
        Some(Next {
            state,
            after_pause,
            flaw,
        })
    }

    fn feed_chunk<'a>(&mut self, mut c: Chunk, bytes: &'a [u8]) -> &'a [u8] {
        let mut i = 0;
        while i < bytes.len() {
            if let Chunk::Data(n) = c {
                let take = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += take;
                let left = n - take as u64;
                c = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            c = match step(c, b) {
                Step::Next(next) => next,
                Step::Done => {
                    self.state = State::Head;
                    return &bytes[i..];
                }
                Step::Invalid => {
                    self.stop();
                    return &[];
                }
            };
        }
        self.state = State::Chunk(c);
        &[]
    }
}

enum Step {
    Next(Chunk),
    /// The final empty line: the body ended.
    Done,
    /// Not what hyper accepts: hyper will fail the body and close the connection.
    Invalid,
}

/// One byte of chunked framing outside chunk data.
fn step(c: Chunk, b: u8) -> Step {
    let next = match c {
        Chunk::Size { size, seen } => match (b as char).to_digit(16) {
            Some(d) => size.checked_mul(16).map(|s| Chunk::Size {
                size: s + u64::from(d),
                seen: true,
            }),
            None if !seen => None,
            None => match b {
                b'\r' => Some(Chunk::SizeLf { size }),
                b' ' | b'\t' | b';' => Some(Chunk::Ext { size }),
                _ => None,
            },
        },
        Chunk::Ext { size } => Some(if b == b'\r' {
            Chunk::SizeLf { size }
        } else {
            Chunk::Ext { size }
        }),
        Chunk::SizeLf { size } => (b == b'\n').then_some(if size == 0 {
            Chunk::TrailerStart
        } else {
            Chunk::Data(size)
        }),
        // Chunk data is consumed in bulk by the caller.
        Chunk::Data(_) => None,
        Chunk::DataCr => (b == b'\r').then_some(Chunk::DataLf),
        Chunk::DataLf => (b == b'\n').then_some(Chunk::Size {
            size: 0,
            seen: false,
        }),
        Chunk::TrailerStart => Some(match b {
            b'\r' => Chunk::EndLf,
            _ => Chunk::TrailerLine,
        }),
        Chunk::TrailerLine => Some(if b == b'\n' {
            Chunk::TrailerStart
        } else {
            Chunk::TrailerLine
        }),
        Chunk::EndLf => {
            return if b == b'\n' {
                Step::Done
            } else {
                Step::Invalid
            }
        }
    };
    next.map_or(Step::Invalid, Step::Next)
}

struct Next {
    state: State,
    after_pause: State,
    flaw: Option<FramingFlaw>,
}

/// The length of the head (through its empty line) when `buf` holds all of it, searching from
/// `from`. Lines end in CRLF or a bare LF, as httparse accepts.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = memchr::memchr(b'\n', &buf[i..]) {
        let lf = i + pos;
        let rest = &buf[lf + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(lf + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(lf + 3);
        }
        if rest.len() < 2 && (rest.is_empty() || rest == b"\r") {
            return None;
        }
        i = lf + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_chunks(chunks: &[&[u8]]) -> (Vec<(u64, FramingFlaw)>, HeadScanner) {
        let mut s = HeadScanner::new(64 * 1024, 100);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |n, f| out.push((n, f)));
        }
        (out, s)
    }

    fn scan(bytes: &[u8]) -> Vec<(u64, FramingFlaw)> {
        let whole = scan_chunks(&[bytes]).0;
        // Byte by byte gives the same answer.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(scan_chunks(&singles).0, whole, "byte-by-byte differs");
        whole
    }

    const CL_TE: FramingFlaw = FramingFlaw::ContentLengthWithTransferEncoding;
    const DUP: FramingFlaw = FramingFlaw::DuplicateContentLength;

    #[test]
    fn lone_heads() {
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            [(1, CL_TE)]
        );
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n0\r\n\r\n"),
            [(1, CL_TE)]
        );
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            [(1, DUP)]
        );
        assert_eq!(scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []);
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nX-Note: content-length: 1\r\nX-B: transfer-encoding\r\n\r\n"),
            []
        );
    }

    #[test]
    fn pipelined_heads_behind_bodies_are_seen() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n\
Transfer-Encoding: chunked\r\nContent-Length\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz\
GET /f HTTP/1.1\r\n\r\n";
        assert_eq!(scan(stream), [(4, CL_TE), (5, DUP)]);
    }

    #[test]
    fn leading_empty_lines_and_bare_lf() {
        assert_eq!(
            scan(b"\r\n\r\nPOST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n0\r\n\r\n"),
            [(1, CL_TE)]
        );
    }

    #[test]
    fn connect_and_upgrade_pause_until_told() {
        let mut flaws = Vec::new();
        let mut s = HeadScanner::new(65536, 100);
        let bad =
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        s.feed(
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            &mut |n, f| flaws.push((n, f)),
        );
        s.feed(bad, &mut |n, f| flaws.push((n, f)));
        assert!(flaws.is_empty(), "paused");
        s.resume(false, &mut |n, f| flaws.push((n, f)));
        assert_eq!(
            flaws,
            [(2, CL_TE)],
            "refused CONNECT: the next bytes are a request"
        );

        let mut flaws = Vec::new();
        let mut s = HeadScanner::new(65536, 100);
        s.feed(
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            &mut |n, f| flaws.push((n, f)),
        );
        s.feed(bad, &mut |n, f| flaws.push((n, f)));
        s.resume(true, &mut |n, f| flaws.push((n, f)));
        assert!(s.is_stopped());
        s.feed(bad, &mut |n, f| flaws.push((n, f)));
        assert!(flaws.is_empty(), "tunnel bytes are not heads");
    }

    #[test]
    fn what_hyper_refuses_stops_the_scanner() {
        for bad in [
            &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab",
        ] {
            let (_, s) = scan_chunks(&[bad, b"more bytes"]);
            assert!(s.is_stopped(), "{}", String::from_utf8_lossy(bad));
        }
        let mut s = HeadScanner::new(64, 100);
        s.feed(&[b'a'; 100], &mut |_, _| {});
        assert!(s.is_stopped(), "oversized head");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 42;
        for _ in 0..2000 {
            let mut s = HeadScanner::new(4096, 32);
            for _ in 0..20 {
                let mut chunk = Vec::new();
                for _ in 0..(x % 64) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let pool = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n0;\t\r\nffffffffffffffffff";
                    chunk.push(pool[(x % pool.len() as u64) as usize]);
                }
                s.feed(&chunk, &mut |_, _| {});
            }
        }
    }
}
