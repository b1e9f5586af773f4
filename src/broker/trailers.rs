//! Request bodies go upstream without trailers.
//!
//! HTTP/1.1 chunked requests can end with a trailer section, and hyper hands it on as a
//! trailers frame; to an HTTP/2 upstream it would go out as a trailing HEADERS frame — fields
//! the broker's header filter never saw (`authorization`, `x-api-key`, …). No provider API
//! reads request trailers, so [`WithoutTrailers`] drops them instead of filtering them.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};

/// A body that passes its data frames and drops every other frame (trailers).
pub struct WithoutTrailers<B> {
    inner: B,
}

impl<B> WithoutTrailers<B> {
    pub fn new(inner: B) -> Self {
        WithoutTrailers { inner }
    }
}

impl<B> Body for WithoutTrailers<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if !frame.is_data() => {
                    tracing::debug!("the broker dropped a request's trailers");
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn data_passes_and_trailers_are_dropped() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-api-key", "stolen".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = WithoutTrailers::new(StreamBody::new(futures::stream::iter(frames)));
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(&collected.to_bytes()[..], b"abcd");
    }
}
