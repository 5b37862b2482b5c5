//! What one finished span is (`SpanRecord`, handed to the exporter) and the handles that record
//! the children of a sampled request: `JobTrace` (what a queued request carries to the worker
//! thread: the trace, the parent span, the exporter) and `ChildSpan` (a span being timed: a
//! shadow copy, an outgoing call). Only sampled requests ever build any of these.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::context::{format_traceparent, new_span_id};
use super::export::Sink;

/// OTLP's span kinds (the numbers are OTLP's enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(Cow::Owned(s))
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::from(n as u64)
    }
}

pub type Attribute = (&'static str, Value);

/// A span another span points to (OTLP links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLink {
    pub trace_id: u128,
    pub span_id: u64,
}

/// One finished span. Times stay `Instant`s until the exporter turns them into wall-clock
/// nanoseconds (one clock read per batch, not per span).
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    pub trace_state: Option<Arc<str>>,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub start: Instant,
    pub end: Instant,
    pub attributes: Vec<Attribute>,
    pub links: Vec<SpanLink>,
    /// OTLP status ERROR with this message; `None` leaves the status unset (success).
    pub error: Option<String>,
}

/// What a sampled request carries into a queue (and a shadow copy into its own): enough to
/// record children of `parent` in `trace_id`. `None` for every unsampled request.
#[derive(Clone)]
pub struct JobTrace {
    pub(super) sink: Arc<Sink>,
    pub(super) trace_id: u128,
    pub(super) parent: u64,
    pub(super) trace_state: Option<Arc<str>>,
}

impl std::fmt::Debug for JobTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobTrace({:032x}/{:016x})", self.trace_id, self.parent)
    }
}

impl JobTrace {
    /// The span this trace's children hang from, as a link target.
    pub fn parent_link(&self) -> SpanLink {
        SpanLink { trace_id: self.trace_id, span_id: self.parent }
    }

    /// Records a finished child of the parent span.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        start: Instant,
        end: Instant,
        attributes: Vec<Attribute>,
        links: Vec<SpanLink>,
        error: Option<String>,
    ) -> SpanLink {
        let span_id = new_span_id();
        self.sink.send(SpanRecord {
            trace_id: self.trace_id,
            span_id,
            parent_span_id: Some(self.parent),
            trace_state: self.trace_state.clone(),
            name: name.into(),
            kind,
            start,
            end,
            attributes,
            links,
            error,
        });
        SpanLink { trace_id: self.trace_id, span_id }
    }

    /// `queue`: the request waited from `enqueued` until its batch started.
    pub fn record_queue(&self, enqueued: Instant, batch_started: Instant) {
        self.record("queue", Kind::Internal, enqueued, batch_started, Vec::new(), Vec::new(), None);
    }

    /// `onnxruntime.run`: one run of a batch of `requests` requests (`rows` rows), recorded as
    /// a child of this (the batch's first sampled) request; `others` are the other sampled
    /// requests of the batch, linked. Returns the run span, which every sampled request of the
    /// batch links to from its own span.
    pub fn record_run(
        &self,
        started: Instant,
        took: Duration,
        requests: usize,
        rows: usize,
        others: Vec<SpanLink>,
        error: Option<String>,
    ) -> SpanLink {
        let attributes = vec![
            ("gateway.batch.requests", Value::from(requests)),
            ("gateway.batch.rows", Value::from(rows)),
        ];
        self.record("onnxruntime.run", Kind::Internal, started, started + took, attributes, others, error)
    }

    /// Starts timing a child span (a shadow copy, an outgoing call); it is recorded by
    /// `ChildSpan::end`.
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: Kind) -> ChildSpan {
        ChildSpan {
            trace: JobTrace { parent: new_span_id(), ..self.clone() },
            parent: self.parent,
            name: name.into(),
            kind,
            start: Instant::now(),
            attributes: Vec::new(),
        }
    }
}

/// A child span being timed. Its own children hang from it (`job`).
pub struct ChildSpan {
    /// The same trace with this span as the parent.
    trace: JobTrace,
    parent: u64,
    name: Cow<'static, str>,
    kind: Kind,
    start: Instant,
    attributes: Vec<Attribute>,
}

impl ChildSpan {
    /// What this span's own children (a shadow copy's queue and run) are recorded under.
    pub fn job(&self) -> JobTrace {
        self.trace.clone()
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push((key, value.into()));
    }

    /// `traceparent` for an outgoing call made within this span (a `Client` span): the callee's
    /// spans become its children. With `tracestate()`, everything to inject.
    pub fn traceparent(&self) -> HeaderValue {
        HeaderValue::from_bytes(&format_traceparent(self.trace.trace_id, self.trace.parent, true))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The caller's `tracestate`, to pass on with `traceparent`.
    pub fn tracestate(&self) -> Option<HeaderValue> {
        self.trace.trace_state.as_deref().and_then(|s| HeaderValue::from_str(s).ok())
    }

    /// Ends the span now: recorded with `error` as its status (`None`: success).
    pub fn end(self, error: Option<String>) {
        let ChildSpan { trace, parent, name, kind, start, attributes } = self;
        trace.sink.send(SpanRecord {
            trace_id: trace.trace_id,
            span_id: trace.parent,
            parent_span_id: Some(parent),
            trace_state: trace.trace_state,
            name,
            kind,
            start,
            end: Instant::now(),
            attributes,
            links: Vec::new(),
            error,
        });
    }
}
