//! A raw HTTP/1.1 client: requests written byte for byte (so malformed ones can be sent
//! too), responses read off the wire, and proxy-form requests with `Proxy-Authorization`.

use super::util::TIMEOUT;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {} {} {:?}",
                self.status,
                self.reason,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a gateway error: status, JSON `code`, a `detail` string and the
    /// `x-portcullis-error` header; returns the JSON.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            (self.status, self.header("x-portcullis-error")),
            (status, Some(code)),
            "unexpected response: {self:?} body={:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "detail missing: {v}"
        );
        v
    }
}

/// Connects to `addr` with read/write timeouts of [`TIMEOUT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    s
}

/// Sends `req` on a fresh connection and reads one response.
pub fn send_raw(addr: SocketAddr, req: &[u8]) -> RawResponse {
    let mut s = connect(addr);
    s.write_all(req).expect("write request");
    let mut r = BufReader::new(s);
    read_response(&mut r, false).expect("read response")
}

/// Reads one response. `no_body` for responses to HEAD/CONNECT-2xx.
pub fn read_response<R: BufRead>(r: &mut R, no_body: bool) -> std::io::Result<RawResponse> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let line = line.trim_end();
    let mut it = line.splitn(3, ' ');
    let _version = it.next();
    let status: u16 = it
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let reason = it.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for _ in 0..1000 {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in headers",
            ));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut resp = RawResponse {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    if no_body || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(resp);
    }
    if let Some(cl) = resp.header("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        let mut b = vec![0u8; n];
        r.read_exact(&mut b)?;
        resp.body = b;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
            if n == 0 {
                // trailers until the empty line
                for _ in 0..100 {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + n, 0);
            r.read_exact(&mut resp.body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Reads until the peer closes (or errors); returns what arrived and whether
/// the connection ended with EOF/reset (as opposed to the read timeout).
pub fn read_until_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            Err(_) => return (out, true),
        }
    }
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// An absolute-form request for `url` as sent to a proxy, with an optional
/// `Proxy-Authorization` value and extra header lines (`"Name: value"`).
pub fn proxy_request(method: &str, url: &str, auth: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let mut req = format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Proxy-Authorization: {a}\r\n"));
    }
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends one proxied request on a fresh connection (`Connection: close`).
pub fn proxy_send(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    auth: Option<&str>,
    extra: &[&str],
) -> RawResponse {
    let mut all: Vec<&str> = extra.to_vec();
    all.push("Connection: close");
    send_raw(proxy, &proxy_request(method, url, auth, &all))
}
