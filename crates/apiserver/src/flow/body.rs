//! A response body that holds something (a long-running permit, a connection's activity
//! mark) until the body is finished or dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::response::Body;

struct Holding<G> {
    inner: Body,
    _held: G,
}

impl<G: Unpin> HttpBody for Holding<G> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` whose body keeps `held` alive until it is dropped.
pub(crate) fn holding<G: Unpin + Send + 'static>(resp: Response<Body>, held: G) -> Response<Body> {
    resp.map(|inner| Holding { inner, _held: held }.boxed_unsync())
}

/// Whether a body is a whole buffer (its size is known), not a stream.
pub(crate) fn is_whole(b: &Body) -> bool {
    b.size_hint().exact().is_some()
}
