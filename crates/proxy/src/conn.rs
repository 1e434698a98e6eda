//! One client connection: activity tracking for the header-read and idle
//! timeouts, the HTTP/1 server with upgrades, and graceful shutdown.

use crate::framing::{FramingFlaw, HeadScanner};
use pin_project_lite::pin_project;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// Multiplexed (h2): reads between requests are frames, not the start of a head.
    multiplexed: AtomicBool,
    framing: Mutex<Framing>,
    /// Bytes read from and written to the client.
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// The raw-head scanner of an HTTP/1 connection and the heads it found flawed.
#[derive(Debug)]
struct Framing {
    scanner: Option<HeadScanner>,
    flawed: VecDeque<(u64, FramingFlaw)>,
}

/// Most flawed heads remembered before their requests are served (each closes the connection).
const MAX_FLAWED: usize = 16;

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
    /// A fresh HTTP/1 connection whose heads are scanned for ambiguous framing (heads of at
    /// most `max_head` bytes and `max_headers` headers, hyper's limits): idle since now.
    pub fn new(max_head: usize, max_headers: usize) -> Self {
        Self::with_scanner(Some(HeadScanner::new(max_head, max_headers)))
    }

    /// A connection whose bytes are not HTTP/1 heads (h2, tests): no framing scan.
    pub fn unscanned() -> Self {
        Self::with_scanner(None)
    }

    fn with_scanner(scanner: Option<HeadScanner>) -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started_ms: AtomicU64::new(NONE),
            last_ms: AtomicU64::new(0),
            head_notify: Notify::new(),
            started: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            framing: Mutex::new(Framing {
                scanner,
                flawed: VecDeque::new(),
            }),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    /// The connection turned out to be h2: no head timer between requests (frames such as
    /// PING arrive while idle) and no HTTP/1 framing scan.
    pub fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Release);
        self.head_started_ms.store(NONE, Ordering::Release);
        self.lock_framing().scanner = None;
    }

    fn lock_framing(&self) -> std::sync::MutexGuard<'_, Framing> {
        self.framing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Raw bytes read from the client, in order.
    fn scan(&self, bytes: &[u8]) {
        let mut f = self.lock_framing();
        let Framing { scanner, flawed } = &mut *f;
        if let Some(s) = scanner.as_mut() {
            s.feed(bytes, &mut |n, flaw| {
                if flawed.len() < MAX_FLAWED {
                    flawed.push_back((n, flaw));
                }
            });
            if s.is_stopped() {
                *scanner = None;
            }
        }
    }

    /// The framing flaw of request number `n` on this connection (see [`InFlight::number`]),
    /// if its head had one.
    pub fn take_framing_flaw(&self, n: u64) -> Option<FramingFlaw> {
        let mut f = self.lock_framing();
        while f.flawed.front().is_some_and(|(m, _)| *m < n) {
            f.flawed.pop_front();
        }
        match f.flawed.front() {
            Some((m, flaw)) if *m == n => {
                let flaw = *flaw;
                f.flawed.pop_front();
                Some(flaw)
            }
            _ => None,
        }
    }

    /// A CONNECT or `Upgrade` request was answered: `upgraded` when the connection became a
    /// tunnel (its bytes are no longer heads), else the scan goes on with the next request.
    pub fn upgrade_answered(&self, upgraded: bool) {
        let mut f = self.lock_framing();
        let Framing { scanner, flawed } = &mut *f;
        if let Some(s) = scanner.as_mut() {
            s.resume(upgraded, &mut |n, flaw| {
                if flawed.len() < MAX_FLAWED {
                    flawed.push_back((n, flaw));
                }
            });
            if s.is_stopped() {
                *scanner = None;
            }
        }
    }

    /// Bytes read from the client so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes written to the client so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.multiplexed.load(Ordering::Acquire)
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

    /// A complete request head was parsed; returns its number on the connection (1-based).
    pub fn request_started(&self) -> u64 {
        let n = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(NONE, Ordering::Release);
        n
    }

    /// A response finished (or was abandoned).
    pub fn request_finished(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn on_write(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
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

/// Marks a request in flight until dropped.
pub struct InFlight(Arc<Activity>, u64);

impl InFlight {
    /// Starts a request on `a`.
    pub fn start(a: Arc<Activity>) -> Self {
        let n = a.request_started();
        Self(a, n)
    }

    /// The request's number on its connection (1-based).
    pub fn number(&self) -> u64 {
        self.1
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

pin_project! {
    /// Client IO that reports reads and writes to [`Activity`], which scans HTTP/1 heads.
    pub struct ActivityIo<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
    }
}

impl<T> ActivityIo<T> {
    /// Wraps `io`.
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
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
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.activity.on_read();
            this.activity
                .bytes_read
                .fetch_add(read.len() as u64, Ordering::Relaxed);
            this.activity.scan(read);
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
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.activity.on_write(n);
        }
        r
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
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.activity.on_write(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// hyper's head buffer: twice our limits, so heads slightly over them get our JSON 431.
pub fn max_head(cfg: &portcullis_config::ProxyConfig) -> usize {
    (cfg.max_header_bytes * 2).max(8192)
}

/// Why [`drive`] stopped serving a connection.
#[derive(Debug)]
pub enum Ended<E> {
    /// The connection future finished (the client closed, or an error).
    Closed(Result<(), E>),
    /// A request head took longer than the header-read timeout.
    HeaderTimeout,
    /// No request in flight for longer than the idle timeout.
    Idle,
}

/// Drives an HTTP connection future `conn` under `activity`'s header-read and idle timeouts,
/// shutting it down gracefully (`graceful`) when `shutdown` turns true. On a timeout the
/// connection is simply dropped: nothing is in flight (idle) or no request has started
/// (a slow head).
pub async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    header_timeout: Duration,
    idle_timeout: Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Ended<E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut draining = *shutdown.borrow();
    if draining {
        graceful(conn.as_mut());
    }
    loop {
        let next = match activity.check(Instant::now(), header_timeout, idle_timeout) {
            Watch::Until(t) => t,
            Watch::HeaderTimeout => return Ended::HeaderTimeout,
            Watch::Idle => return Ended::Idle,
        };
        tokio::select! {
            r = conn.as_mut() => return Ended::Closed(r),
            _ = tokio::time::sleep_until(next) => {}
            _ = activity.head_started() => {}
            _ = shutdown.changed(), if !draining => {
                draining = true;
                graceful(conn.as_mut());
            }
        }
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
        let a = activity();
        let t0 = Instant::now();
        assert_eq!(a.check(t0, H, I), Watch::Until(t0 + I));
        tokio::time::advance(I).await;
        assert_eq!(a.check(Instant::now(), H, I), Watch::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_head_hits_header_timeout() {
        let a = Arc::new(activity());
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
        let a = activity();
        a.on_read();
        tokio::time::timeout(Duration::from_secs(5), a.head_started())
            .await
            .expect("the start of a head is signalled");
    }

    fn activity() -> Activity {
        Activity::new(65536, 100)
    }

    #[test]
    fn flawed_heads_are_matched_to_their_request_numbers() {
        let a = activity();
        let pipelined: &[u8] = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
POST /2 HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
GET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
        // Split across reads at awkward places.
        for c in pipelined.chunks(7) {
            a.scan(c);
        }
        let mut seen = Vec::new();
        for n in 1..=3 {
            seen.push(a.take_framing_flaw(n));
        }
        assert_eq!(
            seen,
            [
                None,
                Some(FramingFlaw::ContentLengthWithTransferEncoding),
                None
            ]
        );
        assert_eq!(a.take_framing_flaw(2), None, "taken once");
        assert_eq!(a.bytes_read(), 0, "scan alone counts nothing");
    }

    #[test]
    fn a_refused_connect_keeps_scanning_a_tunnel_stops() {
        let a = activity();
        a.scan(b"CONNECT h:443 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(
            a.take_framing_flaw(2),
            None,
            "undecided while the CONNECT is answered"
        );
        a.upgrade_answered(false);
        assert_eq!(
            a.take_framing_flaw(2),
            Some(FramingFlaw::DuplicateContentLength)
        );

        let a = activity();
        a.scan(b"CONNECT h:443 HTTP/1.1\r\n\r\n");
        a.upgrade_answered(true);
        a.scan(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(a.take_framing_flaw(2), None, "tunnel bytes are not heads");
    }

    #[tokio::test(start_paused = true)]
    async fn multiplexed_connections_have_no_head_timer() {
        let a = activity();
        a.set_multiplexed();
        a.on_read();
        let t0 = Instant::now();
        assert_eq!(a.check(t0, H, I), Watch::Until(t0 + I));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_is_never_idle() {
        let a = Arc::new(activity());
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
