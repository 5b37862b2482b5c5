//! Data-plane handlers, each a short list of steps. The infer path: the model exists → read
//! the whole body → `Inference::serve` (pick, decode, queue, encode, shadows, metrics), all
//! under the request's one deadline.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::response::{self, HttpResponse, JSON, OCTET_STREAM, error};
use super::router::{Endpoint, ModelAction, route};
use crate::deadline::Deadline;
use crate::inference::{self, Inference, Served, outcome_of};
use crate::protocol::{self, ApiError, HEADER_CONTENT_LENGTH, decode_infer, encode_infer, metadata};
use crate::registry::{Registry, ServingSnapshot};
use crate::reload::Repository;
use crate::telemetry;
use crate::tenants::Caller;
use crate::trace::{Front, REQUEST_ID, Trace};

/// What the data-plane handlers share.
pub struct DataPlane {
    pub registry: Arc<Registry>,
    pub inference: Arc<Inference>,
    /// Triton's model repository extension (`/v2/repository/...`).
    pub repository: Arc<Repository>,
    /// Tenants (`[auth]`): checked in the admission layer, before the handlers.
    pub door: Arc<crate::tenants::FrontDoor>,
}

/// One data-plane request, routed to its endpoint.
///
/// Every endpoint but infer is boxed where it is awaited: this future's size is that of its
/// largest branch, and it is made (and copied) once per request, so the cold branches must
/// not make the infer path's future larger.
pub async fn handle(
    plane: Arc<DataPlane>,
    request: http::Request<Incoming>,
    caller: Option<Caller>,
) -> HttpResponse {
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
    if let Err(e) = allowed(caller.as_ref(), &snapshot, &endpoint, &parts.headers) {
        tracing::debug!(error = %e, "refused");
        telemetry::count_unrouted(None, outcome_of(&e));
        return error(&e);
    }
    let deadline = Deadline::after(snapshot.config.server.request_timeout);
    match endpoint {
        Endpoint::ServerMetadata => response::json(StatusCode::OK, &metadata::server()),
        Endpoint::Live => response::json(StatusCode::OK, &json!({ "live": true })),
        Endpoint::Ready => server_ready(&snapshot),
        Endpoint::Feedback => {
            respond(Box::pin(deadline.bound(feedback(&plane, &snapshot, &parts.headers, body))).await)
        }
        Endpoint::AllStats => all_statistics(&snapshot),
        Endpoint::RepositoryIndex => {
            respond(Box::pin(deadline.bound(repository_index(&plane, &parts.headers, body))).await)
        }
        Endpoint::RepositoryLoad(model) => {
            let tenant = caller.as_ref().map(|c| c.0.name());
            respond(Box::pin(repository_load(&plane, &parts.headers, body, model, tenant)).await)
        }
        Endpoint::RepositoryUnload(model) => {
            let tenant = caller.as_ref().map(|c| c.0.name());
            let unloaded = Box::pin(plane.repository.unload(model, tenant)).await;
            respond(unloaded.map(|()| response::json(StatusCode::OK, &json!({}))))
        }
        Endpoint::Model { model, version, action } => match action {
            ModelAction::Infer => {
                // The request's trace starts before its body is read and ends with its answer.
                let lookup = |h: &str| parts.headers.get(h).map(HeaderValue::as_bytes);
                let mut trace = plane.inference.tracer.begin(Front::Http, lookup);
                let tenant = caller.as_ref().map(|c| c.0.name());
                if trace.is_sampled()
                    && let Some(tenant) = tenant
                {
                    trace.set("gateway.tenant", tenant.to_string());
                }
                let response =
                    infer(&plane, &snapshot, parts, body, model, version, tenant, deadline, &mut trace).await;
                trace.end_http(response)
            }
            ModelAction::Explain => {
                Box::pin(super::explain::handle(&snapshot, parts, body, model, version, deadline)).await
            }
            ModelAction::Metadata => respond(model_metadata(&snapshot, model, version)),
            ModelAction::Ready => model_ready(&snapshot, model, version),
            ModelAction::Config => respond(model_config(&snapshot, model, version)),
            ModelAction::Stats => respond(model_statistics(&snapshot, model, version)),
        },
    }
}

