//! The RPCs of `inference.GRPCInferenceService`, each a short list of steps over the same
//! lookups and the same inference flow (`inference`) as the HTTP handlers, so routing, pins,
//! sticky keys, shadows, batching and metrics cannot differ between the two front ends.
//!
//! ModelInfer: the shared flow (`Inference::serve`: pick from one snapshot, decode, queue,
//! encode, shadows, metrics once), pinned by `model_version` or the pin metadata entry, sticky
//! by metadata, under the sooner of `request_timeout_ms` and the client's `grpc-timeout`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::*;
use super::status;
use super::stream::{self, InferStream};
use super::{convert, documents};
use crate::admission::Admission;
use crate::deadline::Deadline;
use crate::http::MakeId;
use crate::inference::{self, Inference, Served};
use crate::protocol::{ApiError, metadata, validate};
use crate::registry::{Registry, ServingSnapshot};
use crate::reload::Repository;
use crate::tenants::Caller;
use crate::trace::{Front as TraceFront, REQUEST_ID, TRACEPARENT, Trace};

/// What the RPCs share.
pub struct GrpcPlane {
    pub registry: Arc<Registry>,
    pub inference: Arc<Inference>,
    /// `server.max_request_bytes`: the largest message either way.
    pub max_message_bytes: usize,
    /// The in-flight limit shared with HTTP (ModelStreamInfer admits each message with it).
    pub admission: Arc<Admission>,
    /// Triton's model repository extension.
    pub repository: Arc<Repository>,
    /// Tenants (`[auth]`): checked in `Front` before admission.
    pub door: Arc<crate::tenants::FrontDoor>,
}

#[derive(Clone)]
pub struct InferenceService {
    pub plane: Arc<GrpcPlane>,
}

type Reply<T> = Result<Response<T>, Status>;

fn answer<T>(result: Result<T, ApiError>) -> Reply<T> {
    result.map(Response::new).map_err(|e| status::of(&e))
}

