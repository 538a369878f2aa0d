//! The one response/request body type the proxy passes around, and small
//! constructors for it.
//!
//! Upstream bodies, file bodies and fixed messages all become a boxed body so
//! every handler returns the same `Response<Body>`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};

/// Errors a body can fail with while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy builds. Not
/// `Sync`: nothing shares a body between threads, and bodies that await
/// boxed futures (a resumed download) could not be.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// `body`, failing if it sends nothing for `stall`: an upstream that goes
/// quiet mid-body ends the response with an error instead of holding its
/// client until the client gives up.
pub fn with_stall(body: Body, stall: Duration) -> Body {
    let frames = stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(stall, body.frame()).await {
            Ok(Some(frame)) => Some((frame, Some(body))),
            Ok(None) => None,
            Err(_) => {
                let error = format!("upstream sent nothing for {stall:?}");
                Some((Err(error.into()), None))
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const STALL: Duration = Duration::from_secs(60);

    /// A body that sends `first`, then nothing, ever.
    fn stalls_after(first: &'static [u8]) -> Body {
        let frames = stream::once(async move { Ok(http_body::Frame::data(Bytes::from(first))) })
            .chain(stream::pending());
        StreamBody::new(frames).boxed_unsync()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_goes_quiet_fails_after_the_stall() {
        let mut body = with_stall(stalls_after(b"abc"), STALL);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"abc");
        let started = tokio::time::Instant::now();
        let error = tokio::time::timeout(2 * STALL, body.frame())
            .await
            .expect("the stall ends the body")
            .unwrap()
            .unwrap_err();
        assert!(
            error.to_string().contains("sent nothing for 60s"),
            "{error}"
        );
        assert_eq!(started.elapsed(), STALL);
        assert!(body.frame().await.is_none(), "nothing after the error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_sending_passes_untouched() {
        let frames = stream::iter(0..5u8).then(|i| async move {
            // Each frame comes just inside the stall.
            tokio::time::sleep(STALL - Duration::from_secs(1)).await;
            Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![i; 3])))
        });
        let body = with_stall(StreamBody::new(frames).boxed_unsync(), STALL);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], &[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
    }
}
