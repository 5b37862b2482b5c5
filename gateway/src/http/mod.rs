//! The HTTP front end (HTTP/1.1 and h2c on `listen`, or both over TLS with `[server.tls]`):
//! connection handling, TLS, the tower layers, the V2 router and handlers. Uses `protocol`,
//! `registry` and (later) `shadow` and `monitor`; never names ONNX Runtime.

mod explain;
mod handlers;
mod layers;
pub mod response;
mod router;
mod server;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use handlers::DataPlane;
pub use layers::{AdmissionLayer, MakeId};
pub use router::{Endpoint, ModelAction, route};
pub use server::{ConnectionLimits, ConnectionSlots, PeerAddr, serve};
pub use tls::Tls;

use crate::admission::Admission;
use crate::config::ServerConfig;

/// The data-plane service: request id → span → admission (max in-flight) → handler.
pub fn data_service(
    plane: Arc<DataPlane>,
    admission: Arc<Admission>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<
        impl Body<Data = Bytes, Error = impl Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeId::default()))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Incoming>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), id)
                })
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(AdmissionLayer::new(admission, plane.door.clone()))
        .service_fn(move |(req, caller)| {
            let plane = plane.clone();
            async move { Ok::<_, Infallible>(handlers::handle(plane, req, caller).await) }
        })
}

pub fn connection_limits(server: &ServerConfig) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        drain_timeout: server.drain_timeout,
        record_peer: false,
    }
}
