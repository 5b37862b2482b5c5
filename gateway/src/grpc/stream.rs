//! ModelStreamInfer, Triton's bidirectional extension: the requests on one stream run
//! concurrently, each through the same `service::infer` as ModelInfer (same routing, metrics,
//! shadows) and each admitted on its own against `max_in_flight`. Each answer, or its error in
//! `error_message`, is sent when it completes, so clients match answers by `id`. A broken
//! inbound stream ends the reply stream with its status; a client that leaves cancels the
//! requests still running.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status, Streaming};

use super::proto::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use super::service::{self, GrpcPlane};
use super::status;
use crate::protocol::ApiError;

pub type InferStream = ReceiverStream<Result<ModelStreamInferResponse, Status>>;

/// Answers waiting for the client to read them, per stream.
const BUFFER: usize = 64;

/// Starts serving one stream; its answers come out of the returned stream.
pub fn start(
    plane: Arc<GrpcPlane>,
    metadata: MetadataMap,
    inbound: Streaming<ModelInferRequest>,
) -> InferStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(pump(plane, Arc::new(metadata), inbound, tx));
    ReceiverStream::new(rx)
}

type Sender = mpsc::Sender<Result<ModelStreamInferResponse, Status>>;

async fn pump(
    plane: Arc<GrpcPlane>,
    metadata: Arc<MetadataMap>,
    mut inbound: Streaming<ModelInferRequest>,
    tx: Sender,
) {
    // Dropped (aborting what still runs) when the client's side breaks.
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = running.join_next(), if !running.is_empty() => {}
            next = inbound.message() => match next {
                Ok(Some(message)) => {
                    running.spawn(one(plane.clone(), metadata.clone(), message, tx.clone()));
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(inbound_error(e, plane.max_message_bytes))).await;
                    return;
                }
            },
        }
    }
    while running.join_next().await.is_some() {}
}

/// One request of the stream, admitted on its own.
async fn one(plane: Arc<GrpcPlane>, metadata: Arc<MetadataMap>, message: ModelInferRequest, tx: Sender) {
    let (model, id) = (message.model_name.clone(), message.id.clone());
    let result = match plane.admission.admit() {
        Ok(_admitted) => service::infer(&plane, &metadata, message).await.0,
        Err(e) => Err(e),
    };
    let response = match result {
        Ok(reply) => ModelStreamInferResponse { error_message: String::new(), infer_response: Some(reply) },
        Err(e) => ModelStreamInferResponse {
            error_message: e.to_string(),
            infer_response: Some(ModelInferResponse { model_name: model, id, ..Default::default() }),
        },
    };
    let _ = tx.send(Ok(response)).await;
}

/// tonic refuses a message over the size limit with OUT_OF_RANGE in its own words: say it as
/// the HTTP front end does.
fn inbound_error(e: Status, limit: usize) -> Status {
    if e.code() == Code::OutOfRange { status::of(&ApiError::TooLarge { limit }) } else { e }
}