/// What the tenant (with `[auth]`) may reach: its models (pinning only when `may_pin`), and the
/// calls that span every model (repository API, all statistics) only with `models = ["*"]`.
fn allowed(
    caller: Option<&Caller>,
    snapshot: &ServingSnapshot,
    endpoint: &Endpoint<'_>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(caller) = caller else { return Ok(()) };
    match endpoint {
        Endpoint::Model { model, version, action } => {
            caller.may_call(model)?;
            if matches!(action, ModelAction::Infer | ModelAction::Explain) {
                caller.may_pin(snapshot, model, version.is_some(), |h| {
                    headers.get(h).map(HeaderValue::as_bytes)
                })?;
            }
            Ok(())
        }
        Endpoint::AllStats => caller.may_call_all("statistics of every model"),
        Endpoint::RepositoryIndex | Endpoint::RepositoryLoad(_) | Endpoint::RepositoryUnload(_) => {
            caller.may_call_all("the model repository API")
        }
        Endpoint::ServerMetadata | Endpoint::Live | Endpoint::Ready | Endpoint::Feedback => Ok(()),
    }
}

fn respond(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    result.unwrap_or_else(|e| error(&e))
}

/// Every configured model ready (Triton's strict readiness): 200, otherwise 503 naming them.
fn server_ready(snapshot: &ServingSnapshot) -> HttpResponse {
    let not_ready: Vec<&str> =
        snapshot.models.values().filter(|m| !m.is_ready()).map(|m| m.name.as_str()).collect();
    if not_ready.is_empty() {
        response::json(StatusCode::OK, &json!({ "ready": true }))
    } else {
        with_retry_after(response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "not_ready": not_ready }),
        ))
    }
}

/// `POST /v2/repository/index` with an optional `{"ready": true}`: Triton's repository index.
async fn repository_index(
    plane: &DataPlane,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<HttpResponse, ApiError> {
    #[derive(serde::Deserialize, Default)]
    struct Ask {
        #[serde(default)]
        ready: bool,
    }
    let body = read_body(body, headers, 64 * 1024).await?;
    let ask: Ask = if body.iter().all(u8::is_ascii_whitespace) {
        Ask::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("repository index request: {e}")))?
    };
    Ok(response::json(StatusCode::OK, &plane.repository.index(ask.ready)))
}

/// `POST /v2/repository/models/{m}/load`: loads `m` from the repository. Triton's parameters
/// that ship a config or files in the request are refused: the repository is the source.
async fn repository_load(
    plane: &DataPlane,
    headers: &HeaderMap,
    body: Incoming,
    model: &str,
    tenant: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, headers, 64 * 1024).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let ask: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(format!("load request: {e}")))?;
        if let Some(params) = ask.get("parameters").and_then(|p| p.as_object())
            && let Some(key) = params.keys().find(|k| *k == "config" || k.starts_with("file:"))
        {
            return Err(ApiError::Malformed(format!(
                "load parameter {key:?} is not supported: the model's config.pbtxt and files are read from the repository"
            )));
        }
    }
    plane.repository.load(model, tenant).await?;
    Ok(response::json(StatusCode::OK, &json!({})))
}

/// `POST /v2/feedback {"id": ..., "label": ...}`: joins a delayed label to a recent prediction.
async fn feedback(
    plane: &DataPlane,
    snapshot: &ServingSnapshot,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<HttpResponse, ApiError> {
    #[derive(serde::Deserialize)]
    struct Label {
        id: String,
        label: serde_json::Value,
    }
    let body = read_body(body, headers, 64 * 1024).await?;
    let label: Label = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Malformed(format!("feedback must be {{\"id\": ..., \"label\": ...}}: {e}")))?;
    let reply = plane.inference.monitor.feedback(snapshot, &label.id, &label.label).await?;
    Ok(response::json(StatusCode::OK, &reply))
}

/// Triton's statistics extension: `{"model_stats": [...]}` for every served version.
fn all_statistics(snapshot: &ServingSnapshot) -> HttpResponse {
    response::json(StatusCode::OK, &json!({ "model_stats": inference::all_statistics(snapshot) }))
}

fn model_statistics(
    snapshot: &ServingSnapshot,
    model: &str,
    version: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let m = inference::lookup(snapshot, model)?;
    let stats = inference::statistics(m, version)?;
    Ok(response::json(StatusCode::OK, &json!({ "model_stats": stats })))
}

fn model_metadata(
    snapshot: &ServingSnapshot,
    model: &str,
    version: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let m = inference::lookup(snapshot, model)?;
    let v = inference::described_version(m, version)?;
    let versions = inference::listed_versions(m, version);
    Ok(response::json(StatusCode::OK, &metadata::model(&m.name, &versions, &v.signature)))
}

