//! Response and request bodies: one boxed type, and a metering wrapper that counts
//! bytes and reports once when the body ends, fails or is dropped (client abort).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// Error type of every body crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the proxy serves and sends upstream.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// How a metered body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// All frames were delivered.
    Complete,
    /// The underlying stream failed.
    Error,
    /// Dropped before the end (client went away).
    Aborted,
}

/// Called exactly once with the byte count and how the body ended.
pub type OnEnd = Box<dyn FnOnce(u64, BodyEnd) + Send + Sync>;

struct Finish {
    bytes: u64,
    cb: Option<OnEnd>,
    /// The inner body reported `is_end_stream()`: a consumer (hyper) may drop it
    /// without polling for the final `None`, which is still a complete body.
    at_end: AtomicBool,
}

impl Finish {
    fn fire(&mut self, end: BodyEnd) {
        if let Some(cb) = self.cb.take() {
            cb(self.bytes, end);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let end = if *self.at_end.get_mut() {
            BodyEnd::Complete
        } else {
            BodyEnd::Aborted
        };
        self.fire(end);
    }
}

/// Sees a copy of every data frame (the LLM usage tap); it cannot alter, delay or
/// drop a frame: it gets a borrowed slice after the frame is already on its way.
pub trait FrameTap: Send + 'static {
    /// One data frame, in order.
    fn feed(&mut self, data: &[u8]);
}

pin_project! {
    /// Wraps a body, counting data bytes and calling `on_end` once.
    pub struct Metered<B> {
        #[pin]
        inner: B,
        finish: Finish,
        tap: Option<std::sync::Mutex<Box<dyn FrameTap>>>,
    }
}

impl<B> Metered<B> {
    /// Meters `inner`.
    pub fn new(inner: B, on_end: OnEnd) -> Self {
        Self {
            inner,
            finish: Finish {
                bytes: 0,
                cb: Some(on_end),
                at_end: AtomicBool::new(false),
            },
            tap: None,
        }
    }

    /// Also hands a copy of every data frame to `tap`.
    pub fn with_tap(mut self, tap: Box<dyn FrameTap>) -> Self {
        self.tap = Some(std::sync::Mutex::new(tap));
        self
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.finish.bytes += d.len() as u64;
                    if let Some(Ok(tap)) = this.tap.as_mut().map(|t| t.get_mut()) {
                        tap.feed(d);
                    }
                }
                // hyper stops polling (and drops the body) once `is_end_stream()`
                // holds after a frame, e.g. when a Content-Length is satisfied.
                if this.inner.is_end_stream() {
                    this.finish.fire(BodyEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish.fire(BodyEnd::Error);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish.fire(BodyEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.finish.at_end.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<(u64, BodyEnd)>>>;

    fn recorder() -> (Log, OnEnd) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (log, Box::new(move |n, e| l.lock().unwrap().push((n, e))))
    }

    #[tokio::test]
    async fn counts_and_reports_completion_once() {
        let (log, cb) = recorder();
        let body = Metered::new(Full::new(Bytes::from_static(b"hello world")), cb);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello world");
        assert_eq!(*log.lock().unwrap(), vec![(11, BodyEnd::Complete)]);
    }

    #[tokio::test]
    async fn dropped_after_the_last_frame_of_a_sized_body_is_complete() {
        // hyper does this with a satisfied Content-Length: one frame, then drop.
        let (log, cb) = recorder();
        let mut body = Metered::new(Full::new(Bytes::from_static(b"hello")), cb);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().len(), 5);
        drop(body);
        assert_eq!(*log.lock().unwrap(), vec![(5, BodyEnd::Complete)]);
    }

    #[tokio::test]
    async fn an_empty_body_never_polled_is_complete() {
        let (log, cb) = recorder();
        let body = Metered::new(Empty::<Bytes>::new(), cb);
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(*log.lock().unwrap(), vec![(0, BodyEnd::Complete)]);
    }

    #[tokio::test]
    async fn drop_before_end_is_an_abort() {
        let (log, cb) = recorder();
        let mut body = Metered::new(
            http_body_util::StreamBody::new(futures_util::stream::iter(vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc"))),
                Ok(Frame::data(Bytes::from_static(b"def"))),
            ])),
            cb,
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap(), &Bytes::from_static(b"abc"));
        drop(body);
        assert_eq!(*log.lock().unwrap(), vec![(3, BodyEnd::Aborted)]);
    }
}

/// The error a request body yields when the client sent nothing for the read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: nothing received for {0:?}")]
pub struct BodyReadTimeout(pub std::time::Duration);

/// Whether `e` (or its cause) is a [`BodyReadTimeout`].
pub fn is_body_read_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyReadTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pin_project! {
    /// A request body that fails with [`BodyReadTimeout`] when no frame arrives for `timeout`
    /// while it is being read. The clock starts at the first poll (not while the request waits
    /// for policy or an upstream connection) and restarts at every frame.
    pub struct ReadTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: tokio::time::Sleep,
        timeout: std::time::Duration,
        armed: bool,
        fired: std::sync::Arc<AtomicBool>,
    }
}

impl<B> ReadTimeout<B> {
    /// Wraps `inner`; `fired` turns true when the timeout cut the body.
    pub fn new(inner: B, timeout: std::time::Duration, fired: std::sync::Arc<AtomicBool>) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep(timeout),
            timeout,
            armed: false,
            fired,
        }
    }
}

impl<B> Body for ReadTimeout<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let deadline = || tokio::time::Instant::now() + *this.timeout;
        if !*this.armed {
            *this.armed = true;
            this.sleep.as_mut().reset(deadline());
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep.as_mut().reset(deadline());
                Poll::Ready(frame)
            }
            Poll::Pending => match std::future::Future::poll(this.sleep, cx) {
                Poll::Ready(()) => {
                    this.fired.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(Box::new(BodyReadTimeout(*this.timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