/// The tenant a call was admitted as (`[auth]`), from the request's extensions.
fn caller<T>(request: &Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// 403 unless the call's tenant (if any) may call `model`.
fn may_call<T>(request: &Request<T>, model: &str) -> Result<(), ApiError> {
    caller(request).map_or(Ok(()), |c| c.may_call(model))
}

/// The repository API changes what every tenant is served: only a tenant of every model.
fn may_use_repository<T>(request: &Request<T>) -> Result<(), Status> {
    caller(request).map_or(Ok(()), |c| c.may_call_all("the model repository API")).map_err(|e| status::of(&e))
}

/// An optional version field: empty means none.
fn version_field(v: &str) -> Result<Option<u64>, ApiError> {
    (!v.is_empty()).then(|| validate::parse_version(v)).transpose()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Reply<ServerLiveResponse> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    /// Every configured model ready (Triton's strict readiness), as HTTP's 200/503.
    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Reply<ServerReadyResponse> {
        Ok(Response::new(ServerReadyResponse { ready: self.plane.registry.snapshot().all_ready() }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Reply<ModelReadyResponse> {
        let r = request.get_ref();
        answer(may_call(&request, &r.name).and_then(|()| model_ready(&self.plane.registry.snapshot(), r)))
    }

    async fn server_metadata(&self, _: Request<ServerMetadataRequest>) -> Reply<ServerMetadataResponse> {
        Ok(Response::new(documents::server_metadata()))
    }

    async fn model_metadata(&self, request: Request<ModelMetadataRequest>) -> Reply<ModelMetadataResponse> {
        let r = request.get_ref();
        answer(may_call(&request, &r.name).and_then(|()| model_metadata(&self.plane.registry.snapshot(), r)))
    }

    async fn model_config(&self, request: Request<ModelConfigRequest>) -> Reply<ModelConfigResponse> {
        let r = request.get_ref();
        answer(may_call(&request, &r.name).and_then(|()| model_config(&self.plane.registry.snapshot(), r)))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Reply<ModelStatisticsResponse> {
        let r = request.get_ref();
        let allowed = match r.name.as_str() {
            "" => caller(&request).map_or(Ok(()), |c| c.may_call_all("statistics of every model")),
            name => may_call(&request, name),
        };
        answer(allowed.and_then(|()| model_statistics(&self.plane.registry.snapshot(), r)))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Reply<RepositoryIndexResponse> {
        may_use_repository(&request)?;
        let models = self
            .plane
            .repository
            .index(request.get_ref().ready)
            .into_iter()
            .map(|e| repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.to_string(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Reply<RepositoryModelLoadResponse> {
        may_use_repository(&request)?;
        let r = request.get_ref();
        if let Some(key) = r.parameters.keys().find(|k| *k == "config" || k.starts_with("file:")) {
            return Err(status::of(&ApiError::Malformed(format!(
                "load parameter {key:?} is not supported: the model's config.pbtxt and files are read from the repository"
            ))));
        }
        let tenant = caller(&request).map(|c| c.0.name());
        answer(
            self.plane.repository.load(&r.model_name, tenant).await.map(|()| RepositoryModelLoadResponse {}),
        )
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Reply<RepositoryModelUnloadResponse> {
        may_use_repository(&request)?;
        let model = &request.get_ref().model_name;
        let tenant = caller(&request).map(|c| c.0.name());
        answer(self.plane.repository.unload(model, tenant).await.map(|()| RepositoryModelUnloadResponse {}))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Reply<ModelInferResponse> {
        let (mut metadata, extensions, message) = request.into_parts();
        let caller = extensions.get::<Caller>();
        let request_id = request_id(&mut metadata);
        let mut trace = begin_trace(&self.plane, &metadata, caller, false);
        let served =
            infer(&self.plane, &metadata, caller, message, &mut trace).await.map_err(|e| status::of(&e));
        let traceparent = trace.traceparent().and_then(|v| MetadataValue::try_from(v.as_bytes()).ok());
        trace.end_grpc(served.as_ref().map_or_else(|s| s.code() as i32, |_| 0));
        let stamp = |headers: &mut MetadataMap| {
            headers.insert(REQUEST_ID, request_id);
            if let Some(traceparent) = traceparent {
                headers.insert(TRACEPARENT, traceparent);
            }
        };
        let served = match served {
            Ok(served) => served,
            Err(mut status) => {
                stamp(status.metadata_mut());
                return Err(status);
            }
        };
        let mut response = Response::new(served.reply);
        let headers = response.metadata_mut();
        headers.insert("x-model-version", MetadataValue::from(served.version));
        headers.insert("x-route-reason", MetadataValue::from_static(served.reason.as_str()));
        headers.insert("x-gateway-generation", MetadataValue::from(served.generation));
        stamp(headers);
        Ok(response)
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        let (mut metadata, extensions, inbound) = request.into_parts();
        let caller = extensions.get::<Caller>().cloned();
        // One request id for the stream (answered in its opening metadata); each message gets
        // its own trace span under the stream's `traceparent`.
        let request_id = request_id(&mut metadata);
        let mut response = Response::new(stream::start(self.plane.clone(), metadata, caller, inbound));
        response.metadata_mut().insert(REQUEST_ID, request_id);
        Ok(response)
    }
}

fn model_ready(snapshot: &ServingSnapshot, r: &ModelReadyRequest) -> Result<ModelReadyResponse, ApiError> {
    let version = version_field(&r.version)?;
    let m = inference::lookup(snapshot, &r.name)?;
    Ok(ModelReadyResponse { ready: inference::is_ready(m, version) })
}

fn model_metadata(
    snapshot: &ServingSnapshot,
    r: &ModelMetadataRequest,
) -> Result<ModelMetadataResponse, ApiError> {
    let version = version_field(&r.version)?;
    let m = inference::lookup(snapshot, &r.name)?;
    let v = inference::described_version(m, version)?;
    let versions = inference::listed_versions(m, version);
    Ok(documents::model_metadata(&metadata::model(&m.name, &versions, &v.signature)))
}

fn model_config(snapshot: &ServingSnapshot, r: &ModelConfigRequest) -> Result<ModelConfigResponse, ApiError> {
    let version = version_field(&r.version)?;
    let m = inference::lookup(snapshot, &r.name)?;
    let v = inference::described_version(m, version)?;
    Ok(ModelConfigResponse { config: Some(documents::model_config(&inference::triton_config(m, v))) })
}

/// Every model's statistics for an empty name; otherwise that model's (one version's, when
/// one is given).
fn model_statistics(
    snapshot: &ServingSnapshot,
    r: &ModelStatisticsRequest,
) -> Result<ModelStatisticsResponse, ApiError> {
    let stats = if r.name.is_empty() {
        inference::all_statistics(snapshot)
    } else {
        let version = version_field(&r.version)?;
        inference::statistics(inference::lookup(snapshot, &r.name)?, version)?
    };
    Ok(ModelStatisticsResponse { model_stats: stats.iter().map(documents::model_statistics).collect() })
}

/// One inference through the shared flow: a non-empty `model_version` pins, else the model's
/// pin metadata entry, else its split (sticky key from metadata); bounded by the sooner of
/// `request_timeout_ms` and the client's `grpc-timeout`.
pub async fn infer(
    plane: &GrpcPlane,
    metadata: &MetadataMap,
    caller: Option<&Caller>,
    message: ModelInferRequest,
    trace: &mut Trace,
) -> Result<Served<ModelInferResponse>, ApiError> {
    let snapshot = plane.registry.snapshot();
    let model = message.model_name.clone();
    let checked = inference::check_model_name(&model).and_then(|()| version_field(&message.model_version));
    let allowed = |pinned: Option<u64>| -> Result<Option<u64>, ApiError> {
        if let Some(c) = caller {
            c.may_call(&model)?;
            c.may_pin(&snapshot, &model, pinned.is_some(), |h| metadata.get(h).map(|v| v.as_bytes()))?;
        }
        Ok(pinned)
    };
    let pinned = match checked.and_then(allowed) {
        Ok(pinned) => pinned,
        Err(e) => {
            let request_id = metadata.get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::debug!(model, request_id, error = %e, "refused");
            inference::count_refused(&snapshot, &model, &e);
            trace.finished(inference::outcome_of(&e).as_str(), Some(&e), false);
            return Err(e);
        }
    };
    let deadline = Deadline::after(snapshot.config.server.request_timeout).or_client(grpc_timeout(metadata));
    let limit = plane.max_message_bytes;
    plane
        .inference
        .serve(
            &snapshot,
            &model,
            pinned,
            |h| metadata.get(h).map(|v| v.as_bytes()),
            deadline,
            trace,
            caller.map(|c| c.0.name()),
            // Takes the message: its raw input buffers are freed once decoded, before the run.
            move |signature, limits| convert::decode_request(&message, signature, limits),
            |version, id, outputs, chosen| {
                let id = id.map(str::to_string);
                let reply = convert::encode_response(&version.model, version.version, id, outputs, chosen);
                let size = prost::Message::encoded_len(&reply);
                if size > limit {
                    return Err(ApiError::ReplyTooLarge { size, limit });
                }
                Ok(reply)
            },
        )
        .await
}

/// Request ids for calls that bring no `x-request-id`.
static IDS: LazyLock<MakeId> = LazyLock::new(MakeId::default);

/// The call's request id: the client's `x-request-id`, else a new one, which is put in
/// `metadata` so the shared flow logs it as it logs a client's.
fn request_id(metadata: &mut MetadataMap) -> MetadataValue<Ascii> {
    if let Some(id) = metadata.get(REQUEST_ID) {
        return id.clone();
    }
    let id = MetadataValue::try_from(IDS.next_id()).unwrap_or_else(|_| MetadataValue::from_static("-"));
    metadata.insert(REQUEST_ID, id.clone());
    id
}

/// Begins an inference call's trace from its metadata (`traceparent`, `tracestate`,
/// `x-request-id`), with the tenant when one is known.
pub fn begin_trace(
    plane: &GrpcPlane,
    metadata: &MetadataMap,
    caller: Option<&Caller>,
    stream: bool,
) -> Trace {
    let mut trace =
        plane.inference.tracer.begin(TraceFront::Grpc { stream }, |h| metadata.get(h).map(|v| v.as_bytes()));
    if trace.is_sampled()
        && let Some(caller) = caller
    {
        trace.set("gateway.tenant", caller.0.name().to_string());
    }
    trace
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2 spec.
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse_and_nonsense_is_ignored() {
        let parse = |v: &'static str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", MetadataValue::from_static(v));
            grpc_timeout(&m)
        };
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
