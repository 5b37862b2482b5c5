//! The RPCs of `inference.GRPCInferenceService`, each a short list of steps over the same
//! lookups and the same inference flow (`inference`) as the HTTP handlers, so routing, pins,
//! sticky keys, shadows, batching and metrics cannot differ between the two front ends.
//!
//! ModelInfer: the shared flow (`Inference::serve`: pick from one snapshot, decode, queue,
//! encode, shadows, metrics once), pinned by `model_version` or the pin metadata entry, sticky
//! by metadata, under the sooner of `request_timeout_ms` and the client's `grpc-timeout`.

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::*;
use super::status;
use super::stream::{self, InferStream};
use super::{convert, documents};
use crate::admission::Admission;
use crate::deadline::Deadline;
use crate::inference::{self, Inference, Served};
use crate::protocol::{ApiError, metadata, validate};
use crate::registry::{Registry, ServingSnapshot};
use crate::reload::Repository;

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
}

#[derive(Clone)]
pub struct InferenceService {
    pub plane: Arc<GrpcPlane>,
}

type Reply<T> = Result<Response<T>, Status>;

fn answer<T>(result: Result<T, ApiError>) -> Reply<T> {
    result.map(Response::new).map_err(|e| status::of(&e))
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
        answer(model_ready(&self.plane.registry.snapshot(), request.get_ref()))
    }

    async fn server_metadata(&self, _: Request<ServerMetadataRequest>) -> Reply<ServerMetadataResponse> {
        Ok(Response::new(documents::server_metadata()))
    }

    async fn model_metadata(&self, request: Request<ModelMetadataRequest>) -> Reply<ModelMetadataResponse> {
        answer(model_metadata(&self.plane.registry.snapshot(), request.get_ref()))
    }

    async fn model_config(&self, request: Request<ModelConfigRequest>) -> Reply<ModelConfigResponse> {
        answer(model_config(&self.plane.registry.snapshot(), request.get_ref()))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Reply<ModelStatisticsResponse> {
        answer(model_statistics(&self.plane.registry.snapshot(), request.get_ref()))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Reply<RepositoryIndexResponse> {
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
        let r = request.get_ref();
        if let Some(key) = r.parameters.keys().find(|k| *k == "config" || k.starts_with("file:")) {
            return Err(status::of(&ApiError::Malformed(format!(
                "load parameter {key:?} is not supported: the model's config.pbtxt and files are read from the repository"
            ))));
        }
        answer(self.plane.repository.load(&r.model_name).await.map(|()| RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Reply<RepositoryModelUnloadResponse> {
        let model = &request.get_ref().model_name;
        answer(self.plane.repository.unload(model).await.map(|()| RepositoryModelUnloadResponse {}))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Reply<ModelInferResponse> {
        let (metadata, _, message) = request.into_parts();
        let served = infer(&self.plane, &metadata, message).await.map_err(|e| status::of(&e))?;
        let mut response = Response::new(served.reply);
        let headers = response.metadata_mut();
        headers.insert("x-model-version", MetadataValue::from(served.version));
        headers.insert("x-route-reason", MetadataValue::from_static(served.reason.as_str()));
        headers.insert("x-gateway-generation", MetadataValue::from(served.generation));
        Ok(response)
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        let (metadata, _, inbound) = request.into_parts();
        Ok(Response::new(stream::start(self.plane.clone(), metadata, inbound)))
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
    message: ModelInferRequest,
) -> Result<Served<ModelInferResponse>, ApiError> {
    let snapshot = plane.registry.snapshot();
    let model = message.model_name.clone();
    let pinned =
        match inference::check_model_name(&model).and_then(|()| version_field(&message.model_version)) {
            Ok(pinned) => pinned,
            Err(e) => {
                tracing::debug!(model, error = %e, "refused");
                inference::count_refused(&snapshot, &model, &e);
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
