//! Remote versions: a version served by another Open Inference Protocol server (KServe V2 over
//! HTTP with binary tensors, or gRPC with raw contents), which the registry serves exactly like
//! a local one. Owns the client side: pooled keep-alive connections, the concurrency limit, the
//! per-call timeout inside the request's own deadline, one retry where nothing reached the
//! server, outlier ejection and active health checks (`health`), and the upstream metrics.
//!
//! Every call runs on the runtime the remote was connected from (the serving runtime; a small
//! one of its own for `check-config`), so a caller on any thread (the validation gate's, a
//! request's) only awaits its answer. Must not depend on routing, the registry or the front ends.

mod grpc;
mod health;
mod http;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

pub use health::Health;

use crate::config::{RemoteConfig, RemoteProtocol};
use crate::tensor::{DataType, ModelSignature, Tensor, TensorSpec};
use crate::trace::{JobTrace, Kind};

/// How a call to the remote went wrong, as the gateway answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made, or it broke before an answer (502).
    Unreachable,
    /// The remote answered with a server error or an answer that is not one (502).
    Failed,
    /// No answer within the call's time (504).
    TimedOut,
    /// The gateway's own limit on calls in flight to it, or the remote said it is
    /// overloaded (503).
    Busy,
}

/// One call's error, before it is mapped to the gateway's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing reached the server: safe to retry.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The request may have reached the server and the connection broke.
    #[error("the connection failed: {0}")]
    Transport(String),
    /// The remote refused the request as the client's mistake (HTTP 4xx, gRPC INVALID_ARGUMENT).
    #[error("refused the request ({status}): {message}")]
    Refused { status: String, message: String },
    /// The remote answered with an error of its own.
    #[error("answered {status}: {message}")]
    Status { status: String, failure: Failure, message: String },
    /// The answer could not be read.
    #[error("sent an answer that cannot be read: {0}")]
    Malformed(String),
}

/// Why a remote version could not be added.
#[derive(Debug, thiserror::Error)]
#[error("remote {url}: {reason}")]
pub struct ConnectError {
    pub url: String,
    pub reason: String,
}

/// A finished call: the outputs in the order the remote sent them.
pub type CallResult = Result<Vec<Tensor>, RemoteError>;

/// What a call to a remote version came to, for the caller to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The client's request is the problem (the remote said so): a 400, not counted against it.
    #[error("{0}")]
    Refused(String),
    #[error("{reason}")]
    Failed { failure: Failure, reason: String },
}

// One per remote version, built once and never moved: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    Http(http::HttpClient),
    Grpc(grpc::GrpcClient),
}

impl Client {
    async fn infer(
        &self,
        inputs: &[Tensor],
        outputs: &[String],
        trace: Option<&ChildSpanHeaders>,
    ) -> Result<Vec<Tensor>, CallError> {
        match self {
            Client::Http(c) => c.infer(inputs, outputs, trace).await,
            Client::Grpc(c) => c.infer(inputs, outputs, trace).await,
        }
    }

    async fn ready(&self) -> Result<(), CallError> {
        match self {
            Client::Http(c) => c.ready().await,
            Client::Grpc(c) => c.ready().await,
        }
    }
}

/// `traceparent`/`tracestate` to send with a call made for a sampled request.
pub struct ChildSpanHeaders {
    pub traceparent: ::http::HeaderValue,
    pub tracestate: Option<::http::HeaderValue>,
}

/// The upstream series of one remote version.
struct Metrics {
    ok: Counter,
    client_error: Counter,
    server_error: Counter,
    connect_error: Counter,
    timeout: Counter,
    busy: Counter,
    retries: Counter,
    in_flight: Gauge,
}

impl Metrics {
    fn new(model: &str, version: u64) -> Metrics {
        let v = version.to_string();
        let outcome = |o: &'static str| metrics::counter!("gateway_upstream_requests_total", "model" => model.to_string(), "version" => v.clone(), "outcome" => o);
        Metrics {
            ok: outcome("ok"),
            client_error: outcome("client_error"),
            server_error: outcome("server_error"),
            connect_error: outcome("connect_error"),
            timeout: outcome("timeout"),
            busy: outcome("busy"),
            retries: metrics::counter!("gateway_upstream_retries_total", "model" => model.to_string(), "version" => v.clone()),
            in_flight: metrics::gauge!("gateway_upstream_in_flight", "model" => model.to_string(), "version" => v),
        }
    }
}

/// A call's place under `max_in_flight`, counted in the in-flight gauge until dropped.
struct InFlight {
    gauge: Gauge,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// One remote version: its client, limit and health.
pub struct Remote {
    pub model: String,
    pub version: u64,
    pub config: RemoteConfig,
    client: Client,
    /// The output names to ask for (all of the remote's, in its metadata's order).
    outputs: Vec<String>,
    limit: Arc<Semaphore>,
    pub health: Arc<Health>,
    runtime: Handle,
    metrics: Metrics,
    /// The active health checks; stopped when the version is dropped.
    checks: Option<tokio::task::AbortHandle>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(checks) = &self.checks {
            checks.abort();
        }
    }
}

