//! Bounded request-body buffering for classification and policy: read up to
//! `max_inspect_body`; a larger body is forwarded as the bytes already read
//! followed by the rest of the stream, never buffered whole.

use crate::body::{BoxError, ProxyBody};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What [`read_prefix`] got.
pub enum Prefix<B> {
    /// The whole body, at most `max` bytes.
    Complete(Bytes),
    /// More than `max` bytes: what was read, and the unread rest.
    Partial(Bytes, B),
}

/// Reads `body` until it ends or exceeds `max` bytes.
pub async fn read_prefix<B>(mut body: B, max: usize) -> Result<Prefix<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Ok(Prefix::Partial(buf.freeze(), body));
            }
        }
    }
    Ok(Prefix::Complete(buf.freeze()))
}

pin_project! {
    /// A body that yields `prefix` first, then `inner`.
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        inner: B,
    }
}

impl<B> Prefixed<B> {
    /// `prefix` then `inner`.
    pub fn new(prefix: Bytes, inner: B) -> Self {
        Self {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            inner,
        }
    }
}

impl<B> Body for Prefixed<B>
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
        let this = self.project();
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        this.inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut h = self.inner.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        h.set_lower(h.lower() + extra);
        if let Some(u) = h.upper() {
            h.set_upper(u + extra);
        }
        h
    }
}

/// Boxes a prefix and its rest as one body.
pub fn rejoin<B>(prefix: Bytes, rest: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    Prefixed::new(prefix, rest).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunks(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        StreamBody::new(futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p))))
                .collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn small_body_is_complete() {
        match read_prefix(Full::new(Bytes::from_static(b"{\"a\":1}")), 100)
            .await
            .unwrap()
        {
            Prefix::Complete(b) => assert_eq!(&b[..], b"{\"a\":1}"),
            Prefix::Partial(..) => panic!("expected complete"),
        }
    }

    #[tokio::test]
    async fn large_body_is_rejoined_byte_exact() {
        let parts: &[&'static [u8]] = &[b"aaaa", b"bbbb", b"cccc", b"dddd"];
        match read_prefix(chunks(parts), 5).await.unwrap() {
            Prefix::Complete(_) => panic!("expected partial"),
            Prefix::Partial(prefix, rest) => {
                assert_eq!(&prefix[..], b"aaaabbbb");
                let all = rejoin(prefix, rest).collect().await.unwrap().to_bytes();
                assert_eq!(&all[..], b"aaaabbbbccccdddd");
            }
        }
    }
}
