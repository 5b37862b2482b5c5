//! Tower layers in front of the data-plane handlers: request ids, admission (max in-flight,
//! shared with gRPC: beyond it 503 with `Retry-After` at once, never a queue) and the request
//! deadline (504).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request};
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::response::{HttpResponse, error};
use crate::admission::Admission;
use crate::protocol::ApiError;

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

/// When the request must be answered by; handlers pass it on to the queue.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// Puts a `Deadline` on every request and answers 504 if the handler has not finished by then.
#[derive(Clone)]
pub struct DeadlineLayer {
    pub timeout: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner, timeout: self.timeout }
    }
}

#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let deadline = Instant::now() + self.timeout;
        req.extensions_mut().insert(Deadline(deadline));
        let timeout = self.timeout;
        let fut = self.inner.call(req);
        // A backstop: handlers bound their own work by `deadline` and answer first.
        let backstop = deadline + Duration::from_millis(50);
        Box::pin(async move {
            match tokio::time::timeout_at(backstop.into(), fut).await {
                Ok(response) => response,
                Err(_) => Ok(error(&ApiError::TimedOut(format!(
                    "the request did not finish within request_timeout_ms ({} ms)",
                    timeout.as_millis()
                )))),
            }
        })
    }
}
