//! Passing an intercepted request to the real upstream and its response
//! back, as a proxy must: hop-by-hop headers removed (RFC 9110 §7.6.1),
//! the authority preserved, bodies streamed in both directions.

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::connect::ConnectTarget;
use crate::error::ProxyError;
use crate::State;

/// Headers that describe one connection, not the message, and so never
/// cross a proxy (RFC 9110 §7.6.1, plus the proxy-only ones).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Forwards `req`, received inside a tunnel opened to `target`, to the
/// upstream and returns its response for the client.
pub async fn forward(
    state: &State,
    target: &ConnectTarget,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let upstream_req = upstream_request(target, req)?;
    let response = state.upstream.send(upstream_req).await?;
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body::boxed(incoming)))
}

/// Rewrites a client's request into the request we send upstream.
pub fn upstream_request<B>(
    target: &ConnectTarget,
    req: Request<B>,
) -> Result<Request<Body>, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    check_authority(target, &req)?;
    let (mut parts, incoming) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = Uri::builder()
        .scheme("https")
        .authority(target.https_authority())
        .path_and_query(path)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URI: {e}")))?;
    strip_hop_by_hop(&mut parts.headers);
    // The URI now carries the authority; the client library writes Host
    // (HTTP/1.1) or :authority (h2) from it, whichever the upstream speaks.
    parts.headers.remove(header::HOST);
    // Let ALPN pick the upstream protocol, whatever the client spoke to us.
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body::boxed(incoming)))
}

/// Refuses a request whose authority (h2 `:authority`, an absolute URI, or
/// `Host`) names a different host or port than the tunnel's CONNECT.
pub fn check_authority<B>(target: &ConnectTarget, req: &Request<B>) -> Result<(), ProxyError> {
    let requested = match req.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => req
            .headers()
            .get(header::HOST)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ProxyError::BadRequest("the Host header is not text".into()))
            })
            .transpose()?,
    };
    let Some(requested) = requested else {
        return Ok(());
    };
    let matches = match ConnectTarget::parse(&requested) {
        Ok(parsed) => parsed == *target,
        // "Host: name" without a port means the scheme's default, 443.
        Err(_) => ConnectTarget::parse(&format!("{requested}:443")).is_ok_and(|p| p == *target),
    };
    if matches {
        Ok(())
    } else {
        Err(ProxyError::Misdirected {
            requested,
            connected: target.to_string(),
        })
    }
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ConnectTarget {
        ConnectTarget::parse("registry-1.docker.io:443").unwrap()
    }

    fn request(uri: &str, host: Option<&str>) -> Request<Body> {
        let mut builder = Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(body::empty()).unwrap()
    }

    #[test]
    fn origin_form_becomes_an_absolute_https_uri() {
        let req = upstream_request(
            &target(),
            request(
                "/v2/library/alpine/manifests/3?x=1",
                Some("registry-1.docker.io"),
            ),
        )
        .unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://registry-1.docker.io/v2/library/alpine/manifests/3?x=1"
        );
        assert!(req.headers().get(header::HOST).is_none());
    }

    #[test]
    fn a_non_default_port_is_kept() {
        let target = ConnectTarget::parse("registry.local:5000").unwrap();
        let req = upstream_request(&target, request("/v2/", Some("registry.local:5000"))).unwrap();
        assert_eq!(req.uri().to_string(), "https://registry.local:5000/v2/");
    }

    #[test]
    fn host_must_match_the_connect_target() {
        for ok in [
            "registry-1.docker.io",
            "REGISTRY-1.docker.io:443",
            "registry-1.docker.io.",
        ] {
            assert!(
                upstream_request(&target(), request("/v2/", Some(ok))).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "evil.example",
            "registry-1.docker.io:8443",
            "registry-1.docker.io@evil:443",
        ] {
            let error = upstream_request(&target(), request("/v2/", Some(bad))).unwrap_err();
            assert!(
                matches!(error, ProxyError::Misdirected { .. }),
                "{bad}: {error:?}"
            );
        }
        let absolute =
            upstream_request(&target(), request("https://evil.example/v2/", None)).unwrap_err();
        assert!(matches!(absolute, ProxyError::Misdirected { .. }));
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "close, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::PROXY_AUTHORIZATION, "Basic eA==".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["authorization", "accept"]);
    }
}
