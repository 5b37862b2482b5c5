//! Accepting connections and serving HTTP/1.1 and h2c (prior knowledge) on them, with the
//! timeouts hyper does not set by itself, and graceful shutdown.
//!
//! - **Header-read timeout.** A connection must complete its first request head within
//!   `header_read_timeout` of being accepted (hyper-util's auto builder would wait forever in
//!   its protocol sniff for a client that connects and sends nothing); later HTTP/1 heads are
//!   bounded by hyper's own `header_read_timeout`.
//! - **Idle timeout.** A connection with no byte moving and no request in progress for
//!   `idle_timeout` is closed.
//! - **Shutdown.** Stop accepting, ask every connection to finish (HTTP/1 closes after the
//!   response in progress, HTTP/2 sends GOAWAY), wait for them up to `drain_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::tasks::Tracker;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serves `service` on `listener` until `shutdown` turns true, then drains.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(builder(&limits));
    let tracker = Arc::new(Tracker::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = serve_connection(stream, service.clone(), builder.clone(), limits, shutdown.clone());
                    let guard = tracker.enter();
                    tokio::spawn(async move {
                        conn.await;
                        drop(guard);
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

async fn serve_connection<S, B>(
    stream: TcpStream,
    service: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ActivityIo { inner: stream, activity: activity.clone() });
    let service = TowerToHyperService::new(Counted { inner: service, activity: activity.clone() });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let accepted = Instant::now();
    let mut draining = false;
    loop {
        let now = Instant::now();
        let mut deadline = activity.deadline(accepted, &limits);
        if deadline <= now {
            // Past due but a request is in progress: look again later.
            deadline = now + limits.idle_timeout.min(limits.header_read_timeout);
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
            _ = tokio::time::sleep_until(deadline.into()), if !draining => {
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

/// When a connection last moved a byte, and how many requests it has in progress.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    started: AtomicU64,
    finished: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
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
    /// that, a connection is idle `idle_timeout` after its last byte.
    fn deadline(&self, accepted: Instant, limits: &ConnectionLimits) -> Instant {
        if self.started.load(Ordering::Relaxed) == 0 {
            accepted + limits.header_read_timeout
        } else {
            self.last() + limits.idle_timeout
        }
    }

    fn expired(&self, accepted: Instant, limits: &ConnectionLimits) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.deadline(accepted, limits)
    }
}

/// The socket, noting every byte that moves.
struct ActivityIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts the connection's requests in progress (an idle check must not cut one off).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.finished.notify_one();
    }
}

impl<S, ReqBody> tower::Service<Request<ReqBody>> for Counted<S>
where
    S: tower::Service<Request<ReqBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightGuard(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            drop(guard);
            result
        })
    }
}
