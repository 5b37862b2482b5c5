//! KServe V2 over HTTP: pooled keep-alive connections (HTTP/1.1, or HTTP/2 with `http2`),
//! tensors both ways in Triton's binary extension, so numbers are copied, never printed or parsed.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{CallError, ChildSpanHeaders, http_failure, metadata_signature};
use crate::config::RemoteConfig;
use crate::protocol::{DecodeLimits, decode_outputs, encode_binary_request};
use crate::tensor::{ModelSignature, Tensor};

/// The largest answer read from a remote (a misbehaving one cannot exhaust memory).
pub(super) const MAX_ANSWER_BYTES: usize = 512 << 20;

const JSON_LENGTH: &str = "inference-header-content-length";

pub struct HttpClient {
    infer: Client<HttpConnector, Full<Bytes>>,
    get: Client<HttpConnector, Empty<Bytes>>,
    infer_uri: Uri,
    metadata_uri: Uri,
    ready_uri: Uri,
}

impl HttpClient {
    /// Call inside the runtime the calls will run on.
    pub fn new(config: &RemoteConfig) -> Result<HttpClient, String> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30)).pool_max_idle_per_host(config.max_in_flight);
        if config.http2 {
            builder.http2_only(true);
        }
        let version = config.version.as_deref().map(|v| format!("/versions/{v}")).unwrap_or_default();
        let base = format!("{}/v2/models/{}{version}", config.url, config.model);
        let uri = |suffix: &str| -> Result<Uri, String> {
            format!("{base}{suffix}").parse().map_err(|e| format!("cannot make a URL of {base}{suffix}: {e}"))
        };
        Ok(HttpClient {
            infer: builder.build(connector.clone()),
            get: builder.build(connector),
            infer_uri: uri("/infer")?,
            metadata_uri: uri("")?,
            ready_uri: uri("/ready")?,
        })
    }

    pub async fn infer(
        &self,
        inputs: &[Tensor],
        outputs: &[String],
        trace: Option<&ChildSpanHeaders>,
    ) -> Result<Vec<Tensor>, CallError> {
        let (body, json_length) = encode_binary_request(inputs, outputs);
        let mut request = Request::post(self.infer_uri.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(JSON_LENGTH, json_length)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if let Some(t) = trace {
            request.headers_mut().insert("traceparent", t.traceparent.clone());
            if let Some(state) = &t.tracestate {
                request.headers_mut().insert("tracestate", state.clone());
            }
        }
        let response = self.infer.request(request).await.map_err(|e| request_error(&e))?;
        let status = response.status();
        let json_length =
            response.headers().get(JSON_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let body = read(response.into_body()).await?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &body));
        }
        let limits = DecodeLimits::for_request(MAX_ANSWER_BYTES, 0);
        decode_outputs(&body, json_length, &limits).map_err(|e| CallError::Malformed(e.to_string()))
    }

    /// The remote's metadata for the model, as a signature.
    pub async fn metadata(&self) -> Result<ModelSignature, CallError> {
        let body = self.get(&self.metadata_uri).await?;
        let doc: Metadata = serde_json::from_slice(&body)
            .map_err(|e| CallError::Malformed(format!("model metadata is not V2 metadata: {e}")))?;
        let parts = |t: MetadataTensor| (t.name, t.datatype, t.shape);
        metadata_signature(doc.inputs.into_iter().map(parts), doc.outputs.into_iter().map(parts))
    }

    /// The model's ready endpoint: 200 or an error.
    pub async fn ready(&self) -> Result<(), CallError> {
        self.get(&self.ready_uri).await.map(drop)
    }

    async fn get(&self, uri: &Uri) -> Result<Bytes, CallError> {
        let request =
            Request::get(uri.clone()).body(Empty::new()).map_err(|e| CallError::Transport(e.to_string()))?;
        let response = self.get.request(request).await.map_err(|e| request_error(&e))?;
        let status = response.status();
        let body = read(response.into_body()).await?;
        if status.is_success() { Ok(body) } else { Err(status_error(status.as_u16(), &body)) }
    }
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    inputs: Vec<MetadataTensor>,
    #[serde(default)]
    outputs: Vec<MetadataTensor>,
}

#[derive(Deserialize)]
struct MetadataTensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

async fn read(body: hyper::body::Incoming) -> Result<Bytes, CallError> {
    Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))
}

/// A failed request: `Connect` only when no connection was made (nothing was sent).
fn request_error(e: &hyper_util::client::legacy::Error) -> CallError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if e.is_connect() { CallError::Connect(text) } else { CallError::Transport(text) }
}

/// A non-2xx answer: the V2 error message when it has one.
fn status_error(status: u16, body: &[u8]) -> CallError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    let status_text = format!("HTTP {status}");
    match http_failure(status) {
        None => CallError::Refused { status: status_text, message },
        Some(failure) => CallError::Status { status: status_text, failure, message },
    }
}
