//! `inference.GRPCInferenceService` over one multiplexed HTTP/2 channel (tonic reconnects it
//! when it breaks), inputs sent as raw contents; answers decoded raw or typed through the same
//! checks as a gRPC request's inputs.

use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::{CallError, ChildSpanHeaders, Failure, metadata_signature};
use crate::config::RemoteConfig;
use crate::grpc::convert::decode_response;
use crate::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::grpc::proto::model_metadata_response::TensorMetadata;
use crate::grpc::proto::{ModelInferRequest, ModelMetadataRequest, ModelReadyRequest};
use crate::protocol::binary;
use crate::tensor::{ModelSignature, Tensor};

pub struct GrpcClient {
    client: GrpcInferenceServiceClient<Channel>,
    model: String,
    version: String,
}

impl GrpcClient {
    /// Call inside the runtime the calls will run on (the channel's worker starts there).
    pub fn new(config: &RemoteConfig) -> Result<GrpcClient, String> {
        let url = config.url.replacen("grpc://", "http://", 1);
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("not a gRPC endpoint {url}: {e}"))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30));
        let client = GrpcInferenceServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(super::http::MAX_ANSWER_BYTES);
        Ok(GrpcClient {
            client,
            model: config.model.clone(),
            version: config.version.clone().unwrap_or_default(),
        })
    }

    pub async fn infer(
        &self,
        inputs: &[Tensor],
        outputs: &[String],
        trace: Option<&ChildSpanHeaders>,
    ) -> Result<Vec<Tensor>, CallError> {
        let message = ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone(),
            inputs: inputs
                .iter()
                .map(|t| InferInputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype().as_str().to_string(),
                    shape: t.shape.iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|name| InferRequestedOutputTensor { name: name.clone(), ..Default::default() })
                .collect(),
            raw_input_contents: inputs
                .iter()
                .map(|t| {
                    let mut out = Vec::with_capacity(binary::encoded_len(&t.data));
                    binary::encode(&t.data, &mut out);
                    bytes::Bytes::from(out)
                })
                .collect(),
            ..Default::default()
        };
        let mut request = tonic::Request::new(message);
        if let Some(t) = trace {
            let metadata = request.metadata_mut();
            for (name, value) in std::iter::once(("traceparent", Some(&t.traceparent)))
                .chain([("tracestate", t.tracestate.as_ref())])
            {
                if let Some(v) = value.and_then(|v| v.to_str().ok()?.parse().ok()) {
                    metadata.insert(name, v);
                }
            }
        }
        let answer = self.client.clone().model_infer(request).await.map_err(|s| status_error(&s))?;
        decode_response(&answer.into_inner()).map_err(|e| CallError::Malformed(e.to_string()))
    }

    pub async fn metadata(&self) -> Result<ModelSignature, CallError> {
        let request = ModelMetadataRequest { name: self.model.clone(), version: self.version.clone() };
        let doc =
            self.client.clone().model_metadata(request).await.map_err(|s| status_error(&s))?.into_inner();
        let parts = |t: TensorMetadata| (t.name, t.datatype, t.shape);
        metadata_signature(doc.inputs.into_iter().map(parts), doc.outputs.into_iter().map(parts))
    }

    pub async fn ready(&self) -> Result<(), CallError> {
        let request = ModelReadyRequest { name: self.model.clone(), version: self.version.clone() };
        let ready =
            self.client.clone().model_ready(request).await.map_err(|s| status_error(&s))?.into_inner();
        if ready.ready {
            Ok(())
        } else {
            Err(CallError::Status {
                status: "not ready".to_string(),
                failure: Failure::Busy,
                message: format!("model '{}' is not ready there", self.model),
            })
        }
    }
}

/// A gRPC error status, as the gateway takes it.
fn status_error(s: &tonic::Status) -> CallError {
    let status = format!("gRPC {:?}", s.code());
    let message = s.message().to_string();
    let failure = match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            return CallError::Refused { status, message };
        }
        // tonic reports a connection it could not make as Unavailable with a transport source.
        Code::Unavailable if is_connect(s) => return CallError::Connect(format!("{status}: {message}")),
        Code::Unavailable | Code::ResourceExhausted => Failure::Busy,
        Code::DeadlineExceeded => Failure::TimedOut,
        _ => Failure::Failed,
    };
    CallError::Status { status, failure, message }
}

/// Whether the status comes from a connection that could not be made (nothing was sent).
fn is_connect(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("Connection refused")
            || text.contains("error trying to connect")
        {
            return true;
        }
        source = e.source();
    }
    false
}
