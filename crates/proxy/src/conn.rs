//! One client connection: activity tracking for the header-read and idle
//! timeouts, the HTTP/1 server with upgrades, and graceful shutdown.

use pin_project_lite::pin_project;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

const NONE: u64 = u64::MAX;

/// What a connection is doing, shared by its IO, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    head_started_ms: AtomicU64,
    last_ms: AtomicU64,
    head_notify: Notify,
    started: AtomicU64,
    ambiguous: AtomicBool,
}

/// What the watchdog should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Watch {
    /// Check again at this instant.
    Until(Instant),
    /// A request head took longer than the header-read timeout.
    HeaderTimeout,
    /// No request in flight for longer than the idle timeout.
    Idle,
}

impl Activity {
    /// A fresh connection: idle since now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started_ms: AtomicU64::new(NONE),
            last_ms: AtomicU64::new(0),
            head_notify: Notify::new(),
            started: AtomicU64::new(0),
            ambiguous: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_started_ms
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // The watchdog may be sleeping towards the idle deadline: wake it
            // so the header-read deadline applies.
            self.head_notify.notify_one();
        }
    }

    /// Completes when a request head starts arriving (after the last call).
    pub fn head_started(&self) -> tokio::sync::futures::Notified<'_> {
        self.head_notify.notified()
    }

    /// A complete request head was parsed.
    pub fn request_started(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(NONE, Ordering::Release);
    }

    /// A response finished (or was abandoned).
    pub fn request_finished(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether the head of the request being started carried both
    /// `Content-Length` and `Transfer-Encoding` (hyper drops the former before
    /// the service sees the request). Clears the flag.
    pub fn take_ambiguous_framing(&self) -> bool {
        self.ambiguous.swap(false, Ordering::AcqRel)
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Decides whether a timeout has passed, or when to look again.
    pub fn check(&self, now: Instant, header_timeout: Duration, idle_timeout: Duration) -> Watch {
        let at = |ms: u64, d: Duration| self.epoch + Duration::from_millis(ms) + d;
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head != NONE {
            let deadline = at(head, header_timeout);
            return if now >= deadline {
                Watch::HeaderTimeout
            } else {
                Watch::Until(deadline)
            };
        }
        if self.in_flight() > 0 {
            return Watch::Until(now + idle_timeout);
        }
        let deadline = at(self.last_ms.load(Ordering::Relaxed), idle_timeout);
        if now >= deadline {
            Watch::Idle
        } else {
            Watch::Until(deadline)
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a request in flight until dropped.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// Starts a request on `a`.
    pub fn start(a: Arc<Activity>) -> Self {
        a.request_started();
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

pin_project! {
    /// Client IO that reports reads to [`Activity`].
    pub struct ActivityIo<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
        scan: HeadScan,
    }
}

/// Watches the raw bytes of each request head for framing headers hyper
/// normalises away: a head with both `Content-Length` and `Transfer-Encoding`
/// sets [`Activity`]'s ambiguous-framing flag. Best effort by design (a head
/// pipelined behind a body is not scanned); hyper's own handling stays the
/// safety net (Transfer-Encoding wins, the connection is closed).
const SCAN_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
struct HeadScan {
    /// The head of this request number is complete; idle until the next one.
    done_at: Option<u64>,
    lines: u32,
    scanned: usize,
    prefix: [u8; 18],
    plen: usize,
    line_empty: bool,
    saw_cl: bool,
    saw_te: bool,
}

impl HeadScan {
    fn feed(&mut self, bytes: &[u8], activity: &Activity) {
        let started = activity.started.load(Ordering::Acquire);
        match self.done_at {
            Some(n) if n == started => return,
            Some(_) => *self = HeadScan::default(),
            None => {}
        }
        // Heads are bounded (hyper refuses larger ones); past that the bytes
        // are a tunnel or an upgraded stream, not a head.
        if self.scanned > SCAN_LIMIT {
            self.done_at = Some(started);
            return;
        }
        self.scanned += bytes.len();
        for &b in bytes {
            if b == b'\n' {
                if self.line_empty {
                    if self.lines > 0 {
                        if self.saw_cl && self.saw_te {
                            activity.ambiguous.store(true, Ordering::Release);
                        }
                        self.done_at = Some(started);
                        return;
                    }
                } else {
                    let p = &self.prefix[..self.plen];
                    self.saw_cl |= p.starts_with(b"content-length:");
                    self.saw_te |= p.starts_with(b"transfer-encoding:");
                    self.lines += 1;
                }
                self.plen = 0;
                self.line_empty = true;
            } else if b != b'\r' {
                self.line_empty = false;
                if self.plen < self.prefix.len() {
                    self.prefix[self.plen] = b.to_ascii_lowercase();
                    self.plen += 1;
                }
            }
        }
    }
}

impl<T> ActivityIo<T> {
    /// Wraps `io`.
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            scan: HeadScan::default(),
        }
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
            if this.activity.in_flight() == 0 {
                this.scan.feed(&buf.filled()[before..], this.activity);
            }
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Per-connection context handed to every request on it.
pub struct ConnCtx {
    /// Peer address.
    pub client_addr: SocketAddr,
    /// Activity for timeouts.
    pub activity: Arc<Activity>,
    /// The connection-limit permit; tunnels keep a clone so shutdown waits for them.
    pub permit: Arc<OwnedSemaphorePermit>,
    /// Turns true when the gateway shuts down (intercepted tunnels drain on it).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(10);
    const I: Duration = Duration::from_secs(90);

    #[tokio::test(start_paused = true)]
    async fn idle_then_timeout() {
        let a = Activity::new();
        let t0 = Instant::now();
        assert_eq!(a.check(t0, H, I), Watch::Until(t0 + I));
        tokio::time::advance(I).await;
        assert_eq!(a.check(Instant::now(), H, I), Watch::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_hits_header_timeout() {
        let a = Arc::new(Activity::new());
        tokio::time::advance(Duration::from_secs(1)).await;
        a.on_read();
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read(); // a trickle does not reset the head timer
        match a.check(Instant::now(), H, I) {
            Watch::Until(d) => assert_eq!(d - a.epoch, Duration::from_secs(11)),
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(a.check(Instant::now(), H, I), Watch::HeaderTimeout);
    }

    #[tokio::test]
    async fn head_start_wakes_the_watchdog() {
        let a = Activity::new();
        a.on_read();
        tokio::time::timeout(Duration::from_secs(5), a.head_started())
            .await
            .expect("the start of a head is signalled");
    }

    fn scan(chunks: &[&[u8]]) -> bool {
        let a = Activity::new();
        let mut s = HeadScan::default();
        for c in chunks {
            s.feed(c, &a);
        }
        a.take_ambiguous_framing()
    }

    #[test]
    fn head_scan_flags_cl_with_te_only() {
        let both = b"POST http://x/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(scan(&[both]));
        let te_first =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n";
        assert!(scan(&[te_first]));
        // Split across reads at awkward places.
        let (a, b) = both.split_at(47);
        assert!(scan(&[a, b]));
        assert!(!scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // A body after the head is not scanned.
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // Header values mentioning the names do not count.
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nX-Note: content-length: 1\r\nX-B: transfer-encoding\r\n\r\n"
        ]));
    }

    #[test]
    fn head_scan_rearms_for_the_next_request() {
        let a = Activity::new();
        let mut s = HeadScan::default();
        s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &a);
        // Same request, more bytes (body): ignored.
        s.feed(
            b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &a,
        );
        assert!(!a.take_ambiguous_framing());
        a.request_started();
        a.request_finished();
        s.feed(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &a,
        );
        assert!(a.take_ambiguous_framing());
        assert!(!a.take_ambiguous_framing(), "the flag is taken once");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_is_never_idle() {
        let a = Arc::new(Activity::new());
        a.on_read();
        let g = InFlight::start(a.clone());
        tokio::time::advance(I * 3).await;
        assert!(matches!(a.check(Instant::now(), H, I), Watch::Until(_)));
        drop(g);
        assert_eq!(a.in_flight(), 0);
        tokio::time::advance(I).await;
        assert_eq!(a.check(Instant::now(), H, I), Watch::Idle);
    }
}
