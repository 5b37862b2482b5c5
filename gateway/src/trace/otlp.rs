//! The OTLP/HTTP JSON encoding of a batch of spans (`ExportTraceServiceRequest`, protobuf's
//! JSON mapping as OTLP specifies it): `resourceSpans` → `scopeSpans` → `spans`; trace and span
//! ids as lowercase hex (not base64), 64-bit integers (times, integer attributes) as decimal
//! strings, enums (kind, status code) as their numbers, field names in lowerCamelCase.

use serde::Serialize;

use super::export::Clock;
use super::span::{SpanLink, SpanRecord, Value};

/// OTLP's `Status.code`: ERROR. Success leaves the status unset (OpenTelemetry's guidance for
/// instrumentation), so only this one is ever written.
const STATUS_ERROR: u8 = 2;

/// The instrumentation scope every span is reported under.
const SCOPE: &str = "gateway";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: [KeyValue<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<Span<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_state: Option<&'a str>,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Link {
    trace_id: String,
    span_id: String,
}

#[derive(Serialize)]
struct Status<'a> {
    code: u8,
    message: &'a str,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: AnyValue<'a>,
}

/// OTLP's `AnyValue`, named as its JSON fields are.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(clippy::enum_variant_names)]
enum AnyValue<'a> {
    StringValue(&'a str),
    IntValue(String),
    BoolValue(bool),
}

/// The JSON body for `batch`, exported by `service_name`; `clock` dates the spans.
pub fn encode(batch: &[SpanRecord], service_name: &str, clock: &Clock) -> Vec<u8> {
    let spans = batch.iter().map(|s| span(s, clock)).collect();
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: [KeyValue { key: "service.name", value: AnyValue::StringValue(service_name) }],
            },
            scope_spans: [ScopeSpans {
                scope: Scope { name: SCOPE, version: env!("CARGO_PKG_VERSION") },
                spans,
            }],
        }],
    };
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

fn span<'a>(s: &'a SpanRecord, clock: &Clock) -> Span<'a> {
    Span {
        trace_id: format!("{:032x}", s.trace_id),
        span_id: format!("{:016x}", s.span_id),
        parent_span_id: s.parent_span_id.map(|p| format!("{p:016x}")),
        trace_state: s.trace_state.as_deref(),
        name: &s.name,
        kind: s.kind as u8,
        start_time_unix_nano: clock.unix_nanos(s.start).to_string(),
        end_time_unix_nano: clock.unix_nanos(s.end.max(s.start)).to_string(),
        attributes: s.attributes.iter().map(|(key, value)| KeyValue { key, value: any(value) }).collect(),
        links: s.links.iter().map(link).collect(),
        status: s.error.as_deref().map(|message| Status { code: STATUS_ERROR, message }),
    }
}

fn any(value: &Value) -> AnyValue<'_> {
    match value {
        Value::Str(s) => AnyValue::StringValue(s),
        Value::Int(n) => AnyValue::IntValue(n.to_string()),
        Value::Bool(b) => AnyValue::BoolValue(*b),
    }
}

fn link(l: &SpanLink) -> Link {
    Link { trace_id: format!("{:032x}", l.trace_id), span_id: format!("{:016x}", l.span_id) }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::trace::span::Kind;

    #[test]
    fn a_span_is_written_in_otlp_json() {
        let clock = Clock::now();
        let start = Instant::now();
        let record = SpanRecord {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0xab,
            parent_span_id: Some(0x00f067aa0ba902b7),
            trace_state: Some("rojo=1".into()),
            name: "infer credit".into(),
            kind: Kind::Server,
            start,
            end: start + Duration::from_micros(1500),
            attributes: vec![("gateway.version", Value::Int(2)), ("gateway.model", "credit".into())],
            links: vec![SpanLink { trace_id: 1, span_id: 2 }],
            error: Some("boom".into()),
        };
        let body: serde_json::Value = serde_json::from_slice(&encode(&[record], "gw", &clock)).unwrap();
        let rs = &body["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "gw");
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["spanId"], "00000000000000ab");
        assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(span["traceState"], "rojo=1");
        assert_eq!(span["kind"], 2);
        let (s, e) = (&span["startTimeUnixNano"], &span["endTimeUnixNano"]);
        let (s, e): (u128, u128) =
            (s.as_str().unwrap().parse().unwrap(), e.as_str().unwrap().parse().unwrap());
        assert_eq!(e - s, 1_500_000);
        assert_eq!(span["attributes"][0]["value"]["intValue"], "2");
        assert_eq!(span["attributes"][1]["value"]["stringValue"], "credit");
        assert_eq!(span["links"][0]["traceId"], "00000000000000000000000000000001");
        assert_eq!(span["links"][0]["spanId"], "0000000000000002");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["status"]["message"], "boom");
    }

    #[test]
    fn a_root_span_without_error_has_no_parent_nor_status() {
        let start = Instant::now();
        let record = SpanRecord {
            trace_id: 7,
            span_id: 8,
            parent_span_id: None,
            trace_state: None,
            name: "queue".into(),
            kind: Kind::Internal,
            start,
            end: start,
            attributes: Vec::new(),
            links: Vec::new(),
            error: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&encode(&[record], "gw", &Clock::now())).unwrap();
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        let keys: Vec<&str> = span.as_object().unwrap().keys().map(String::as_str).collect();
        for absent in ["parentSpanId", "traceState", "links", "status"] {
            assert!(!keys.contains(&absent), "{absent} in {keys:?}");
        }
    }
}
