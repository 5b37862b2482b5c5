//! Data-plane handlers, each a short list of steps. The infer path:
//! pick (one snapshot for the whole request) → read body → decode → submit to the version's
//! queue → encode → record metrics once.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::layers::Deadline;
use super::response::{self, HttpResponse, JSON, OCTET_STREAM, error};
use super::router::{Endpoint, ModelAction, route};
use crate::batching::InferError;
use crate::protocol::{
    self, ApiError, DecodeLimits, HEADER_CONTENT_LENGTH, decode_infer, encode_infer, metadata,
};
use crate::registry::{Registry, ServedModel, ServedVersion, ServingSnapshot};
use crate::routing::{Route, RouteReason};
use crate::telemetry::{self, Outcome, Role};

/// What the data-plane handlers share.
pub struct DataPlane {
    pub registry: Arc<Registry>,
    pub decode_limits: DecodeLimits,
}

pub async fn handle(plane: Arc<DataPlane>, request: http::Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let uri = parts.uri.clone();
    let endpoint = match route(&parts.method, uri.path()) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(error = %e, "refused");
            telemetry::count_unrouted(None, outcome_of(&e));
            return error(&e);
        }
    };
    let snapshot = plane.registry.snapshot();
    match endpoint {
        Endpoint::ServerMetadata => response::json(StatusCode::OK, &metadata::server()),
        Endpoint::Live => response::json(StatusCode::OK, &json!({ "live": true })),
        Endpoint::Ready => server_ready(&snapshot),
        Endpoint::Model {
            model,
            version,
            action,
        } => match action {
            ModelAction::Infer => infer(&plane, &snapshot, parts, body, model, version).await,
            ModelAction::Metadata => respond(model_metadata(&snapshot, model, version)),
            ModelAction::Ready => model_ready(&snapshot, model, version),
            ModelAction::Config => respond(model_config(&snapshot, model, version)),
        },
    }
}

fn respond(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    result.unwrap_or_else(|e| error(&e))
}

/// Every configured model ready (Triton's strict readiness): 200, otherwise 503 naming them.
fn server_ready(snapshot: &ServingSnapshot) -> HttpResponse {
    let not_ready: Vec<&str> = snapshot
        .models
        .values()
        .filter(|m| !m.is_ready())
        .map(|m| m.name.as_str())
        .collect();
    if not_ready.is_empty() {
        response::json(StatusCode::OK, &json!({ "ready": true }))
    } else {
        response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "not_ready": not_ready }),
        )
    }
}

fn find_model<'s>(snapshot: &'s ServingSnapshot, model: &str) -> Result<&'s ServedModel, ApiError> {
    snapshot
        .model(model)
        .ok_or_else(|| ApiError::UnknownModel(model.to_string()))
}

/// The version asked for, or the primary.
fn find_version<'s>(m: &'s ServedModel, version: Option<u64>) -> Result<&'s Arc<ServedVersion>, ApiError> {
    if !m.is_ready() {
        return Err(not_ready(m));
    }
    let v = version.unwrap_or_else(|| m.routing.primary());
    m.version(v).ok_or_else(|| ApiError::UnknownVersion {
        model: m.name.clone(),
        version: v.to_string(),
    })
}

fn not_ready(m: &ServedModel) -> ApiError {
    ApiError::NotReady {
        model: m.name.clone(),
        reason: m
            .failure
            .clone()
            .unwrap_or_else(|| "its primary version is not loaded".to_string()),
    }
}

fn model_metadata(
    snapshot: &ServingSnapshot,
    model: &str,
    version: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let m = find_model(snapshot, model)?;
    let v = find_version(m, version)?;
    let versions: Vec<u64> = match version {
        Some(v) => vec![v],
        None => m.versions.keys().copied().collect(),
    };
    Ok(response::json(
        StatusCode::OK,
        &metadata::model(&m.name, &versions, &v.signature),
    ))
}

fn model_ready(snapshot: &ServingSnapshot, model: &str, version: Option<u64>) -> HttpResponse {
    let Some(m) = snapshot.model(model) else {
        return error(&ApiError::UnknownModel(model.to_string()));
    };
    let ready = m.is_ready() && version.is_none_or(|v| m.versions.contains_key(&v));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "name": m.name, "ready": ready });
    if let Some(v) = version {
        body["version"] = json!(v.to_string());
    }
    response::json(status, &body)
}

fn model_config(
    snapshot: &ServingSnapshot,
    model: &str,
    version: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let m = find_model(snapshot, model)?;
    let v = find_version(m, version)?;
    let delay_us = v.key.policy.max_queue_delay.as_micros() as u64;
    let config = metadata::triton_config(
        &m.name,
        &v.signature,
        v.max_batch_size(),
        delay_us,
        v.key.instances,
    );
    Ok(response::json(StatusCode::OK, &config))
}

/// The version that answers this request, and why.
struct Picked {
    version: Arc<ServedVersion>,
    route: Route,
}

fn pick(m: &ServedModel, pinned_path: Option<u64>, headers: &HeaderMap) -> Result<Picked, ApiError> {
    if !m.is_ready() {
        return Err(not_ready(m));
    }
    let pinned = match pinned_path {
        Some(v) => Some(v),
        None => pinned_by_header(m, headers)?,
    };
    let route = match pinned {
        Some(version) => Route {
            version,
            role: Role::Pinned,
            reason: RouteReason::Pinned,
        },
        None => {
            let key = m
                .routing
                .sticky_header
                .as_deref()
                .and_then(|h| headers.get(h))
                .map(HeaderValue::as_bytes);
            m.routing.pick(key, fastrand::f64())
        }
    };
    let version = m
        .version(route.version)
        .cloned()
        .ok_or_else(|| ApiError::UnknownVersion {
            model: m.name.clone(),
            version: route.version.to_string(),
        })?;
    Ok(Picked { version, route })
}

