//! A bound on how long a task's client may keep the broker waiting for a request body.
//!
//! `client_timeout` covers a request's headers; a body sent a byte every few seconds would
//! otherwise hold the request — its client connection and, upstream, a connection or an
//! HTTP/2 stream of the task's API client — for as long as the client likes. [`WaitLimited`]
//! counts only the time the broker spends *waiting for the client* (its body has no data
//! ready), summed over the whole body, and ends the body with [`BodyTooSlow`] once that passes
//! `request_body_timeout`. Time the API takes to accept what was already sent (back-pressure
//! on a large upload over a slow uplink) does not count, so a large body from a prompt client
//! is never cut however long its upload takes. A CLI on the same machine sends its body in
//! microseconds; only a stalling client comes near the bound.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body::BoxError;

/// The client kept the broker waiting for its request body longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("the client kept the broker waiting {0:?} in total for its request body")]
pub struct BodyTooSlow(pub Duration);

/// A request body that may keep its reader waiting at most `budget` in total.
pub struct WaitLimited<B> {
    inner: B,
    budget: Duration,
    /// Waiting time of earlier waits.
    spent: Duration,
    /// Start of the current wait, if the client has no data ready now.
    waiting_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Set when the budget ran out.
    tripped: Arc<AtomicBool>,
    done: bool,
}

impl<B> WaitLimited<B> {
    /// `inner`, ended with [`BodyTooSlow`] (and `tripped` set) once the broker waited
    /// `budget` for it in total.
    pub fn new(inner: B, budget: Duration, tripped: Arc<AtomicBool>) -> Self {
        WaitLimited {
            inner,
            budget,
            spent: Duration::ZERO,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(budget)),
            tripped,
            done: false,
        }
    }
}

impl<B> Body for WaitLimited<B>
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
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.spent += since.elapsed();
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                let deadline = since + this.budget.saturating_sub(this.spent);
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.done = true;
                        this.tripped.store(true, Ordering::SeqCst);
                        Poll::Ready(Some(Err(Box::new(BodyTooSlow(this.budget)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    /// A body that yields one byte `every` apart, `count` times.
    fn trickle(
        every: Duration,
        count: usize,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Unpin> {
        StreamBody::new(Box::pin(futures::stream::iter(0..count).then(
            move |_| async move {
                tokio::time::sleep(every).await;
                Ok(Frame::data(Bytes::from_static(b"x")))
            },
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_when_the_waits_add_up_to_the_budget() {
        let tripped = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let body = WaitLimited::new(
            trickle(Duration::from_secs(10), 100),
            Duration::from_secs(30),
            tripped.clone(),
        );
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("30s in total"), "{err}");
        assert!(tripped.load(Ordering::SeqCst));
        // No single wait reached 30 s; their sum did.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(30) && elapsed < Duration::from_secs(31),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_takes_does_not_count() {
        let tripped = Arc::new(AtomicBool::new(false));
        let chunks = futures::stream::iter(
            (0..20).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"chunk")))),
        );
        let mut body = WaitLimited::new(
            StreamBody::new(chunks),
            Duration::from_secs(1),
            tripped.clone(),
        );
        let mut got = 0;
        // A slow reader (an upstream that accepts a chunk every 5 s): 100 s, never cut.
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            got += 1;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert_eq!(got, 20);
        assert!(!tripped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_body_passes_whole() {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = WaitLimited::new(
            trickle(Duration::from_millis(100), 50),
            Duration::from_secs(30),
            tripped.clone(),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 50);
        assert!(!tripped.load(Ordering::SeqCst));
    }
}
