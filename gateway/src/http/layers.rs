//! Tower layers in front of the data-plane handlers: request ids and admission (max in-flight,
//! shared with gRPC: beyond it 503 with `Retry-After` at once, never a queue). The request's
//! deadline is not a layer: the handlers bound every wait by the one `Deadline`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::response::{HttpResponse, error};
use crate::admission::Admission;

/// Request ids for requests that bring none: a per-process random prefix and a counter.
#[derive(Clone)]
pub struct MakeId {
    prefix: u32,
    counter: Arc<AtomicU64>,
}

impl Default for MakeId {
    fn default() -> MakeId {
        MakeId { prefix: fastrand::u32(..), counter: Arc::new(AtomicU64::new(1)) }
    }
}

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", self.prefix)).ok().map(RequestId::new)
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, std::convert::Infallible>> + Send>>;

/// At most `max_in_flight` requests in progress (counted with gRPC's); the next is refused
/// with 503 at once.
#[derive(Clone)]
pub struct AdmissionLayer {
    state: Arc<Admission>,
}

impl AdmissionLayer {
    pub fn new(state: Arc<Admission>) -> AdmissionLayer {
        AdmissionLayer { state }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { inner, state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    state: Arc<Admission>,
}

impl<S, B> Service<Request<B>> for AdmissionService<S>
where
    S: Service<Request<B>, Response = HttpResponse, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let admitted = match self.state.admit() {
            Ok(a) => a,
            Err(e) => return Box::pin(async move { Ok(error(&e)) }),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await;
            drop(admitted);
            response
        })
    }
}