impl Remote {
    /// Builds the client and reads the remote's metadata (its signature). Blocking: call from a
    /// blocking thread or outside any runtime. Fails when the remote cannot be reached or does
    /// not serve the model.
    pub fn connect(
        model: &str,
        version: u64,
        config: &RemoteConfig,
    ) -> Result<(Arc<Remote>, ModelSignature), ConnectError> {
        let error = |reason: String| ConnectError { url: config.url.clone(), reason };
        let runtime = runtime().map_err(error)?;
        let client = {
            let _entered = runtime.enter();
            match config.protocol {
                RemoteProtocol::Http => Client::Http(http::HttpClient::new(config).map_err(error)?),
                RemoteProtocol::Grpc => Client::Grpc(grpc::GrpcClient::new(config).map_err(error)?),
            }
        };
        let wait = config.connect_timeout + Duration::from_secs(5);
        let signature = runtime
            .block_on(async {
                let fetch = async {
                    match &client {
                        Client::Http(c) => c.metadata().await,
                        Client::Grpc(c) => c.metadata().await,
                    }
                };
                tokio::time::timeout(wait, fetch).await
            })
            .map_err(|_| error(format!("no metadata within {} ms", wait.as_millis())))?
            .map_err(|e| error(format!("metadata of model '{}': {e}", config.model)))?;
        let outputs = signature.outputs.iter().map(|o| o.name.clone()).collect();
        let health = Arc::new(Health::new(model, version, &config.url, config.eject_after, config.eject_for));
        let mut remote = Remote {
            model: model.to_string(),
            version,
            config: config.clone(),
            client,
            outputs,
            limit: Arc::new(Semaphore::new(config.max_in_flight)),
            health,
            runtime: runtime.clone(),
            metrics: Metrics::new(model, version),
            checks: None,
        };
        let remote = Arc::new_cyclic(|weak: &std::sync::Weak<Remote>| {
            if let Some(interval) = config.health_interval {
                remote.checks =
                    Some(runtime.spawn(health::check_every(weak.clone(), interval)).abort_handle());
            }
            remote
        });
        Ok((remote, signature))
    }

    /// Whether routing may send it traffic (not ejected).
    pub fn available(&self) -> bool {
        self.health.available()
    }

