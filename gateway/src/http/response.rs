//! Building responses: JSON bodies, errors as `{"error": ...}` with their status (and
//! `Retry-After` where retrying helps).

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::protocol::ApiError;

pub type HttpResponse = Response<Full<Bytes>>;

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

pub fn bytes(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => bytes(status, JSON, body),
        Err(e) => error(&ApiError::Internal(format!("encoding the response: {e}"))),
    }
}

pub fn error(e: &ApiError) -> HttpResponse {
    let mut response = bytes(e.status(), JSON, e.body());
    if let Some(seconds) = e.retry_after() {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let ApiError::Unauthenticated(_) = e {
        response.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let ApiError::MethodNotAllowed { allowed, .. } = e {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
    }
    response
}
