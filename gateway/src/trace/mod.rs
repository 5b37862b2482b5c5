//! Traces that follow a request (`[tracing]`): W3C Trace Context in, one server span per
//! inference request with children for its queue wait, the ONNX Runtime run that answered it,
//! and its shadow copies, exported over OTLP/HTTP JSON. Owns the sampling decision, the span
//! handles the request path carries, and the exporter; knows nothing of HTTP routing, gRPC
//! services or ONNX Runtime (the front ends, `inference`, `batching` and `shadow` call in).
//!
//! **Context.** A valid `traceparent` (version 00, or a later version's first four fields) is
//! the caller's: its trace id is kept and its span becomes the parent of ours. An invalid one is
//! ignored (with its `tracestate`), and the request starts a new trace, as W3C says.
//! `tracestate` (up to 512 bytes) is passed through untouched: on our spans and to outgoing
//! calls (`Trace::outgoing`, `ChildSpan::traceparent`). Without `[tracing]` nothing is
//! recorded, but the caller's context is still kept for outgoing calls.
//!
//! **Sampling** is decided once, at the front end, before the body is read. A caller's
//! `traceparent` decides by its sampled flag (parent-based: a trace is recorded whole or not at
//! all); a request without one is sampled with probability `sample_ratio` (one thread-local
//! random draw). An unsampled request costs a header lookup and that draw: no allocation, no
//! clock read, no lock; its `Trace` is an inline value and every queue job carries `None`. (A
//! caller's `tracestate` is the one thing copied for an unsampled request, to pass on.)
//!
//! **Spans** of a sampled request: `infer {model}` (SERVER; from the front end's first look at
//! the request to its answer; attributes: model, version, role, route reason, routing
//! generation, request id, outcome, HTTP status or gRPC code, tenant when known), and as its
//! children `queue` (enqueued → its batch starts), `onnxruntime.run` (one span per batch run,
//! recorded under the batch's first sampled request and linking the others; every sampled
//! request of the batch links to it from its own server span, so a batch-mate's trace leads to
//! the run that answered it) and `shadow {version}` (one per mirrored copy, with that copy's own
//! `queue` and `onnxruntime.run` beneath it). Times are the `Instant`s the path already takes;
//! the exporter turns them into wall-clock time once per batch.
//!
//! **Response.** A sampled request's answer carries `traceparent` naming its server span
//! (HTTP header, gRPC metadata). The request id (`x-request-id`: the client's own, else one the
//! gateway makes) is always in the answer, on the span, and in the request's log lines.
//!
//! **Export** (`export`): a bounded buffer and one task; a full buffer drops spans and counts
//! them, a slow collector never slows a request. Restart-only, like `[tracing]` itself.

mod context;
mod export;
mod otlp;
mod span;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;

pub use context::{TRACEPARENT, TRACESTATE, TraceParent, format_traceparent};
pub use export::Tuning;
pub use span::{Attribute, ChildSpan, JobTrace, Kind, SpanLink, SpanRecord, Value};

use crate::config::TracingConfig;
use context::{new_span_id, new_trace_id, tracestate};
use export::{Destination, Exporter, Sink};

/// The request-id header (and gRPC metadata key).
pub const REQUEST_ID: &str = "x-request-id";

/// The longest request id put on a span; a longer one is cut (the answer echoes it whole).
const MAX_REQUEST_ID: usize = 256;

/// Which front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Http,
    /// gRPC: `ModelInfer`, or one message of `ModelStreamInfer`.
    Grpc {
        stream: bool,
    },
}

/// The sampling policy and the exporter, for the whole process lifetime of one gateway.
#[derive(Default)]
pub struct Tracer {
    /// `None`: no `[tracing]` table; nothing is recorded.
    settings: Option<Settings>,
    /// Where sampled spans go; swapped only by `retune`.
    sink: ArcSwapOption<Sink>,
    exporter: Mutex<Option<Exporter>>,
}

struct Settings {
    ratio: f64,
    endpoint: String,
    service_name: String,
}

impl Tracer {
    /// A tracer for `config` (`None`: off), exporting from a task on the current runtime.
    pub fn start(config: Option<&TracingConfig>) -> Result<Tracer, String> {
        let Some(config) = config else { return Ok(Tracer::default()) };
        let settings = Settings {
            ratio: config.sample_ratio,
            endpoint: config.otlp_endpoint.clone(),
            service_name: config.service_name.clone(),
        };
        let tracer = Tracer { settings: Some(settings), ..Tracer::default() };
        tracer.restart(Tuning::default())?;
        Ok(tracer)
    }

    /// Replaces the exporter with one tuned so (tests: a small buffer, a short wait). The old
    /// one exports what it holds and stops. No-op without `[tracing]`.
    pub fn retune(&self, tuning: Tuning) -> Result<(), String> {
        self.restart(tuning)
    }

