//! Error responses on registry paths, in the OCI distribution error
//! envelope (`{"errors":[{"code":…,"message":…}]}`) that registry clients
//! know how to print.

use http::{header, HeaderValue, Response};

use crate::body::{self, Body};
use crate::error::ProxyError;

/// The envelope for `error`, with the same status as the plain response.
pub fn error_response(error: &ProxyError) -> Response<Body> {
    let status = error.status();
    let code = match status.as_u16() {
        400 => "UNSUPPORTED",
        403 => "DENIED",
        _ => "UNAVAILABLE",
    };
    let envelope = serde_json::json!({
        "errors": [{ "code": code, "message": format!("pullcache: {error}") }]
    });
    let mut response = Response::new(body::full(envelope.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