fn pinned_by_header(m: &ServedModel, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(header) = m.routing.pin_header.as_deref() else {
        return Ok(None);
    };
    let Some(value) = headers.get(header) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&v| v > 0);
    parsed.map(Some).ok_or_else(|| {
        ApiError::Malformed(format!(
            "header {header} must be a positive version number, got {value:?}"
        ))
    })
}

async fn infer(
    plane: &DataPlane,
    snapshot: &ServingSnapshot,
    parts: Parts,
    body: Incoming,
    model: &str,
    pinned: Option<u64>,
) -> HttpResponse {
    let started = Instant::now();
    let picked = match find_model(snapshot, model).and_then(|m| pick(m, pinned, &parts.headers)) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(model, error = %e, "refused");
            telemetry::count_unrouted(snapshot.model(model).map(|m| m.name.as_str()), outcome_of(&e));
            return error(&e);
        }
    };
    let metrics = picked.version.metrics.role(picked.route.role);
    let result = run_infer(plane, snapshot, &picked, parts, body).await;
    let outcome = result.as_ref().map_or_else(outcome_of, |_| Outcome::Ok);
    metrics.finish(outcome, started.elapsed());
    match result {
        Ok(response) => response,
        Err(e) => {
            if outcome == Outcome::ServerError {
                tracing::warn!(model, version = picked.version.version, error = %e, "inference failed");
            } else {
                tracing::debug!(model, version = picked.version.version, error = %e, "refused");
            }
            error(&e)
        }
    }
}

async fn run_infer(
    plane: &DataPlane,
    snapshot: &ServingSnapshot,
    picked: &Picked,
    parts: Parts,
    body: Incoming,
) -> Result<HttpResponse, ApiError> {
    let version = &picked.version;
    let json_length = json_length(&parts.headers)?;
    let body = read_body(body, &parts.headers, snapshot.config.server.max_request_bytes).await?;
    let request = decode_infer(&body, json_length, &version.signature, &plane.decode_limits)?;
    let deadline = parts.extensions.get::<Deadline>().map_or_else(
        || Instant::now() + snapshot.config.server.request_timeout,
        |d| d.0,
    );
    let inputs = Arc::new(request.inputs);
    let completed = version
        .infer(inputs, deadline)
        .await
        .map_err(|e| infer_error(e, version))?;
    version
        .metrics
        .role(picked.route.role)
        .queue
        .record(completed.queue_time.as_secs_f64());
    let encoded = encode_infer(
        &version.model,
        version.version,
        request.id.as_deref(),
        &completed.outputs,
        &request.outputs,
    );
    Ok(infer_response(encoded, picked))
}

fn infer_response(encoded: protocol::EncodedResponse, picked: &Picked) -> HttpResponse {
    let content_type = if encoded.json_length.is_some() {
        OCTET_STREAM
    } else {
        JSON
    };
    let mut response = response::bytes(StatusCode::OK, content_type, Bytes::from(encoded.body));
    let headers = response.headers_mut();
    if let Some(n) = encoded.json_length {
        headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
    }
    headers.insert("x-model-version", HeaderValue::from(picked.version.version));
    headers.insert(
        "x-route-reason",
        HeaderValue::from_static(picked.route.reason.as_str()),
    );
    response
}

fn json_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(HEADER_CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::Malformed(format!(
                "Inference-Header-Content-Length must be a byte count, got {value:?}"
            ))
        })
}

/// The whole body, refusing (413) anything over `limit` before or while reading it.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge { limit }),
        Err(e) => Err(ApiError::Malformed(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn infer_error(e: InferError, version: &ServedVersion) -> ApiError {
    match e {
        InferError::QueueFull { capacity } => ApiError::Overloaded(format!(
            "model '{}' version {} has {capacity} requests waiting (max_queue); retry shortly",
            version.model, version.version
        )),
        InferError::TimedOut => ApiError::TimedOut(format!(
            "model '{}' version {} did not answer before the request deadline",
            version.model, version.version
        )),
        InferError::Failed { reason } => ApiError::InferenceFailed(reason),
        InferError::Closed => ApiError::ShuttingDown,
    }
}

/// How each error is counted in `gateway_requests_total{outcome}`.
pub fn outcome_of(e: &ApiError) -> Outcome {
    match e {
        ApiError::Malformed(_)
        | ApiError::UnknownModel(_)
        | ApiError::UnknownVersion { .. }
        | ApiError::NoRoute { .. }
        | ApiError::MethodNotAllowed { .. }
        | ApiError::TooLarge { .. }
        | ApiError::Mismatch(_)
        | ApiError::Unauthorized => Outcome::ClientError,
        ApiError::NotReady { .. } | ApiError::Overloaded(_) | ApiError::ShuttingDown => Outcome::Rejected,
        ApiError::TimedOut(_) => Outcome::Timeout,
        ApiError::InferenceFailed(_) | ApiError::Internal(_) => Outcome::ServerError,
    }
}
