//! `POST /v2/models/{m}[/versions/{v}]/explain`: infer's body; answers infer's reply for the
//! original rows plus `attributions` (see `crate::explain`). The steps: the model exists and is
//! monitored → read the whole body → pick the version (pins and sticky headers as for infer) →
//! decode → run the occluded batch → encode. An explanation is not a prediction: it is left out
//! of prediction metrics, drift, rollout windows, shadows and capture.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderValue;
use http::request::Parts;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::handlers::{decode_content, json_length, read_body};
use super::response::{self, HttpResponse, JSON, OCTET_STREAM, error};
use crate::deadline::Deadline;
use crate::explain::explain;
use crate::inference;
use crate::protocol::{ApiError, DecodeLimits, HEADER_CONTENT_LENGTH, decode_infer, encode_infer};
use crate::registry::ServingSnapshot;
use crate::tensor::{Tensor, TensorData};

pub(super) async fn handle(
    snapshot: &Arc<ServingSnapshot>,
    parts: Parts,
    body: Incoming,
    model: &str,
    pinned: Option<u64>,
    deadline: Deadline,
) -> HttpResponse {
    let headers = &parts.headers;
    let work = async {
        let m = inference::model(snapshot, model)?;
        let cfg = snapshot.config.models.get(model).and_then(|c| c.monitor.as_ref()).ok_or_else(|| {
            ApiError::Mismatch(format!(
                "model '{model}' has no [monitor] output: explanations attribute its monitored output"
            ))
        })?;
        let max = snapshot.config.server.max_request_bytes;
        let json_length = json_length(headers)?;
        let body = decode_content(read_body(body, headers, max).await?, headers, max)?;
        let (target, expected) = inference::pick(m, pinned, |h| headers.get(h).map(HeaderValue::as_bytes))?;
        let version = &target.version;
        let limits = DecodeLimits::for_request(max, version.max_batch_size());
        let request = decode_infer(&body, json_length, &version.signature, &limits)?;
        let done = explain(version, &request.inputs, cfg, &deadline, expected).await?;
        let encoded = encode_infer(
            &version.model,
            version.version,
            request.id.as_deref(),
            &done.outputs,
            &request.outputs,
        );
        let reply = with_attributions(encoded.body, encoded.json_length, &done.attributions)?;
        Ok::<_, ApiError>((reply, version.version))
    };
    match deadline.bound(work).await {
        Ok(((body, json_length), version)) => {
            let content_type = if json_length.is_some() { OCTET_STREAM } else { JSON };
            let mut response = response::bytes(StatusCode::OK, content_type, Bytes::from(body));
            let headers = response.headers_mut();
            if let Some(n) = json_length {
                headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
            }
            headers.insert("x-model-version", HeaderValue::from(version));
            response
        }
        Err(e) => {
            tracing::debug!(model, error = %e, "explanation refused");
            inference::count_refused(snapshot, model, &e);
            error(&e)
        }
    }
}

/// Adds `"attributions"` to an encoded reply's JSON (binary outputs, if asked for, follow it).
fn with_attributions(
    body: Vec<u8>,
    json_length: Option<usize>,
    attributions: &[Tensor],
) -> Result<(Vec<u8>, Option<usize>), ApiError> {
    let split = json_length.unwrap_or(body.len()).min(body.len());
    let (head, tail) = body.split_at(split);
    let mut reply: Value =
        serde_json::from_slice(head).map_err(|e| ApiError::Internal(format!("encoded reply: {e}")))?;
    let shown: Vec<Value> = attributions
        .iter()
        .map(|t| {
            let data = match &t.data {
                TensorData::F64(v) => v.clone(),
                other => other.to_f64_vec().unwrap_or_default(),
            };
            json!({ "name": t.name, "datatype": "FP64", "shape": t.shape, "data": data })
        })
        .collect();
    reply["attributions"] = Value::Array(shown);
    let mut out = serde_json::to_vec(&reply).map_err(|e| ApiError::Internal(format!("reply: {e}")))?;
    let new_length = json_length.map(|_| out.len());
    out.extend_from_slice(tail);
    Ok((out, new_length))
}