    fn restart(&self, tuning: Tuning) -> Result<(), String> {
        let Some(settings) = &self.settings else { return Ok(()) };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "trace export needs the gateway's runtime".to_string())?;
        let destination = Destination::new(&settings.endpoint, &settings.service_name)?;
        let exporter = export::start(destination, tuning, &runtime);
        let mut running = self.exporter.lock().unwrap_or_else(PoisonError::into_inner);
        self.sink.store(Some(exporter.sink.clone()));
        if let Some(old) = running.replace(exporter) {
            runtime.spawn(old.close(tuning.timeout));
        }
        Ok(())
    }

    /// Stops exporting after sending what is buffered, within `bound` (shutdown).
    pub async fn close(&self, bound: Duration) {
        self.sink.store(None);
        let exporter = self.exporter.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(exporter) = exporter {
            exporter.close(bound).await;
        }
    }

    /// A tracer sampling `ratio` of new traces into `sink` (unit tests).
    #[cfg(test)]
    fn with_sink(ratio: f64, sink: Arc<Sink>) -> Tracer {
        let settings = Settings { ratio, endpoint: String::new(), service_name: String::new() };
        Tracer { settings: Some(settings), sink: ArcSwapOption::new(Some(sink)), ..Tracer::default() }
    }

    /// Whether `[tracing]` is on.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// Starts a request's trace: reads `traceparent` (and, when there is one worth keeping,
    /// `tracestate` and `x-request-id`) through `header`, and decides whether it is recorded.
    /// On the request path: an unsampled request allocates nothing.
    pub fn begin<'h>(&self, front: Front, header: impl Fn(&str) -> Option<&'h [u8]>) -> Trace {
        let parent = header(TRACEPARENT).and_then(TraceParent::parse);
        let sampled = match (&self.settings, &parent) {
            (None, _) => false,
            (Some(_), Some(p)) => p.sampled,
            (Some(s), None) => s.ratio > 0.0 && fastrand::f64() < s.ratio,
        };
        let state = || parent.and_then(|_| header(TRACESTATE)).and_then(tracestate);
        let sink = if sampled { self.sink.load_full() } else { None };
        let Some(sink) = sink else {
            return match parent {
                Some(parent) => Trace::Passed { parent, state: state() },
                None => Trace::Off,
            };
        };
        let request_id = header(REQUEST_ID).map(request_id_attribute);
        Trace::Sampled(Box::new(Sampled::new(sink, parent, state(), front, request_id)))
    }
}

/// A request id as a span attribute: lossy UTF-8, cut at `MAX_REQUEST_ID` bytes.
fn request_id_attribute(raw: &[u8]) -> String {
    let mut id = String::from_utf8_lossy(raw).into_owned();
    if id.len() > MAX_REQUEST_ID {
        let mut cut = MAX_REQUEST_ID;
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id.truncate(cut);
    }
    id
}

/// One request's trace, as the request path carries it.
pub enum Trace {
    /// Not recorded, and no caller context to pass on.
    Off,
    /// Not recorded here; the caller's context is passed on to outgoing calls unchanged.
    Passed { parent: TraceParent, state: Option<Arc<str>> },
    /// Recorded: the server span being built.
    Sampled(Box<Sampled>),
}

/// A sampled request's server span, filled in as the request goes.
pub struct Sampled {
    /// This span's trace, with this span as the parent of everything beneath it.
    job: JobTrace,
    caller: Option<u64>,
    start: Instant,
    name: Cow<'static, str>,
    attributes: Vec<Attribute>,
    links: Vec<SpanLink>,
    error: Option<String>,
}

impl Sampled {
    fn new(
        sink: Arc<Sink>,
        parent: Option<TraceParent>,
        trace_state: Option<Arc<str>>,
        front: Front,
        request_id: Option<String>,
    ) -> Sampled {
        let trace_id = parent.map_or_else(new_trace_id, |p| p.trace_id);
        let job = JobTrace { sink, trace_id, parent: new_span_id(), trace_state };
        let mut attributes = Vec::with_capacity(12);
        match front {
            Front::Http => attributes.push(("http.request.method", Value::from("POST"))),
            Front::Grpc { stream } => {
                attributes.push(("rpc.system", Value::from("grpc")));
                let method = if stream { "ModelStreamInfer" } else { "ModelInfer" };
                attributes.push(("rpc.method", Value::from(method)));
            }
        }
        if let Some(id) = request_id {
            attributes.push(("gateway.request_id", Value::from(id)));
        }
        Sampled {
            job,
            caller: parent.map(|p| p.parent_id),
            start: Instant::now(),
            name: Cow::Borrowed("infer"),
            attributes,
            links: Vec::new(),
            error: None,
        }
    }
}

impl Trace {
    pub fn is_sampled(&self) -> bool {
        matches!(self, Trace::Sampled(_))
    }

    /// What the request's queue job (and shadow copies) carry: `None` unless sampled.
    pub fn job(&self) -> Option<JobTrace> {
        match self {
            Trace::Sampled(s) => Some(s.job.clone()),
            _ => None,
        }
    }

