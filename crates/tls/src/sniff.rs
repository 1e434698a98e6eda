//! Sans-IO classification of the first bytes a client sends inside a CONNECT tunnel.
//!
//! The proxy reads into a buffer and calls [`sniff`] until the answer is not
//! [`Sniff::NeedMore`], then replays the buffered bytes to whatever handles the tunnel.
//! The proxy bounds its buffer; [`MAX_SNIFF_BYTES`] is enough for any well-formed answer.

/// Longest buffer the sniffer can ask for: a ClientHello split over records up to this size
/// is reassembled; a larger declared ClientHello is reported with what is known so far.
pub const MAX_SNIFF_BYTES: usize = 64 * 1024;
/// Longest plaintext request line recognised.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const MAX_RECORD_LEN: usize = 16384 + 2048;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const MAX_METHOD_LEN: usize = 32;

/// What the first bytes of a tunnel are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// A TLS handshake starting with a ClientHello.
    ///
    /// Fields are best effort: a ClientHello whose body is malformed, or too large to
    /// buffer, is still reported here (with `sni: None`) so that a tunnel that must be
    /// intercepted goes to the TLS acceptor, which rejects it, rather than being spliced.
    TlsClientHello {
        /// The `host_name` of the server_name extension, lower-cased without trailing dot;
        /// `None` when absent or not a valid host name.
        sni: Option<String>,
        /// The ALPN protocols offered, in the client's order (empty when absent).
        alpn: Vec<Vec<u8>>,
    },
    /// A plaintext HTTP/1.x request line (`METHOD target HTTP/d.d`).
    Http,
    /// Not enough bytes yet to decide.
    NeedMore,
    /// Anything else: not TLS, not HTTP, or a TLS record that is not a ClientHello.
    Other,
}

/// Classifies the first bytes of a tunnel. Never panics, whatever the input.
pub fn sniff(first_bytes: &[u8]) -> Sniff {
    match first_bytes.first() {
        None => Sniff::NeedMore,
        Some(&CONTENT_HANDSHAKE) => sniff_tls(first_bytes),
        Some(b) if is_tchar(*b) => sniff_http(first_bytes),
        Some(_) => Sniff::Other,
    }
}

