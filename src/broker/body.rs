//! Bodies the broker streams through, frame by frame, never buffered whole.
//!
//! [`Guarded`] wraps a body with two bounds: a byte limit (request bodies: `max_body_bytes`)
//! and an idle timeout between frames (response bodies: `upstream_timeout`, so an upstream that
//! stops mid-stream does not hold a task's connection forever). When a bound trips, the body
//! ends with an error and records which bound it was, so the proxy can answer 413 instead of a
//! generic failure.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Errors of bodies the broker passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type of the broker's requests and responses.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body that ended because a bound tripped.
#[derive(Debug, thiserror::Error)]
pub enum BodyBound {
    #[error("the body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// A body with an optional byte limit and an optional idle timeout.
pub struct Guarded<B> {
    inner: B,
    limit: Option<u64>,
    seen: u64,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Set when the byte limit tripped.
    exceeded: Arc<AtomicBool>,
}

impl<B> Guarded<B> {
    /// At most `limit` bytes; `exceeded` is set if the body tries to send more.
    pub fn limited(inner: B, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        Guarded {
            inner,
            limit: Some(limit),
            seen: 0,
            idle: None,
            exceeded,
        }
    }

    /// Ends with an error when no frame arrives for `timeout`.
    pub fn idle_timeout(inner: B, timeout: Duration) -> Self {
        Guarded {
            inner,
            limit: None,
            seen: 0,
            idle: Some((timeout, Box::pin(tokio::time::sleep(timeout)))),
            exceeded: Arc::default(),
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if let Some(limit) = this.limit.filter(|limit| this.seen > *limit) {
                        this.exceeded.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(Box::new(BodyBound::TooLarge(limit)))));
                    }
                }
                if let Some((timeout, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(Instant::now() + *timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match &mut this.idle {
                Some((timeout, sleep)) => match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyBound::Idle(*timeout))))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Pending,
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

/// A complete small body (the broker's own answers).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Box any body with the broker's error type.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use http_body_util::StreamBody;

    fn chunks(
        parts: &[&'static str],
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Unpin> {
        StreamBody::new(stream::iter(
            parts
                .iter()
                .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
                .collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn the_limit_trips_on_the_first_byte_past_it_and_says_so() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = Guarded::limited(chunks(&["abc", "def", "g"]), 6, exceeded.clone());
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("limit of 6 bytes"), "{err}");
        assert!(exceeded.load(Ordering::SeqCst));

        let exceeded = Arc::new(AtomicBool::new(false));
        let body = Guarded::limited(chunks(&["abc", "def"]), 6, exceeded.clone());
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcdef");
        assert!(!exceeded.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_ends_with_an_error() {
        let never = StreamBody::new(stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let body = Guarded::idle_timeout(never, Duration::from_secs(5));
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("no data for 5s"), "{err}");
    }
}
