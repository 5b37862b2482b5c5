//! The request every worker sends, prepared once: method, URI, headers and the shared body
//! (a reference-counted `Bytes`), plus the random user key for `--sticky-header`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;

use crate::payload::Payload;

/// Everything needed to build one infer request cheaply.
#[derive(Debug, Clone)]
pub struct Template {
    uri: Uri,
    /// Host header value (HTTP/1.1 only; HTTP/2 takes `:authority` from the URI).
    host: Option<HeaderValue>,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    sticky: Option<(HeaderName, u32)>,
}

impl Template {
    pub fn new(
        uri: Uri,
        authority: &str,
        http2: bool,
        payload: &Payload,
        extra: &[(String, String)],
        sticky: Option<(&str, u32)>,
    ) -> Result<Self, String> {
        let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static(payload.content_type()))];
        if payload.grpc {
            // gRPC: the trailers carry each call's status.
            headers.push((HeaderName::from_static("te"), HeaderValue::from_static("trailers")));
        }
        if let Some(n) = payload.json_length {
            headers.push((HeaderName::from_static("inference-header-content-length"), HeaderValue::from(n)));
        }
        for (name, value) in extra {
            headers.push((header_name(name)?, header_value(value)?));
        }
        let host = if http2 { None } else { Some(header_value(authority)?) };
        let sticky = match sticky {
            Some((name, users)) => Some((header_name(name)?, users.max(1))),
            None => None,
        };
        Ok(Self { uri, host, body: payload.body.clone(), headers, sticky })
    }

    /// A fresh request (the body is shared, not copied).
    pub fn build(&self, rng: &mut fastrand::Rng) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if let Some((name, users)) = &self.sticky {
            let user = rng.u32(0..*users);
            headers.insert(name.clone(), HeaderValue::from(user));
        }
        request
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(name).map_err(|e| format!("header name {name:?}: {e}"))
}

fn header_value(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::try_from(value).map_err(|e| format!("header value {value:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_headers() {
        let payload =
            Payload { body: Bytes::from_static(b"{}xx"), json_length: Some(2), rows: 1, grpc: false };
        let extra = vec![("x-a".to_string(), "b".to_string())];
        let t = Template::new("/p".parse().unwrap(), "h:1", false, &payload, &extra, Some(("x-user-id", 10)))
            .unwrap();
        let r = t.build(&mut fastrand::Rng::with_seed(3));
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.headers()["host"], "h:1");
        assert_eq!(r.headers()["inference-header-content-length"], "2");
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(r.headers()["x-a"], "b");
        let user: u32 = r.headers()["x-user-id"].to_str().unwrap().parse().unwrap();
        assert!(user < 10);
        assert!(
            Template::new(
                "/p".parse().unwrap(),
                "h",
                true,
                &payload,
                &[("bad name".into(), "v".into())],
                None
            )
            .is_err()
        );
    }
}
