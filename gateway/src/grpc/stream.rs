//! ModelStreamInfer, Triton's bidirectional extension: the requests on one stream run
//! concurrently, each through the same `service::infer` as ModelInfer (same routing, metrics,
//! shadows) and each admitted on its own against `max_in_flight`. Each answer, or its error in
//! `error_message`, is sent when it completes, so clients match answers by `id`. A broken
//! inbound stream ends the reply stream with its status; a client that leaves cancels the
//! requests still running.
//!
//! **Backpressure.** At most `MAX_IN_FLIGHT` requests of one stream run at once; beyond that
//! the stream is not read, so HTTP/2 flow control holds the client back. A request keeps its
//! admission slot until its reply is handed to the reply stream, which holds at most
//! `MAX_IN_FLIGHT` replies: a client that writes and never reads stops being read, holds at
//! most twice `MAX_IN_FLIGHT` requests' worth of memory, and a reply that cannot be handed over
//! within `request_timeout_ms` ends the stream (the client is not reading it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;

use crate::tenants::Caller;
use tonic::{Code, Status, Streaming};

use super::proto::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use super::service::{self, GrpcPlane};
use super::status;
use crate::protocol::ApiError;

pub type InferStream = ReceiverStream<Result<ModelStreamInferResponse, Status>>;

/// Requests of one stream running at once, and replies waiting for the client to read them.
pub const MAX_IN_FLIGHT: usize = 32;

/// Starts serving one stream; its answers come out of the returned stream.
pub fn start(
    plane: Arc<GrpcPlane>,
    metadata: MetadataMap,
    caller: Option<Caller>,
    inbound: Streaming<ModelInferRequest>,
) -> InferStream {
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    tokio::spawn(pump(plane, Arc::new((metadata, caller)), inbound, tx));
    ReceiverStream::new(rx)
}

type Sender = mpsc::Sender<Result<ModelStreamInferResponse, Status>>;

/// Whether a request's reply reached the reply stream.
enum Handed {
    Over,
    /// Not within the request timeout, or the reply stream is gone: stop serving the stream.
    Stalled,
}

/// The call's metadata and tenant, shared by its requests.
type Call = Arc<(MetadataMap, Option<Caller>)>;

async fn pump(plane: Arc<GrpcPlane>, metadata: Call, mut inbound: Streaming<ModelInferRequest>, tx: Sender) {
    // Dropped (aborting what still runs) when the client's side breaks or stops reading.
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                if matches!(done, Ok(Handed::Stalled)) {
                    tracing::debug!("a ModelStreamInfer client stopped reading its replies; ending the stream");
                    return;
                }
            }
            next = inbound.message(), if running.len() < MAX_IN_FLIGHT => match next {
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
    while let Some(done) = running.join_next().await {
        if matches!(done, Ok(Handed::Stalled)) {
            return;
        }
    }
}

/// One request of the stream, admitted on its own; its admission slot is held until its reply
/// is handed to the reply stream.
async fn one(plane: Arc<GrpcPlane>, metadata: Call, message: ModelInferRequest, tx: Sender) -> Handed {
    let (model, id) = (message.model_name.clone(), message.id.clone());
    let admitted = plane.admission.admit();
    let result = match &admitted {
        Ok(_) => {
            let mut trace = service::begin_trace(&plane, &metadata.0, metadata.1.as_ref(), true);
            let served = service::infer(&plane, &metadata.0, metadata.1.as_ref(), message, &mut trace).await;
            trace.end_grpc(served.as_ref().map_or_else(|e| status::of(e).code() as i32, |_| 0));
            served.map(|served| served.reply)
        }
        Err(e) => Err(e.clone()),
    };
    let response = match result {
        Ok(reply) => ModelStreamInferResponse { error_message: String::new(), infer_response: Some(reply) },
        Err(e) => ModelStreamInferResponse {
            error_message: e.to_string(),
            infer_response: Some(ModelInferResponse { model_name: model, id, ..Default::default() }),
        },
    };
    let hand_over: Duration = plane.registry.snapshot().config.server.request_timeout;
    let handed = match tokio::time::timeout(hand_over, tx.send(Ok(response))).await {
        Ok(Ok(())) => Handed::Over,
        Ok(Err(_)) | Err(_) => Handed::Stalled,
    };
    drop(admitted);
    handed
}

/// tonic refuses a message over the size limit with OUT_OF_RANGE in its own words: say it as
/// the HTTP front end does.
fn inbound_error(e: Status, limit: usize) -> Status {
    if e.code() == Code::OutOfRange { status::of(&ApiError::TooLarge { limit }) } else { e }
}
