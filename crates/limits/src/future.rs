//! The answer of a limiter call: ready at once (the in-memory backend) or later (a shared
//! backend that asks a server).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed future, for backends that wait on I/O.
pub type BoxLimitFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a [`Limiter`](crate::Limiter) call returns: a value that is already there, or a future
/// of a backend that waits on a server.
///
/// The in-memory limiter always answers [`LimitFuture::ready`]: awaiting it costs a branch, no
/// allocation and no task switch. Only a backend that does I/O boxes a future.
#[must_use = "a limiter answer does nothing unless awaited"]
pub struct LimitFuture<'a, T>(Inner<'a, T>);

enum Inner<'a, T> {
    Ready(Option<T>),
    Pending(BoxLimitFuture<'a, T>),
}

impl<'a, T> LimitFuture<'a, T> {
    /// An answer that is already known.
    pub fn ready(value: T) -> Self {
        Self(Inner::Ready(Some(value)))
    }

    /// An answer that needs I/O.
    pub fn boxed(future: impl Future<Output = T> + Send + 'a) -> Self {
        Self(Inner::Pending(Box::pin(future)))
    }

    /// The value if it is already known (always for the in-memory limiter), else the future.
    pub fn into_ready(self) -> Result<T, Self> {
        match self.0 {
            Inner::Ready(Some(v)) => Ok(v),
            other => Err(Self(other)),
        }
    }
}

// The value is moved out by `Option::take`, never pinned in place: moving the wrapper is
// always sound, whatever `T` is.
impl<T> Unpin for LimitFuture<'_, T> {}

impl<T> Future for LimitFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            Inner::Ready(value) => match value.take() {
                Some(v) => Poll::Ready(v),
                // Polled again after completion: a caller bug, but never a panic here.
                None => Poll::Pending,
            },
            Inner::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for LimitFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Ready(_) => f.write_str("LimitFuture::Ready"),
            Inner::Pending(_) => f.write_str("LimitFuture::Pending"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_values_need_no_executor() {
        assert_eq!(LimitFuture::ready(7).into_ready().ok(), Some(7));
        let pending = LimitFuture::boxed(async { 7 });
        assert!(pending.into_ready().is_err());
    }
}
