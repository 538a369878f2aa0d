//! Requests pullcache makes to registries on its own behalf (fills,
//! revalidations, visibility probes, token requests), with a bound on how
//! long the upstream may stall and with redirects followed server-side.
//!
//! Registries send blob downloads to CDNs with a redirect, often to a
//! presigned URL. We follow it ourselves so the client only ever sees the
//! `200`, and drop `Authorization` when the host changes: the CDN must not
//! see the registry token, and presigned URLs refuse requests that carry one.

use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::body;
use crate::error::ProxyError;
use crate::upstream::UpstreamClient;

/// How pullcache introduces itself on its own upstream requests.
pub const USER_AGENT: &str = concat!("pullcache/", env!("CARGO_PKG_VERSION"));

/// The most redirects followed for one fetch.
pub const MAX_REDIRECTS: usize = 5;

/// Sends registry requests for pullcache itself.
#[derive(Clone)]
pub struct Fetcher {
    client: UpstreamClient,
    stall: Duration,
}

impl Fetcher {
    /// A fetcher that gives up on a response head after `stall`.
    pub fn new(client: UpstreamClient, stall: Duration) -> Fetcher {
        Fetcher { client, stall }
    }

    /// How long an upstream may pause before a fetch is abandoned.
    pub fn stall(&self) -> Duration {
        self.stall
    }

    /// Sends one bodiless request and waits (at most the stall time) for
    /// the response head.
    pub async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, ProxyError> {
        let host = uri.host().unwrap_or_default().to_owned();
        let mut request = Request::new(body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        match tokio::time::timeout(self.stall, self.client.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::UpstreamTimeout {
                host,
                after: self.stall,
            }),
        }
    }

    /// Like [`Fetcher::send`], following up to [`MAX_REDIRECTS`] redirects.
    pub async fn send_following(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut method = method;
        let mut uri = uri;
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .send(method.clone(), uri.clone(), headers.clone())
                .await?;
            if !is_redirect(response.status()) {
                return Ok(response);
            }
            let Some(next) = redirect_target(&uri, &response) else {
                return Ok(response);
            };
            if next.authority() != uri.authority() {
                headers.remove(header::AUTHORIZATION);
            }
            if response.status() == StatusCode::SEE_OTHER {
                method = Method::GET;
            }
            tracing::debug!(
                redirect.to.host = next.host().unwrap_or_default(),
                "following an upstream redirect"
            );
            uri = next;
        }
        Err(ProxyError::BadGateway(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            uri.host().unwrap_or_default()
        )))
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The absolute URI a redirect points to, resolved against `base`.
fn redirect_target<B>(base: &Uri, response: &Response<B>) -> Option<Uri> {
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    resolve_location(base, location)
}

/// Resolves an absolute or absolute-path `Location` against `base`.
pub fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    let uri: Uri = location.parse().ok()?;
    if uri.scheme().is_some() && uri.authority().is_some() {
        return Some(uri);
    }
    if location.starts_with('/') && !location.starts_with("//") {
        return Uri::builder()
            .scheme(base.scheme()?.clone())
            .authority(base.authority()?.clone())
            .path_and_query(location)
            .build()
            .ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://registry-1.docker.io/v2/x/blobs/sha256:00"
            .parse()
            .unwrap();
        assert_eq!(
            resolve_location(&base, "https://cdn.example/a?sig=1")
                .unwrap()
                .to_string(),
            "https://cdn.example/a?sig=1"
        );
        assert_eq!(
            resolve_location(&base, "/v2/x/blobs/other")
                .unwrap()
                .to_string(),
            "https://registry-1.docker.io/v2/x/blobs/other"
        );
        assert_eq!(resolve_location(&base, "relative/path"), None);
        assert_eq!(resolve_location(&base, "//evil.example/x"), None);
    }
}
