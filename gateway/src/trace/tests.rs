//! The sampling decision and the server span a request records, without a collector.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::export::test_sink;
use super::span::SpanRecord;
use super::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn headers(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static [u8]> {
    pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
}

fn begin(tracer: &Tracer, pairs: &[(&'static str, &'static str)]) -> Trace {
    let h = headers(pairs);
    tracer.begin(Front::Http, |name| h.get(name).copied())
}

fn received(rx: &mut tokio::sync::mpsc::Receiver<SpanRecord>) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    while let Ok(span) = rx.try_recv() {
        out.push(span);
    }
    out
}

fn attribute<'a>(span: &'a SpanRecord, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[test]
fn a_sampled_callers_trace_is_continued_under_its_span() {
    let (sink, mut rx) = test_sink(16);
    let tracer = Tracer::with_sink(0.0, sink);
    let mut trace = begin(&tracer, &[(TRACEPARENT, PARENT), (TRACESTATE, "rojo=1"), (REQUEST_ID, "abc")]);
    assert!(trace.is_sampled(), "the caller's sampled flag wins over sample_ratio 0");
    trace.routed("credit", 2, "primary", "primary", 7);
    let job = trace.job().unwrap();
    let run = job.record_run(Instant::now(), Duration::from_micros(5), 1, 1, Vec::new(), None);
    trace.ran(Some(run));
    trace.finished("ok", None, false);
    let answer = trace.end_http(http::Response::new(()));
    let spans = received(&mut rx);
    let server = spans.iter().find(|s| s.kind == Kind::Server).unwrap();
    assert_eq!(server.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(server.parent_span_id, Some(0x00f067aa0ba902b7));
    assert_eq!(server.trace_state.as_deref(), Some("rojo=1"));
    assert_eq!(server.name, "infer credit");
    assert_eq!(attribute(server, "gateway.request_id"), Some(&Value::from("abc".to_string())));
    assert_eq!(attribute(server, "gateway.version"), Some(&Value::Int(2)));
    assert_eq!(attribute(server, "http.response.status_code"), Some(&Value::Int(200)));
    assert_eq!(server.links, vec![run]);
    let run_span = spans.iter().find(|s| s.name == "onnxruntime.run").unwrap();
    assert_eq!(run_span.parent_span_id, Some(server.span_id));
    let header = answer.headers().get(TRACEPARENT).unwrap().to_str().unwrap();
    assert_eq!(header, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", server.span_id));
}

#[test]
fn an_unsampled_caller_is_not_recorded_but_passed_on() {
    let (sink, mut rx) = test_sink(16);
    let tracer = Tracer::with_sink(1.0, sink);
    let trace = begin(&tracer, &[(TRACEPARENT, UNSAMPLED_PARENT)]);
    assert!(!trace.is_sampled(), "the caller's unsampled flag wins over sample_ratio 1");
    assert!(trace.job().is_none());
    let (traceparent, _) = trace.outgoing().unwrap();
    assert_eq!(traceparent.to_str().unwrap(), UNSAMPLED_PARENT);
    assert!(trace.end_http(http::Response::new(())).headers().get(TRACEPARENT).is_none());
    assert!(received(&mut rx).is_empty());
}

#[test]
fn without_a_caller_the_ratio_decides_and_a_new_trace_starts() {
    let (sink, mut rx) = test_sink(4096);
    let never = Tracer::with_sink(0.0, sink.clone());
    assert!((0..1000).all(|_| !begin(&never, &[]).is_sampled()));
    let always = Tracer::with_sink(1.0, sink.clone());
    let trace = begin(&always, &[(TRACEPARENT, "garbage"), (TRACESTATE, "rojo=1")]);
    assert!(trace.is_sampled(), "an invalid traceparent starts a new trace");
    trace.end_grpc(0);
    let span = received(&mut rx).pop().unwrap();
    assert_ne!(span.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(span.parent_span_id, None);
    assert_eq!(span.trace_state, None, "tracestate is ignored with an invalid traceparent");
    let some = Tracer::with_sink(0.25, sink);
    let sampled = (0..4000).filter(|_| begin(&some, &[]).is_sampled()).count();
    assert!((800..1200).contains(&sampled), "{sampled} of 4000 at 25%");
}

#[test]
fn without_tracing_nothing_is_recorded_and_the_caller_is_passed_on() {
    let tracer = Tracer::default();
    assert!(!begin(&tracer, &[]).is_sampled());
    assert!(matches!(begin(&tracer, &[]), Trace::Off));
    let passed = begin(&tracer, &[(TRACEPARENT, PARENT), (TRACESTATE, "rojo=1")]);
    assert!(!passed.is_sampled());
    let (traceparent, state) = passed.outgoing().unwrap();
    assert_eq!(traceparent.to_str().unwrap(), PARENT);
    assert_eq!(state.unwrap().to_str().unwrap(), "rojo=1");
}

#[test]
fn a_full_buffer_drops_spans_instead_of_waiting() {
    let (sink, mut rx) = test_sink(2);
    let tracer = Tracer::with_sink(1.0, sink);
    for _ in 0..5 {
        begin(&tracer, &[]).end_grpc(0);
    }
    assert_eq!(received(&mut rx).len(), 2);
}

#[test]
fn server_failures_mark_the_span_and_client_errors_only_describe_it() {
    let (sink, mut rx) = test_sink(16);
    let tracer = Tracer::with_sink(1.0, sink);
    let mut failed = begin(&tracer, &[]);
    failed.finished("server_error", Some(&"the runtime crashed"), true);
    failed.end_grpc(13);
    let mut refused = begin(&tracer, &[]);
    refused.finished("client_error", Some(&"wrong shape"), false);
    let _ = refused.end_http(http::Response::builder().status(422).body(()).unwrap());
    let spans = received(&mut rx);
    assert_eq!(spans[0].error.as_deref(), Some("the runtime crashed"));
    assert_eq!(spans[1].error, None);
    assert_eq!(attribute(&spans[1], "gateway.error"), Some(&Value::from("wrong shape".to_string())));
}

#[test]
fn a_child_span_propagates_itself_to_outgoing_calls() {
    let (sink, mut rx) = test_sink(16);
    let tracer = Tracer::with_sink(0.0, sink);
    let trace = begin(&tracer, &[(TRACEPARENT, PARENT), (TRACESTATE, "rojo=1")]);
    let call = trace.job().unwrap().child("remote credit v4", Kind::Client);
    let traceparent = call.traceparent();
    assert_eq!(call.tracestate().unwrap().to_str().unwrap(), "rojo=1");
    call.end(None);
    let span = received(&mut rx).pop().unwrap();
    assert_eq!(span.kind, Kind::Client);
    let expected = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", span.span_id);
    assert_eq!(traceparent.to_str().unwrap(), expected);
}

#[test]
fn long_request_ids_are_cut_on_a_character_boundary() {
    let id = "é".repeat(200);
    let cut = request_id_attribute(id.as_bytes());
    assert!(cut.len() <= MAX_REQUEST_ID && id.starts_with(&cut));
}
