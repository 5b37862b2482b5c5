//! Tower layers in front of the data-plane handlers: request ids and admission: the tenant's
//! front door when `[auth]` is on (401/429, priority; the tenant is handed to the handlers
//! beside the request, not in its extensions, which would cost an allocation and a map insert
//! per request), then max in-flight (shared with gRPC: beyond it 503 with
//! `Retry-After` at once, never a queue). The request's deadline is not a layer: the handlers
//! bound every wait by the one `Deadline`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::response::{HttpResponse, error};
use crate::admission::{Admission, Admitted};
use crate::tenants::{self, Caller, Entry, FrontDoor, Pass, Waiting};

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

impl MakeId {
    /// The next id: `<prefix>-<n>` (gRPC calls take theirs here too).
    pub fn next_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n}", self.prefix)
    }
}

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&self.next_id()).ok().map(RequestId::new)
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

/// At most `max_in_flight` requests in progress (counted with gRPC's); the next is refused
/// with 503 at once.
#[derive(Clone)]
pub struct AdmissionLayer {
    state: Arc<Admission>,
    door: Arc<FrontDoor>,
}

impl AdmissionLayer {
    pub fn new(state: Arc<Admission>, door: Arc<FrontDoor>) -> AdmissionLayer {
        AdmissionLayer { state, door }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { inner, state: self.state.clone(), door: self.door.clone() }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    state: Arc<Admission>,
    door: Arc<FrontDoor>,
}

/// What the handlers are called with: the request and, with `[auth]`, its tenant.
pub type WithCaller<B> = (Request<B>, Option<Caller>);

impl<S, B> Service<Request<B>> for AdmissionService<S>
where
    S: Service<WithCaller<B>, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let entry = self.door.enter(req.uri().path(), req.headers());
        // The clone that was polled ready serves this request (tower's rule for moving
        // `inner`), and the handler's future is made inside the box rather than made here and
        // moved in: it is kilobytes, and every move copies it whole (memmove in the profiles).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let pass = match entry {
            Ok(Entry::Open) => None,
            Ok(Entry::Admitted(pass)) => Some(pass),
            Ok(Entry::Waiting(waiting)) => return self.serve_after_waiting(inner, req, waiting),
            Err(e) => return Box::pin(async move { Ok(error(&e)) }),
        };
        match tenants::take_server_place(&self.state, pass.as_ref()) {
            Ok(place) => Box::pin(serve(inner, req, pass, place)),
            Err(e) => Box::pin(async move { Ok(error(&e)) }),
        }
    }
}

impl<S> AdmissionService<S> {
    /// A batch tenant's request while online traffic is served: its place in the lane first
    /// (a refused caller never takes an in-flight place), then as any admitted request.
    fn serve_after_waiting<B>(&self, inner: S, req: Request<B>, waiting: Waiting) -> BoxFuture
    where
        S: Service<WithCaller<B>, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let (state, door) = (self.state.clone(), self.door.clone());
        Box::pin(async move {
            let placed = door.wait(waiting).await.and_then(|pass| {
                let place = tenants::take_server_place(&state, Some(&pass))?;
                Ok((pass, place))
            });
            match placed {
                Ok((pass, place)) => serve(inner, req, Some(pass), place).await,
                Err(e) => Ok(error(&e)),
            }
        })
    }
}

/// Serves an admitted request: its tenant handed to the handlers, its result counted under
/// the tenant, its places freed when it is answered.
async fn serve<S, B>(
    mut inner: S,
    req: Request<B>,
    pass: Option<Pass>,
    place: Admitted,
) -> Result<HttpResponse, Infallible>
where
    S: Service<WithCaller<B>, Response = HttpResponse, Error = Infallible>,
{
    let caller = pass.as_ref().map(|p| p.caller().clone());
    let response = inner.call((req, caller)).await;
    if let (Some(pass), Ok(r)) = (&pass, &response) {
        pass.finish(tenants::outcome_of_status(r.status()));
    }
    drop((place, pass));
    response
}