    /// Calls in flight to it now.
    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight - self.limit.available_permits()
    }

    /// Runs `inputs` on the remote, within `deadline` (and the remote's own `timeout_ms`):
    /// beyond `max_in_flight` calls at once it answers `Busy` at once. A caller that stops
    /// waiting drops the call (and its connection, for HTTP/1.1) and frees its place.
    pub async fn infer(
        self: &Arc<Self>,
        inputs: Arc<Vec<Tensor>>,
        deadline: Instant,
        trace: Option<JobTrace>,
    ) -> CallResult {
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            self.metrics.busy.increment(1);
            return Err(RemoteError::Failed {
                failure: Failure::Busy,
                reason: format!(
                    "remote version {} of model '{}' has {} calls in flight (max_in_flight); retry shortly",
                    self.version, self.model, self.config.max_in_flight
                ),
            });
        };
        let slot = InFlight { gauge: self.metrics.in_flight.clone(), _permit: permit };
        slot.gauge.increment(1.0);
        // On the runtime the client lives on (a request): called in place, no hand-off. From
        // anywhere else (the validation gate's thread, `check-config`): run there and awaited.
        if Handle::try_current().is_ok_and(|h| h.id() == self.runtime.id()) {
            let result = self.call(&inputs, deadline, trace).await;
            drop(slot);
            return result;
        }
        let this = self.clone();
        let call = self.runtime.spawn(async move {
            let result = this.call(&inputs, deadline, trace).await;
            drop(slot);
            result
        });
        call.await.unwrap_or_else(|e| {
            Err(RemoteError::Failed {
                failure: Failure::Failed,
                reason: format!("the remote call stopped: {e}"),
            })
        })
    }

    async fn call(&self, inputs: &[Tensor], deadline: Instant, trace: Option<JobTrace>) -> CallResult {
        let until = self.config.timeout.map_or(deadline, |t| deadline.min(Instant::now() + t));
        let mut span =
            trace.map(|t| t.child(format!("remote {} v{}", self.model, self.version), Kind::Client));
        if let Some(s) = span.as_mut() {
            s.set("server.address", self.config.url.clone());
        }
        let headers = span
            .as_ref()
            .map(|s| ChildSpanHeaders { traceparent: s.traceparent(), tracestate: s.tracestate() });
        let mut retried = false;
        let result = loop {
            let call = self.client.infer(inputs, &self.outputs, headers.as_ref());
            match tokio::time::timeout_at(until.into(), call).await {
                // Nothing reached the server: one more try, within the same time.
                Ok(Err(CallError::Connect(_))) if !retried => {
                    retried = true;
                    self.metrics.retries.increment(1);
                }
                Ok(result) => break result.map_err(Some),
                Err(_) => break Err(None),
            }
        };
        let result = self.account(result, until);
        if let Some(s) = span {
            s.end(result.as_ref().err().map(ToString::to_string));
        }
        result
    }

    /// Counts the call, feeds the ejection state and maps the error to the gateway's answer;
    /// `Err(None)`: it ran out of time.
    fn account(&self, result: Result<Vec<Tensor>, Option<CallError>>, until: Instant) -> CallResult {
        // Clients see the version, not the remote's address (`/admin/models` and the logs have it).
        let who = || format!("remote version {} of model '{}'", self.version, self.model);
        let (failure, reason) = match result {
            Ok(outputs) => {
                self.metrics.ok.increment(1);
                self.health.succeeded();
                return Ok(outputs);
            }
            Err(Some(CallError::Refused { status, message })) => {
                self.metrics.client_error.increment(1);
                self.health.succeeded();
                return Err(RemoteError::Refused(format!(
                    "{} refused the inputs ({status}): {message}",
                    who()
                )));
            }
            Err(None) => {
                self.metrics.timeout.increment(1);
                let waited = until.saturating_duration_since(Instant::now());
                (
                    Failure::TimedOut,
                    format!("{} did not answer in time ({} ms left)", who(), waited.as_millis()),
                )
            }
            Err(Some(e @ CallError::Connect(_))) => {
                self.metrics.connect_error.increment(1);
                (Failure::Unreachable, format!("{}: {e}", who()))
            }
            Err(Some(e @ CallError::Transport(_))) => {
                self.metrics.server_error.increment(1);
                (Failure::Unreachable, format!("{}: {e}", who()))
            }
            Err(Some(e @ CallError::Malformed(_))) => {
                self.metrics.server_error.increment(1);
                (Failure::Failed, format!("{}: {e}", who()))
            }
            Err(Some(CallError::Status { status, failure, message })) => {
                self.metrics.server_error.increment(1);
                (failure, format!("{} answered {status}: {message}", who()))
            }
        };
        self.health.failed(&reason);
        Err(RemoteError::Failed { failure, reason })
    }

    /// One active health check: the model's ready endpoint on the remote.
    async fn check(&self) {
        let wait = self.config.connect_timeout.max(Duration::from_secs(1)) * 2;
        match tokio::time::timeout(wait, self.client.ready()).await {
            Ok(Ok(())) => self.health.check_passed(),
            Ok(Err(e)) => self.health.check_failed(&format!("health check: {e}")),
            Err(_) => {
                self.health.check_failed(&format!("health check: no answer within {} ms", wait.as_millis()))
            }
        }
    }
}

/// The runtime remote calls run on: the caller's when there is one (the serving runtime, from
/// a blocking thread of it), else one of this module's own, started once.
fn runtime() -> Result<Handle, String> {
    if let Ok(handle) = Handle::try_current() {
        return Ok(handle);
    }
    static OWN: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let own = OWN.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gateway-upstream")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for remote calls: {e}"))
    });
    own.as_ref().map(|r| r.handle().clone()).map_err(Clone::clone)
}

/// A signature from the remote's metadata (name, datatype, shape per tensor; `-1`: a dynamic
/// dimension), whichever wire it came over.
fn metadata_signature(
    inputs: impl Iterator<Item = (String, String, Vec<i64>)>,
    outputs: impl Iterator<Item = (String, String, Vec<i64>)>,
) -> Result<ModelSignature, CallError> {
    let spec = |(name, datatype, shape): (String, String, Vec<i64>)| {
        let datatype = DataType::parse(&datatype).ok_or_else(|| {
            CallError::Malformed(format!("tensor '{name}' has an unknown datatype {datatype:?}"))
        })?;
        if shape.iter().any(|&d| d < -1) {
            return Err(CallError::Malformed(format!("tensor '{name}' has an invalid shape {shape:?}")));
        }
        Ok(TensorSpec::new(name, datatype, shape))
    };
    Ok(ModelSignature {
        inputs: inputs.map(spec).collect::<Result<_, _>>()?,
        outputs: outputs.map(spec).collect::<Result<_, _>>()?,
    })
}

/// How an HTTP status the remote answered is taken.
fn http_failure(status: u16) -> Option<Failure> {
    match status {
        400..=499 if status != 429 && status != 404 => None,
        429 | 503 => Some(Failure::Busy),
        504 => Some(Failure::TimedOut),
        _ => Some(Failure::Failed),
    }
}

#[cfg(test)]
mod tests;
