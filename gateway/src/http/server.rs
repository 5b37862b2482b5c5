//! Accepting connections and serving HTTP/1.1 and h2c (prior knowledge) on them, with the
//! limits hyper does not set by itself, and graceful shutdown.
//!
//! - **Connection cap.** At most `max_connections` open connections per `ConnectionSlots`
//!   (the HTTP and gRPC data-plane listeners share one); a connection beyond it is closed at
//!   once, unread, and counted in `gateway_connections_refused_total`.
//! - **Header-read timeout.** A connection must complete its first request head within
//!   `header_read_timeout` of being accepted, its TLS handshake included (hyper-util's auto
//!   builder would wait forever in its protocol sniff for a client that connects and sends
//!   nothing); later HTTP/1 heads are bounded by hyper's own `header_read_timeout`.
//! - **TLS** (`tls`): the handshake runs in the connection's own task, never in the accept
//!   loop, and the TLS stream is served by the same builder; plain text is served as before,
//!   with nothing in between.
//! - **Idle timeout.** A connection is idle when no request is being handled and no response
//!   has made progress for `idle_timeout`; then it is closed. Only requests and response frames
//!   count as activity, never bytes: HTTP/2 keep-alive pings and their acknowledgements (and
//!   any other control frames) do not keep a connection open, nor does a response the client
//!   has stopped reading.
//! - **Shutdown.** Stop accepting, ask every connection to finish (HTTP/1 closes after the
//!   response in progress, HTTP/2 sends GOAWAY), wait for them up to `drain_timeout`, then
//!   close those still open.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::tls::Tls;
use crate::capped::{Capped, Held};
use crate::tasks::Tracker;
use crate::telemetry;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// Put the client's address in each request's extensions (`PeerAddr`): the admin plane
    /// records who changed what. Off on the data plane, whose requests do not need it.
    pub record_peer: bool,
}

/// The address a request's connection came from (when `ConnectionLimits::record_peer`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Open connections of the listeners that share it, capped.
pub struct ConnectionSlots {
    open: Arc<Capped>,
    refused: metrics::Counter,
}

impl ConnectionSlots {
    /// `listener` labels the metrics (`data` for HTTP and gRPC, `admin`).
    pub fn new(listener: &'static str, max: usize) -> Arc<ConnectionSlots> {
        let (refused, gauge) = telemetry::connection_metrics(listener);
        Arc::new(ConnectionSlots { open: Capped::new(max, gauge), refused })
    }

    /// One open connection's place (freed when dropped), or `None`, counted, when all are taken.
    fn take(&self) -> Option<Held> {
        let slot = self.open.take();
        if slot.is_none() {
            self.refused.increment(1);
        }
        slot
    }
}

/// Serves `service` on `listener` (over TLS when `tls` is given) until `shutdown` turns true,
/// then drains.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    slots: Arc<ConnectionSlots>,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(builder(&limits));
    let tracker = Arc::new(Tracker::default());
    let (close_now, closing) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Beyond the cap: closed at once, unread (counted in `take`).
                    let Some(slot) = slots.take() else { continue };
                    let _ = stream.set_nodelay(true);
                    let conn = Connection {
                        service: service.clone(),
                        builder: builder.clone(),
                        limits,
                        peer: limits.record_peer.then_some(PeerAddr(peer)),
                        accepted: Instant::now(),
                        shutdown: shutdown.clone(),
                        close_now: closing.clone(),
                    };
                    let tls = tls.clone();
                    let guard = tracker.enter();
                    tokio::spawn(async move {
                        match tls {
                            None => serve_connection(TokioIo::new(stream), conn).await,
                            Some(tls) => serve_tls_connection(stream, &tls, conn).await,
                        }
                        drop((slot, guard));
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, tracker.idle()).await.is_err() {
        tracing::warn!(open = tracker.count(), "drain timeout reached; closing the connections still open");
        let _ = close_now.send(true);
        tracker.idle().await;
    }
}

fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(1024);
    builder
}

/// One accepted connection's share of its listener, and when it was accepted.
struct Connection<S> {
    service: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    peer: Option<PeerAddr>,
    accepted: Instant,
    shutdown: watch::Receiver<bool>,
    close_now: watch::Receiver<bool>,
}

/// The TLS handshake, then the same serving as plain text. The handshake counts against the
/// header-read timeout (the first request head is due that long after accept, handshake
/// included), and the drain timeout ends one still in progress.
async fn serve_tls_connection<S, B>(stream: TcpStream, tls: &Tls, conn: Connection<S>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut close_now = conn.close_now.clone();
    let stream = tokio::select! {
        handshake = tls.handshake(stream, conn.limits.header_read_timeout) => match handshake {
            Ok(stream) => stream,
            Err(_) => return, // counted and logged by `handshake`
        },
        _ = close_now.changed() => return,
    };
    serve_connection(TokioIo::new(stream), conn).await;
}

async fn serve_connection<I, S, B>(io: I, conn: Connection<S>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Connection { service, builder, limits, peer, accepted, mut shutdown, mut close_now } = conn;
    let activity = Arc::new(Activity::new());
    let service = TowerToHyperService::new(Tracked { inner: service, activity: activity.clone(), peer });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let now = Instant::now();
        let mut due = activity.due(accepted, &limits);
        if due <= now {
            // Past due but a request is being handled: look again later.
            due = now + limits.idle_timeout.min(limits.header_read_timeout);
        }
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            // The drain timeout passed: close whatever is still in progress.
            _ = close_now.changed() => return,
            _ = tokio::time::sleep_until(due.into()), if !draining => {
                if activity.expired(accepted, &limits) {
                    tracing::debug!("closing a silent or idle connection");
                    return;
                }
            }
            // A request finished: the idle clock restarts from now.
            _ = activity.finished.notified(), if !draining => {}
        }
    }
}

/// When a connection last did something that counts (a request started or finished, a
/// response frame went out), and how many of its requests are being handled.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    handling: AtomicUsize,
    started: AtomicBool,
    finished: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            finished: Notify::new(),
        }
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When to check next: the first head is due `header_read_timeout` after accept; after
    /// that, a connection is idle `idle_timeout` after its last activity.
    fn due(&self, accepted: Instant, limits: &ConnectionLimits) -> Instant {
        if self.started.load(Ordering::Relaxed) {
            self.last() + limits.idle_timeout
        } else {
            accepted + limits.header_read_timeout
        }
    }

    fn expired(&self, accepted: Instant, limits: &ConnectionLimits) -> bool {
        self.handling.load(Ordering::Relaxed) == 0 && Instant::now() >= self.due(accepted, limits)
    }
}

/// Counts the connection's requests being handled (an idle check must not cut one off) and
/// notes the activity of their responses' bodies.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Option<PeerAddr>,
}

struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.finished.notify_one();
    }
}

impl<S, ReqBody, B> tower::Service<Request<ReqBody>> for Tracked<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        self.activity.handling.fetch_add(1, Ordering::Relaxed);
        self.activity.started.store(true, Ordering::Relaxed);
        self.activity.touch();
        let handling = Handling(self.activity.clone());
        let activity = self.activity.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await;
            drop(handling);
            response.map(|r| r.map(|inner| TrackedBody { inner, activity }))
        })
    }
}

/// A response body that notes each frame it yields as activity (a streaming reply that keeps
/// flowing keeps its connection open; one the client stopped reading does not).
struct TrackedBody<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.activity.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
