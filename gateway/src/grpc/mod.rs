//! The gRPC front end: the Open Inference Protocol's `inference.GRPCInferenceService` (and
//! Triton's ModelConfig and ModelStreamInfer) on `server.grpc_listen`.
//!
//! Owns the service's wiring: the generated server (message size limits both ways =
//! `max_request_bytes`) behind one tower layer (the in-flight limit shared with HTTP, a debug
//! span per call, and the size refusal said in our words). Connections are served by
//! `http::serve`, the same accept loop, timeouts and graceful drain as the HTTP listener: gRPC
//! is HTTP/2 (prior knowledge). The RPCs are in `service`, tensors in `convert`, metadata and
//! config in `documents`, error codes in `status`, streaming in `stream`. Uses `protocol`,
//! `registry`, `inference`; never names ONNX Runtime.

pub(crate) mod convert;
mod documents;
mod service;
mod status;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

pub use convert::{decode_request, encode_response};
pub use service::{GrpcPlane, InferenceService};

use crate::admission::{Admission, Admitted};
use crate::http::{ConnectionLimits, ConnectionSlots, Tls};
use crate::protocol::ApiError;
use crate::telemetry::{self, Outcome};
use crate::tenants::{self, Entry, FrontDoor, Pass, Waiting};

/// The messages, the server trait and the client, generated from `proto/inference.proto` by
/// `build.rs`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::GrpcInferenceServiceServer;

/// The RPC that admits each of its messages on its own instead of the whole call.
const STREAM_PATH: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// The service for one listener: admission → span → generated server → our RPCs.
pub fn service(plane: Arc<GrpcPlane>) -> Front<GrpcInferenceServiceServer<InferenceService>> {
    let limit = plane.max_message_bytes;
    let admission = plane.admission.clone();
    let door = plane.door.clone();
    let inner = GrpcInferenceServiceServer::new(InferenceService { plane })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    Front { inner, admission, door, limit }
}

/// Serves gRPC on `listener` (over TLS when `tls` is given; gRPC clients get h2 by ALPN) until
/// `shutdown` turns true, then drains like the HTTP listener.
pub async fn serve(
    listener: TcpListener,
    plane: Arc<GrpcPlane>,
    limits: ConnectionLimits,
    slots: Arc<ConnectionSlots>,
    tls: Option<Arc<Tls>>,
    shutdown: watch::Receiver<bool>,
) {
    crate::http::serve(listener, service(plane), limits, slots, tls, shutdown).await;
}

/// In front of the generated server: the shared in-flight limit (UNAVAILABLE beyond it), a
/// span per call, and the one status tonic makes up by itself.
#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    admission: Arc<Admission>,
    door: Arc<FrontDoor>,
    limit: usize,
}

type GrpcResponse = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Front<S>
where
    S: tower::Service<http::Request<B>, Response = GrpcResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let entry = self.door.enter(req.uri().path(), req.headers());
        let pass = match entry {
            Ok(Entry::Open) => None,
            Ok(Entry::Admitted(pass)) => Some(pass),
            Ok(Entry::Waiting(waiting)) => return self.call_after_waiting(req, waiting),
            Err(e) => return Box::pin(async move { Ok(status::of(&e).into_http()) }),
        };
        let span = tracing::debug_span!("grpc", method = %req.uri().path());
        let admitted = match admit_call(&self.admission, req.uri().path(), pass.as_ref()) {
            Ok(a) => a,
            Err(e) => return Box::pin(async move { Ok(status::of(&e).into_http()) }),
        };
        if let Some(pass) = &pass {
            req.extensions_mut().insert(pass.caller().clone());
        }
        let call = self.inner.call(req);
        Box::pin(answered(call, pass, admitted, self.limit).instrument(span))
    }
}

impl<S> Front<S> {
    /// A batch tenant's call while online traffic is served: its place in the lane first, then
    /// as any admitted call. The tenant rides in the request's extensions (tonic hands them to
    /// the RPCs), and the call's result is counted under it. A ModelStreamInfer call is one
    /// request to the front door.
    fn call_after_waiting<B>(
        &mut self,
        mut req: http::Request<B>,
        waiting: Waiting,
    ) -> Pin<Box<dyn Future<Output = Result<GrpcResponse, Infallible>> + Send>>
    where
        S: tower::Service<http::Request<B>, Response = GrpcResponse, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let span = tracing::debug_span!("grpc", method = %req.uri().path());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (admission, door, limit) = (self.admission.clone(), self.door.clone(), self.limit);
        Box::pin(
            async move {
                let pass = match door.wait(waiting).await {
                    Ok(p) => p,
                    Err(e) => return Ok(status::of(&e).into_http()),
                };
                let admitted = match admit_call(&admission, req.uri().path(), Some(&pass)) {
                    Ok(a) => a,
                    Err(e) => return Ok(status::of(&e).into_http()),
                };
                req.extensions_mut().insert(pass.caller().clone());
                answered(inner.call(req), Some(pass), admitted, limit).await
            }
            .instrument(span),
        )
    }
}

/// A place in the server's in-flight limit, or the answer refusing it (counted under the
/// tenant). A ModelStreamInfer call takes none here: each of its messages takes its own.
fn admit_call(admission: &Admission, path: &str, pass: Option<&Pass>) -> Result<Option<Admitted>, ApiError> {
    if path == STREAM_PATH {
        return Ok(None);
    }
    tenants::take_server_place(admission, pass).map(Some)
}

/// An admitted call's answer: its result counted under its tenant, its places freed, and
/// tonic's own size refusal said in our words.
async fn answered(
    call: impl Future<Output = Result<GrpcResponse, Infallible>>,
    pass: Option<Pass>,
    admitted: Option<Admitted>,
    limit: usize,
) -> Result<GrpcResponse, Infallible> {
    let response = call.await?;
    if let Some(pass) = &pass {
        pass.finish(grpc_outcome(&response));
    }
    drop((admitted, pass));
    Ok(too_large_in_our_words(response, limit))
}

/// A call's result from its `grpc-status` header: our RPCs' errors are trailers-only responses
/// that carry it there; a reply whose status comes in the trailers is counted as answered.
fn grpc_outcome(response: &GrpcResponse) -> Outcome {
    use tonic::Code;
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from);
    match code {
        Code::Ok => Outcome::Ok,
        Code::Unavailable | Code::ResourceExhausted => Outcome::Rejected,
        Code::DeadlineExceeded => Outcome::Timeout,
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => Outcome::ServerError,
        _ => Outcome::ClientError,
    }
}

/// tonic refuses a request message over `max_decoding_message_size` itself, before any RPC
/// runs, with OUT_OF_RANGE and its own wording. Our RPCs never answer OUT_OF_RANGE, so that
/// code in a trailers-only response is that refusal: answer it as HTTP does (same message,
/// RESOURCE_EXHAUSTED) and count it.
fn too_large_in_our_words(response: GrpcResponse, limit: usize) -> GrpcResponse {
    let out_of_range = i32::from(tonic::Code::OutOfRange).to_string();
    if response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == out_of_range.as_bytes()) {
        let e = ApiError::TooLarge { limit };
        tracing::debug!(error = %e, "refused");
        telemetry::count_unrouted(None, Outcome::ClientError);
        return status::of(&e).into_http();
    }
    response
}
