//! The proxy port's own pages, for origin-form requests: the CA certificate
//! nodes install, a health check, and metrics.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::State;

/// Answers `GET`/`HEAD /ca.crt`, `/healthz` and `/metrics`; everything else is 404.
pub fn handle<B>(state: &State, req: &Request<B>) -> Response<Body> {
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    let (status, content_type, text) = match (is_read, req.uri().path()) {
        (true, "/ca.crt") => (
            StatusCode::OK,
            "application/x-pem-file",
            state.ca.cert_pem().to_owned(),
        ),
        (true, "/healthz") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        (true, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "pullcache: not found (try /ca.crt, /healthz or /metrics)\n".to_owned(),
        ),
    };
    let length = text.len();
    let body = if req.method() == Method::HEAD {
        body::empty()
    } else {
        body::full(text)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}