fn sniff_tls(input: &[u8]) -> Sniff {
    // Fast path: the whole ClientHello in the first record (the usual case), no copy.
    if let Some(result) = single_record_hello(input) {
        return result;
    }
    // Reassemble the handshake message across records.
    let mut handshake: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    loop {
        let header = &input[pos.min(input.len())..];
        // Validate whatever part of the record header we have.
        if let Some(&t) = header.first() {
            if t != CONTENT_HANDSHAKE {
                return if handshake.is_empty() {
                    Sniff::Other
                } else {
                    // A record of another type in the middle of the ClientHello.
                    hello_unparsed()
                };
            }
        }
        if let Some(&major) = header.get(1) {
            if major != 3 {
                return Sniff::Other;
            }
        }
        if let Some(&minor) = header.get(2) {
            if minor > 4 {
                return Sniff::Other;
            }
        }
        let (Some(&hi), Some(&lo)) = (header.get(3), header.get(4)) else {
            return Sniff::NeedMore;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > MAX_RECORD_LEN {
            return Sniff::Other;
        }
        let body_start = pos + 5;
        let available = input.get(body_start..).unwrap_or_default();
        let fragment = &available[..available.len().min(len)];
        // Decide early on the handshake header if possible.
        let peek_len = handshake.len() + fragment.len();
        if peek_len >= 1 {
            let first = handshake.first().or(fragment.first()).copied();
            if first != Some(HANDSHAKE_CLIENT_HELLO) {
                return Sniff::Other;
            }
        }
        if fragment.len() < len {
            return if handshake.len() + available.len() > MAX_SNIFF_BYTES {
                hello_unparsed()
            } else {
                Sniff::NeedMore
            };
        }
        handshake.extend_from_slice(fragment);
        pos = body_start + len;
        if handshake.len() >= 4 {
            let declared = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if declared > MAX_SNIFF_BYTES {
                return hello_unparsed();
            }
            if let Some(body) = handshake.get(4..4 + declared) {
                return parse_client_hello(body).unwrap_or_else(hello_unparsed);
            }
        }
        if pos >= input.len() {
            return Sniff::NeedMore;
        }
    }
}

/// `Some` when the first record is complete, valid and holds the complete ClientHello.
fn single_record_hello(input: &[u8]) -> Option<Sniff> {
    let header = input.get(..5)?;
    if header[1] != 3 || header[2] > 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len == 0 || len > MAX_RECORD_LEN {
        return None;
    }
    let record = input.get(5..5 + len)?;
    let (&kind, rest) = record.split_first()?;
    if kind != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let declared = rest
        .get(..3)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    let body = rest.get(3..3 + declared)?;
    Some(parse_client_hello(body).unwrap_or_else(hello_unparsed))
}

fn hello_unparsed() -> Sniff {
    Sniff::TlsClientHello {
        sni: None,
        alpn: Vec::new(),
    }
}

/// A bounds-checked big-endian cursor.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a ClientHello body; `None` when malformed.
fn parse_client_hello(body: &[u8]) -> Option<Sniff> {
    let mut c = Cursor(body);
    let version = c.take(2)?;
    if version.first() != Some(&3) {
        return None;
    }
    c.take(32)?; // random
    let session_id = c.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let suites = c.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if c.vec8()?.is_empty() {
        return None; // compression methods
    }
    let mut sni = None;
    let mut alpn = Vec::new();
    if !c.is_empty() {
        let mut exts = Cursor(c.vec16()?);
        if !c.is_empty() {
            return None;
        }
        let mut seen: Vec<u16> = Vec::new();
        while !exts.is_empty() {
            let ty = exts.u16()?;
            let data = exts.vec16()?;
            if seen.contains(&ty) {
                return None; // duplicate extensions are forbidden (RFC 8446 §4.2)
            }
            seen.push(ty);
            match ty {
                EXT_SERVER_NAME => sni = parse_sni(data)?,
                EXT_ALPN => alpn = parse_alpn(data)?,
                _ => {}
            }
        }
    }
    Some(Sniff::TlsClientHello { sni, alpn })
}

/// `Some(None)`: well formed but no usable host name. `None`: malformed.
fn parse_sni(data: &[u8]) -> Option<Option<String>> {
    let mut c = Cursor(data);
    let mut list = Cursor(c.vec16()?);
    if !c.is_empty() || list.is_empty() {
        return None;
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == 0 {
            if host.is_some() {
                return None; // two host names
            }
            host = Some(name);
        }
    }
    let Some(name) = host else {
        return Some(None);
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return Some(None);
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    Some(
        crate::host::validate_dns_name(name)
            .ok()
            .map(|()| name.to_ascii_lowercase()),
    )
}

fn parse_alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut c = Cursor(data);
    let mut list = Cursor(c.vec16()?);
    if !c.is_empty() || list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let proto = list.vec8()?;
        if proto.is_empty() {
            return None;
        }
        out.push(proto.to_vec());
    }
    Some(out)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `METHOD SP target SP HTTP/d.d CRLF` incrementally.
fn sniff_http(input: &[u8]) -> Sniff {
    #[derive(Clone, Copy)]
    enum State {
        Method(usize),
        Target(usize),
        Version(usize),
        Cr,
    }
    const VERSION: &[u8] = b"HTTP/d.d";
    let mut state = State::Method(0);
    for (i, &b) in input.iter().enumerate() {
        if i >= MAX_REQUEST_LINE {
            return Sniff::Other;
        }
        state = match state {
            State::Method(n) if is_tchar(b) && n < MAX_METHOD_LEN => State::Method(n + 1),
            State::Method(n) if b == b' ' && n > 0 => State::Target(0),
            State::Target(n) if (0x21..=0x7e).contains(&b) => State::Target(n + 1),
            State::Target(n) if b == b' ' && n > 0 => State::Version(0),
            State::Version(n) if n < VERSION.len() => {
                let ok = match VERSION.get(n) {
                    Some(b'd') => b.is_ascii_digit(),
                    Some(want) => *want == b,
                    None => false,
                };
                if !ok {
                    return Sniff::Other;
                }
                State::Version(n + 1)
            }
            State::Version(_) if b == b'\r' => State::Cr,
            State::Version(_) | State::Cr if b == b'\n' => return Sniff::Http,
            _ => return Sniff::Other,
        };
    }
    Sniff::NeedMore
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::client_hello;

    #[test]
    fn rustls_client_hello_with_sni_and_alpn() {
        let hello = client_hello("API.OpenAI.com", &[b"h2", b"http/1.1"]);
        assert_eq!(
            sniff(&hello),
            Sniff::TlsClientHello {
                sni: Some("api.openai.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            }
        );
        // Trailing application bytes after the hello do not matter.
        let mut more = hello.clone();
        more.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert!(matches!(sniff(&more), Sniff::TlsClientHello { .. }));
    }

    #[test]
    fn client_hello_for_an_ip_has_no_sni() {
        let hello = client_hello("127.0.0.1", &[]);
        assert_eq!(
            sniff(&hello),
            Sniff::TlsClientHello {
                sni: None,
                alpn: vec![],
            }
        );
    }

    #[test]
    fn every_truncation_needs_more() {
        let hello = client_hello("example.com", &[b"http/1.1"]);
        for cut in 0..hello.len() {
            assert_eq!(sniff(&hello[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
    }

    /// Splits one handshake record into records of at most `size` bytes.
    fn fragment(hello: &[u8], size: usize) -> Vec<u8> {
        let body = &hello[5..];
        let mut out = Vec::new();
        for chunk in body.chunks(size) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn fragmented_client_hello_is_reassembled() {
        let hello = client_hello("frag.example.com", &[b"h2"]);
        for size in [1, 2, 3, 7, 100] {
            let split = fragment(&hello, size);
            assert_eq!(
                sniff(&split),
                Sniff::TlsClientHello {
                    sni: Some("frag.example.com".into()),
                    alpn: vec![b"h2".to_vec()],
                },
                "size {size}"
            );
            for cut in 0..split.len() {
                assert_eq!(
                    sniff(&split[..cut]),
                    Sniff::NeedMore,
                    "size {size} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn http_request_lines() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://example.com/ HTTP/1.0\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(
                sniff(line),
                Sniff::Http,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            let end = line.iter().position(|b| *b == b'\n').expect("newline");
            for cut in 1..end {
                assert_eq!(sniff(&line[..cut]), Sniff::NeedMore, "cut {cut}");
            }
        }
    }

    #[test]
    fn not_http() {
        for input in [
            &b"GET  / HTTP/1.1\r\n"[..],
            b" GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTPS/1.1\r\n",
            b"GET / HTTP/x.1\r\n",
            b"GET /\r\n",
            b"GET / HTTP/1.1\r\r",
            b"GE\x00T / HTTP/1.1\r\n",
            b"GET /\xff HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x00\x00\x00\x00",
            b"\x80\x2e\x01\x03\x01",
        ] {
            assert_eq!(
                sniff(input),
                Sniff::Other,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_method = vec![b'A'; MAX_METHOD_LEN + 1];
        assert_eq!(sniff(&long_method), Sniff::Other);
        let mut long_target = b"GET /".to_vec();
        long_target.resize(MAX_REQUEST_LINE + 1, b'a');
        assert_eq!(sniff(&long_target), Sniff::Other);
    }

    #[test]
    fn tls_that_is_not_a_client_hello() {
        // Bad record versions, zero / oversized record lengths, other handshake types.
        assert_eq!(sniff(b"\x16\x02"), Sniff::Other);
        assert_eq!(sniff(b"\x16\x03\x05"), Sniff::Other);
        assert_eq!(sniff(b"\x16\x03\x01\x00\x00"), Sniff::Other);
        assert_eq!(sniff(b"\x16\x03\x01\xff\xff"), Sniff::Other);
        assert_eq!(sniff(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"), Sniff::Other);
        assert_eq!(sniff(b"\x16\x03\x03\x00\x10\x02"), Sniff::Other);
        assert_eq!(sniff(b"\x17\x03\x03\x00\x10"), Sniff::Other);
        assert_eq!(sniff(b"\x16"), Sniff::NeedMore);
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), Sniff::NeedMore);
    }

    #[test]
    fn malformed_client_hello_is_still_tls() {
        let hello = client_hello("example.com", &[b"h2"]);
        // Corrupt the body: claim a 33-byte session id.
        let mut bad = hello.clone();
        bad[5 + 4 + 2 + 32] = 33;
        assert_eq!(sniff(&bad), hello_unparsed());
        // A handshake declaring more than we buffer is reported at once.
        let huge = b"\x16\x03\x01\x00\x04\x01\x7f\xff\xff";
        assert_eq!(sniff(huge), hello_unparsed());
        // A non-handshake record in the middle of a fragmented hello.
        let mut split = fragment(&hello, 10);
        split[15] = 0x17;
        assert_eq!(sniff(&split), hello_unparsed());
    }

    #[test]
    fn duplicate_or_bad_extensions() {
        // Build a minimal ClientHello by hand with the given extensions block.
        fn hello_with(ext: &[u8]) -> Vec<u8> {
            let mut body = vec![0x03, 0x03];
            body.extend_from_slice(&[0u8; 32]);
            body.push(0); // session id
            body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
            body.extend_from_slice(&[0x01, 0x00]);
            body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            body.extend_from_slice(ext);
            let mut hs = vec![0x01, 0x00];
            hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
            hs.extend_from_slice(&body);
            let mut rec = vec![0x16, 0x03, 0x01];
            rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
            rec.extend_from_slice(&hs);
            rec
        }
        fn sni_ext(name: &[u8]) -> Vec<u8> {
            let mut entry = vec![0x00];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name);
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&entry);
            let mut ext = vec![0x00, 0x00];
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend_from_slice(&list);
            ext
        }
        let good = sni_ext(b"Good.Example.");
        assert_eq!(
            sniff(&hello_with(&good)),
            Sniff::TlsClientHello {
                sni: Some("good.example".into()),
                alpn: vec![],
            }
        );
        let mut twice = good.clone();
        twice.extend_from_slice(&good);
        assert_eq!(sniff(&hello_with(&twice)), hello_unparsed());
        for bad_name in [&b"bad/name"[..], b"", b"\xff\xfe", b"a..b", b"10.0.0.1"] {
            assert_eq!(
                sniff(&hello_with(&sni_ext(bad_name))),
                hello_unparsed(),
                "{bad_name:?}"
            );
        }
        // An empty extensions block.
        assert_eq!(sniff(&hello_with(&[])[..]), hello_unparsed());
        // Empty ALPN protocol name.
        let alpn = [0x00, 0x10, 0x00, 0x03, 0x00, 0x01, 0x00];
        assert_eq!(sniff(&hello_with(&alpn)), hello_unparsed());
    }

    /// xorshift64*: deterministic pseudo-random bytes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            client_hello("api.openai.com", &[b"h2", b"http/1.1"]),
            client_hello("10.1.2.3", &[]),
            b"POST /v1/messages HTTP/1.1\r\n".to_vec(),
        ];
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 3 == 0 {
                let len = rng.below(600);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut v = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(8) {
                    if v.is_empty() {
                        break;
                    }
                    let i = rng.below(v.len());
                    match rng.below(3) {
                        0 => v[i] = rng.next() as u8,
                        1 => v.truncate(i),
                        _ => v.insert(i, rng.next() as u8),
                    }
                }
                v
            };
            let _ = sniff(&input);
        }
    }
}