    /// Adds an attribute to the server span (sampled requests only; a no-op otherwise).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Trace::Sampled(s) = self {
            s.attributes.push((key, value.into()));
        }
    }

    /// The version that answers, and why: names the span and labels it.
    pub fn routed(
        &mut self,
        model: &str,
        version: u64,
        role: &'static str,
        reason: &'static str,
        generation: u64,
    ) {
        if let Trace::Sampled(s) = self {
            s.name = Cow::Owned(format!("infer {model}"));
            s.attributes.extend([
                ("gateway.model", Value::from(model.to_string())),
                ("gateway.version", Value::from(version)),
                ("gateway.role", Value::from(role)),
                ("gateway.route_reason", Value::from(reason)),
                ("gateway.generation", Value::from(generation)),
            ]);
        }
    }

    /// The batch run that answered the request (from its worker), linked from the server span.
    pub fn ran(&mut self, run: Option<SpanLink>) {
        if let (Trace::Sampled(s), Some(run)) = (self, run) {
            s.links.push(run);
        }
    }

    /// How the request ended (`gateway_requests_total`'s outcome). A failure that is the
    /// server's (`server_side`) marks the span as an error; a client's is only described.
    pub fn finished(
        &mut self,
        outcome: &'static str,
        error: Option<&dyn std::fmt::Display>,
        server_side: bool,
    ) {
        if let Trace::Sampled(s) = self {
            s.attributes.push(("gateway.outcome", Value::from(outcome)));
            match error {
                Some(e) if server_side => s.error = Some(e.to_string()),
                Some(e) => s.attributes.push(("gateway.error", Value::from(e.to_string()))),
                None => {}
            }
        }
    }

    /// `traceparent` naming this request's server span, for the answer (sampled only).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        match self {
            Trace::Sampled(s) => {
                HeaderValue::from_bytes(&format_traceparent(s.job.trace_id, s.job.parent, true)).ok()
            }
            _ => None,
        }
    }

    /// The headers an outgoing call made for this request carries (`traceparent`, and
    /// `tracestate` when the caller sent one): our server span when sampled, the caller's own
    /// context (unsampled) when passed through, nothing otherwise. A sampled request's call
    /// that should appear as its own span uses `JobTrace::child(.., Kind::Client)` instead.
    pub fn outgoing(&self) -> Option<(HeaderValue, Option<HeaderValue>)> {
        let (parent, state) = match self {
            Trace::Off => return None,
            Trace::Passed { parent, state } => {
                (format_traceparent(parent.trace_id, parent.parent_id, parent.sampled), state)
            }
            Trace::Sampled(s) => (format_traceparent(s.job.trace_id, s.job.parent, true), &s.job.trace_state),
        };
        let state = state.as_deref().and_then(|s| HeaderValue::from_str(s).ok());
        Some((HeaderValue::from_bytes(&parent).ok()?, state))
    }

    /// Ends an HTTP request's span with the answer's status, and puts `traceparent` on it.
    pub fn end_http<B>(self, mut response: http::Response<B>) -> http::Response<B> {
        if let Some(value) = self.traceparent() {
            response.headers_mut().insert(TRACEPARENT, value);
        }
        let status = response.status().as_u16();
        self.end(("http.response.status_code", Value::Int(i64::from(status))), status >= 500);
        response
    }

    /// Ends a gRPC request's span with its status code (`0`: OK).
    pub fn end_grpc(self, code: i32) {
        // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
        // DATA_LOSS: the server's side of the table (OpenTelemetry's rule for gRPC servers).
        let server_side = matches!(code, 2 | 4 | 8 | 12 | 13 | 14 | 15);
        self.end(("rpc.grpc.status_code", Value::Int(i64::from(code))), server_side);
    }

    fn end(self, status: Attribute, failed: bool) {
        let Trace::Sampled(s) = self else { return };
        let Sampled { job, caller, start, name, mut attributes, links, mut error } = *s;
        attributes.push(status);
        if failed && error.is_none() {
            error = Some("the request failed".to_string());
        }
        job.sink.send(span::SpanRecord {
            trace_id: job.trace_id,
            span_id: job.parent,
            parent_span_id: caller,
            trace_state: job.trace_state,
            name,
            kind: Kind::Server,
            start,
            end: Instant::now(),
            attributes,
            links,
            error,
        });
    }
}

/// `n` sampled requests' job traces (distinct traces) sharing one sink, and what reaches it:
/// for unit tests of the code that records children.
#[cfg(test)]
pub(crate) fn test_jobs(n: usize) -> (Vec<JobTrace>, tokio::sync::mpsc::Receiver<SpanRecord>) {
    let (sink, spans) = export::test_sink(1024);
    let jobs = (0..n)
        .map(|_| JobTrace {
            sink: sink.clone(),
            trace_id: new_trace_id(),
            parent: new_span_id(),
            trace_state: None,
        })
        .collect();
    (jobs, spans)
}

#[cfg(test)]
mod tests;
