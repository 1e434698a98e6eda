//! IO wrappers of the data plane: byte counting, replaying bytes read while sniffing, and
//! spotting the h2 preface of a plaintext tunnel.

use crate::conn::Activity;
use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// IO counting bytes read from and written to it into shared counters, so the counts
/// survive the IO being moved into a connection (and are there when a copy fails midway).
pub(crate) struct Tally<T> {
    inner: T,
    counts: Arc<(AtomicU64, AtomicU64)>,
}

/// Bytes read from and written to a [`Tally`].
pub(crate) type Counts = Arc<(AtomicU64, AtomicU64)>;

impl<T> Tally<T> {
    pub(crate) fn new(inner: T) -> (Self, Counts) {
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        (
            Self {
                inner,
                counts: counts.clone(),
            },
            counts,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tally<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.counts.0.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tally<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.counts.1.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `(read, written)` so far.
pub(crate) fn totals(counts: &Counts) -> (u64, u64) {
    (
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed),
    )
}

/// IO that yields `prefix` (bytes already read while sniffing) before the rest.
pub(crate) struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

pin_project! {
    /// Marks the connection's [`Activity`] multiplexed when the client opens with the h2
    /// preface (h2 with prior knowledge inside a plaintext tunnel), before hyper reads it.
    pub(crate) struct MultiplexDetect<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
        checked: bool,
    }
}

impl<T> MultiplexDetect<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            checked: false,
        }
    }
}

impl<T: AsyncRead> AsyncRead for MultiplexDetect<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if !*this.checked && buf.filled().len() > before {
            *this.checked = true;
            if buf.filled()[before..].starts_with(b"PRI * HTTP/2.0") {
                this.activity.set_multiplexed();
            }
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for MultiplexDetect<T> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefixed_replays_the_sniffed_bytes_then_the_rest() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello".to_vec(), b);
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello world");
    }
}