fn model_ready(snapshot: &ServingSnapshot, model: &str, version: Option<u64>) -> HttpResponse {
    let m = match inference::lookup(snapshot, model) {
        Ok(m) => m,
        Err(e) => return error(&e),
    };
    let ready = inference::is_ready(m, version);
    let mut body = json!({ "name": m.name, "ready": ready });
    if let Some(v) = version {
        body["version"] = json!(v.to_string());
    }
    if ready {
        response::json(StatusCode::OK, &body)
    } else {
        with_retry_after(response::json(StatusCode::SERVICE_UNAVAILABLE, &body))
    }
}

/// Not ready yet: ask the caller to look again in a few seconds.
fn with_retry_after(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(5u32));
    response
}

fn model_config(
    snapshot: &ServingSnapshot,
    model: &str,
    version: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let m = inference::lookup(snapshot, model)?;
    let v = inference::described_version(m, version)?;
    Ok(response::json(StatusCode::OK, &inference::triton_config(m, v)))
}

/// Infer: refuse an unknown or unready model before reading the body; read the whole body
/// (only then is a version picked, so a slow upload never counts toward it); serve it.
#[allow(clippy::too_many_arguments)]
async fn infer(
    plane: &DataPlane,
    snapshot: &Arc<ServingSnapshot>,
    parts: Parts,
    body: Incoming,
    model: &str,
    pinned: Option<u64>,
    tenant: Option<&str>,
    deadline: Deadline,
    trace: &mut Trace,
) -> HttpResponse {
    let headers = &parts.headers;
    let whole = async {
        inference::model(snapshot, model)?;
        let max = snapshot.config.server.max_request_bytes;
        let json_length = json_length(headers)?;
        let body = read_body(body, headers, max).await?;
        Ok((decode_content(body, headers, max)?, json_length))
    };
    let (body, json_length) = match deadline.bound(whole).await {
        Ok(whole) => whole,
        Err(e) => {
            let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::debug!(model, request_id, error = %e, "refused");
            inference::count_refused(snapshot, model, &e);
            trace.finished(outcome_of(&e).as_str(), Some(&e), false);
            return error(&e);
        }
    };
    let served = plane
        .inference
        .serve(
            snapshot,
            model,
            pinned,
            |h| headers.get(h).map(HeaderValue::as_bytes),
            deadline,
            trace,
            tenant,
            |signature, limits| decode_infer(&body, json_length, signature, limits),
            |version, id, outputs, chosen| {
                Ok(encode_infer(&version.model, version.version, id, outputs, chosen))
            },
        )
        .await;
    served.map_or_else(|e| error(&e), infer_response)
}

fn infer_response(served: Served<protocol::EncodedResponse>) -> HttpResponse {
    let Served { reply: encoded, version, reason, generation } = served;
    let content_type = if encoded.json_length.is_some() { OCTET_STREAM } else { JSON };
    let mut response = response::bytes(StatusCode::OK, content_type, Bytes::from(encoded.body));
    let headers = response.headers_mut();
    if let Some(n) = encoded.json_length {
        headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
    }
    headers.insert("x-model-version", HeaderValue::from(version));
    headers.insert("x-route-reason", HeaderValue::from_static(reason.as_str()));
    headers.insert("x-gateway-generation", HeaderValue::from(generation));
    response
}

pub(super) fn json_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(HEADER_CONTENT_LENGTH) else {
        return Ok(None);
    };
    value.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()).map(Some).ok_or_else(|| {
        ApiError::Malformed(format!("Inference-Header-Content-Length must be a byte count, got {value:?}"))
    })
}

/// Triton's request compression (`Content-Encoding: gzip` or `deflate`, which tritonclient's
/// `request_compression_algorithm` sends): the decompressed body is bounded by `limit` too.
/// `Inference-Header-Content-Length` counts the decompressed JSON, as Triton reads it.
pub(super) fn decode_content(body: Bytes, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let Some(value) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let encoding = value.to_str().unwrap_or("?").trim().to_ascii_lowercase();
    let mut out = Vec::new();
    let cap = limit as u64 + 1;
    let read = match encoding.as_str() {
        "" | "identity" => return Ok(body),
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(&body[..]).take(cap).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(&body[..]).take(cap).read_to_end(&mut out),
        other => {
            return Err(ApiError::UnsupportedEncoding(format!(
                "Content-Encoding {other:?} is not supported; send gzip, deflate or an uncompressed body"
            )));
        }
    };
    read.map_err(|e| ApiError::Malformed(format!("cannot decompress the {encoding} request body: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// The whole body, refusing (413) anything over `limit` before or while reading it.
pub(super) async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge { limit }),
        Err(e) => Err(ApiError::Malformed(format!("could not read the request body: {e}"))),
    }
}
