//! One request to an MLflow server and back: building it (credentials, JSON body), bounding it
//! by the client's timeout, reading a bounded answer and turning every failure into an
//! [`MlflowError`]; also the percent-encoding of names in queries and paths. Knows no REST
//! route and no answer shape beyond "JSON".

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::answer_error;
use super::{MlflowClient, MlflowError};

/// REST answers (and MLmodel files) are small; more than this is not an MLflow answer.
const MAX_ANSWER_BYTES: usize = 8 << 20;

impl MlflowClient {
    /// One REST call to this server: JSON in, JSON out, errors typed.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, MlflowError> {
        let url = format!("{}{path}", self.base);
        self.call_url(method, &url, body).await
    }

    pub(super) async fn call_url<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<T, MlflowError> {
        let what = format!("{method} {}", url.strip_prefix(&self.base).unwrap_or(url));
        let (status, bytes) = self.exchange(self.request(method, url, body)?, &what).await?;
        if !status.is_success() {
            return Err(answer_error(&what, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| MlflowError::BadAnswer { what, reason: e.to_string() })
    }

    /// Sends a request and reads the whole (bounded) answer, all within the timeout.
    pub(super) async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        what: &str,
    ) -> Result<(StatusCode, Bytes), MlflowError> {
        let work = async {
            let response = self.http.request(request).await.map_err(|e| unreachable(what, &e))?;
            let status = response.status();
            let bytes = read_limited(response.into_body())
                .await
                .map_err(|reason| MlflowError::BadAnswer { what: what.to_owned(), reason })?;
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| MlflowError::Timeout { what: what.to_owned(), after: self.timeout })?
    }

    pub(super) fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Request<Full<Bytes>>, MlflowError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        builder.body(body).map_err(|e| MlflowError::InvalidUri { uri: url.to_owned(), reason: e.to_string() })
    }
}

pub(super) fn unreachable(what: &str, error: &dyn std::error::Error) -> MlflowError {
    // hyper's top-level message ("client error (Connect)") says little; the causes say why.
    let mut reason = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        reason.push_str(": ");
        reason.push_str(&e.to_string());
        cause = e.source();
    }
    MlflowError::Unreachable { what: what.to_owned(), reason }
}

pub(super) async fn read_limited(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_ANSWER_BYTES).collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::source::mlflow::Credentials;
    use crate::source::mlflow::testutil::fake_server;

    #[test]
    fn names_are_percent_encoded_in_queries_and_paths() {
        assert_eq!(encode("credit scoring/v1&x=é"), "credit%20scoring%2Fv1%26x%3D%C3%A9");
        assert_eq!(encode_path("0/models/my model.onnx"), "0/models/my%20model.onnx");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout_not_a_hang() {
        let uri = fake_server(None).await;
        let client = MlflowClient::with_credentials(&uri, Credentials::None)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = client.version_by_alias("m", "a").await.unwrap_err();
        assert!(matches!(err, MlflowError::Timeout { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client =
            MlflowClient::with_credentials(&format!("http://127.0.0.1:{port}"), Credentials::None).unwrap();
        let err = client.get_version("m", 1).await.unwrap_err();
        assert!(matches!(err, MlflowError::Unreachable { .. }), "{err:?}");
    }
}
