//! Traces that follow a request, against a real OTLP/HTTP receiver: `scripts/otlp/collector.py`
//! (Python standard library) runs as its own process on 127.0.0.1:0, keeps every body POSTed to
//! `/v1/traces`, and serves the spans back on `GET /spans`; each test starts one and stops it by
//! PID. Checked: a caller's `traceparent` continues its trace (server span under the caller's
//! span, `queue` and `onnxruntime.run` beneath it and the run linked, a `shadow 3` span with its
//! own children), a request without one starts a trace, unsampled callers and
//! `sample_ratio = 0` export nothing, `x-request-id` is echoed and on the span, gRPC metadata
//! works the same, and a dead or stalled collector never fails or slows a request while its
//! spans are counted as failed or dropped.
//!
//! Every test holds `common::exclusive()`: `gateway_trace_spans_total` is one process-wide
//! series that every gateway in this binary writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestGateway, credit_request, metric_present};
use gateway::trace::Tuning;
use serde_json::Value;
use tonic::metadata::MetadataValue;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

/// The test collector process.
struct Collector {
    child: Child,
    addr: SocketAddr,
}

impl Collector {
    fn start() -> Collector {
        let script = format!("{}/../scripts/otlp/collector.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the collector's port, got {line:?}"));
        Collector { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn spans(&self, gw: &TestGateway) -> Vec<Value> {
        let reply = gw.get_at(self.addr, "/spans").await;
        assert_eq!(reply.status, 200);
        reply.json().as_array().unwrap().clone()
    }

    /// Polls until `done` holds for the spans received, or panics after 20 s.
    async fn wait_for(&self, gw: &TestGateway, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans(gw).await;
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "{what}: not received within 20 s; received {spans:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await; // polling an external process
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tracing_table(endpoint: &str, ratio: f64) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = {ratio:?}\nservice_name = \"gateway-under-test\"\n"
    )
}

/// credit-scoring v1 with v3 as a 100% shadow, batched.
const SHADOWED: &str = r#"
[models.credit-scoring]
repository = "REPO"
batching = { max_batch_size = 8, max_queue_delay_us = 200 }
[models.credit-scoring.routing]
primary = 1
shadows = [{ version = 3, percent = 100.0 }]
"#;

async fn start(models: &str, tracing: &str, server_extra: &str) -> TestGateway {
    let gw = common::start_with_server(&format!("{models}\n{tracing}"), server_extra).await;
    // Batches leave within 20 ms, so the tests wait for the collector, not a timer.
    let tuning = Tuning { interval: Duration::from_millis(20), ..Tuning::default() };
    gw.gateway.as_ref().unwrap().tracer.retune(tuning).unwrap();
    gw
}

async fn infer(gw: &TestGateway, headers: &[(&str, &str)]) -> common::Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let body = serde_json::to_vec(&credit_request(1)).unwrap();
    let reply = gw.post("/v2/models/credit-scoring/infer", body, &all).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply
}

fn in_trace<'a>(spans: &'a [Value], trace_id: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["traceId"] == trace_id).collect()
}

fn named<'a>(spans: &[&'a Value], name: &str) -> Vec<&'a Value> {
    spans.iter().copied().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &[&'a Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

/// An attribute's value as a string (strings as they are, integers in their decimal form).
fn attr(span: &Value, key: &str) -> Option<String> {
    let kv = span["attributes"].as_array()?.iter().find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v["stringValue"].as_str().or_else(|| v["intValue"].as_str()).map(str::to_string)
}

fn nanos(span: &Value, field: &str) -> u128 {
    span[field].as_str().unwrap().parse().unwrap()
}

/// `span` starts and ends within `outer`.
fn within(span: &Value, outer: &Value) -> bool {
    nanos(span, "startTimeUnixNano") >= nanos(outer, "startTimeUnixNano")
        && nanos(span, "endTimeUnixNano") <= nanos(outer, "endTimeUnixNano")
        && nanos(span, "startTimeUnixNano") <= nanos(span, "endTimeUnixNano")
}

fn links_to(span: &Value, target: &Value) -> bool {
    span["links"].as_array().is_some_and(|links| {
        links.iter().any(|l| l["traceId"] == target["traceId"] && l["spanId"] == target["spanId"])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_sampled_trace_arrives_with_queue_run_and_shadow_children() {
    let _serial = common::exclusive().await;
    let collector = Collector::start();
    // sample_ratio 0: the caller's sampled flag alone decides.
    let gw = start(SHADOWED, &tracing_table(&collector.endpoint(), 0.0), "").await;
    let reply = infer(
        &gw,
        &[
            ("traceparent", SAMPLED),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("x-request-id", "client-req-1"),
        ],
    )
    .await;
    assert_eq!(reply.header("x-request-id"), Some("client-req-1"), "the client's request id is echoed");
    let answered = reply.header("traceparent").expect("a sampled answer carries traceparent").to_string();

    let want = ["infer credit-scoring", "queue", "onnxruntime.run", "shadow 3"];
    let spans = collector
        .wait_for(&gw, "the caller's trace", |spans| {
            let ours = in_trace(spans, TRACE_ID);
            // The shadow's own queue and run make 2 of each.
            want.iter().all(|n| !named(&ours, n).is_empty()) && named(&ours, "onnxruntime.run").len() == 2
        })
        .await;
    let ours = in_trace(&spans, TRACE_ID);
    let server = one(&ours, "infer credit-scoring");
    assert_eq!(server["parentSpanId"], CALLER_SPAN, "the server span hangs from the caller's span");
    assert_eq!(server["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(server["traceState"], "rojo=00f067aa0ba902b7");
    assert_eq!(server["serviceName"], "gateway-under-test");
    assert_eq!(answered, format!("00-{TRACE_ID}-{}-01", server["spanId"].as_str().unwrap()));
    assert_eq!(attr(server, "gateway.request_id").as_deref(), Some("client-req-1"));
    assert_eq!(attr(server, "gateway.model").as_deref(), Some("credit-scoring"));
    assert_eq!(attr(server, "gateway.version").as_deref(), Some("1"));
    assert_eq!(attr(server, "gateway.role").as_deref(), Some("primary"));
    assert_eq!(attr(server, "gateway.outcome").as_deref(), Some("ok"));
    assert_eq!(attr(server, "http.response.status_code").as_deref(), Some("200"));
    assert!(attr(server, "gateway.generation").is_some());

    let children: Vec<&Value> =
        ours.iter().copied().filter(|s| s["parentSpanId"] == server["spanId"]).collect();
    let queue = one(&children, "queue");
    let run = one(&children, "onnxruntime.run");
    let shadow = one(&children, "shadow 3");
    assert!(within(queue, server) && within(run, server), "queue and run lie within the request");
    assert!(
        nanos(queue, "endTimeUnixNano") <= nanos(run, "startTimeUnixNano") + 1_000,
        "the wait ends as the run starts"
    );
    assert!(links_to(server, run), "the request links the run that answered it");
    assert_eq!(attr(run, "gateway.batch.rows").as_deref(), Some("1"));
    assert_eq!(attr(shadow, "gateway.version").as_deref(), Some("3"));
    assert!(shadow.get("status").is_none(), "the shadow copy succeeded: {shadow:#}");
    let beneath_shadow: Vec<&Value> =
        ours.iter().copied().filter(|s| s["parentSpanId"] == shadow["spanId"]).collect();
    one(&beneath_shadow, "queue");
    one(&beneath_shadow, "onnxruntime.run");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_traceparent_starts_a_trace_when_sampled() {
    let _serial = common::exclusive().await;
    let collector = Collector::start();
    let gw = start(common::CREDIT, &tracing_table(&collector.endpoint(), 1.0), "").await;
    let reply = infer(&gw, &[]).await;
    let request_id = reply.header("x-request-id").expect("a request id is made").to_string();
    let traceparent = reply.header("traceparent").expect("the new trace is answered").to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{traceparent}");
    let (trace_id, span_id) = (parts[1].to_string(), parts[2].to_string());
    assert_ne!(trace_id, TRACE_ID);

    let spans = collector
        .wait_for(&gw, "the new trace", |spans| {
            let ours = in_trace(spans, &trace_id);
            ["infer credit-scoring", "queue", "onnxruntime.run"].iter().all(|n| !named(&ours, n).is_empty())
        })
        .await;
    let ours = in_trace(&spans, &trace_id);
    let server = one(&ours, "infer credit-scoring");
    assert_eq!(server["spanId"], span_id.as_str());
    assert!(server.get("parentSpanId").is_none(), "a root span: {server:#}");
    assert_eq!(attr(server, "gateway.request_id"), Some(request_id));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_and_unsampled_callers_export_nothing() {
    let _serial = common::exclusive().await;
    for (ratio, headers) in [(0.0, vec![]), (1.0, vec![("traceparent", UNSAMPLED)])] {
        let collector = Collector::start();
        let gw = start(common::CREDIT, &tracing_table(&collector.endpoint(), ratio), "").await;
        for _ in 0..30 {
            let reply = infer(&gw, &headers).await;
            assert_eq!(reply.header("traceparent"), None, "ratio {ratio} {headers:?}: not sampled");
            assert!(reply.header("x-request-id").is_some());
        }
        // A sampled request after them: once its spans are in, anything before it is too.
        let control = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        infer(&gw, &[("traceparent", control)]).await;
        let spans = collector
            .wait_for(&gw, "the control request", |spans| {
                !named(&in_trace(spans, "0af7651916cd43dd8448eb211c80319c"), "infer credit-scoring")
                    .is_empty()
            })
            .await;
        let others: Vec<&Value> =
            spans.iter().filter(|s| s["traceId"] != "0af7651916cd43dd8448eb211c80319c").collect();
        assert!(others.is_empty(), "ratio {ratio} {headers:?} exported {others:#?}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metadata_carries_the_trace_the_same_way() {
    let _serial = common::exclusive().await;
    let collector = Collector::start();
    let tracing = tracing_table(&collector.endpoint(), 0.0);
    let gw = start(common::CREDIT, &tracing, "grpc_listen = \"127.0.0.1:0\"").await;
    let mut client = gw.grpc_client().await;
    let message = common::grpc::request("credit-scoring", &credit_request(1), false);
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("traceparent", MetadataValue::from_static(SAMPLED));
    let response = client.model_infer(request).await.unwrap();
    let request_id = response.metadata().get("x-request-id").expect("a request id is made").to_str().unwrap();
    let answered = response.metadata().get("traceparent").expect("traceparent answered").to_str().unwrap();

    // A refused call is traced too, and answered with its request id (here the client's).
    let unknown = common::grpc::request("no-such-model", &credit_request(1), false);
    let mut refused = tonic::Request::new(unknown);
    refused.metadata_mut().insert("traceparent", MetadataValue::from_static(SAMPLED));
    refused.metadata_mut().insert("x-request-id", MetadataValue::from_static("grpc-client-id"));
    let status = client.model_infer(refused).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "grpc-client-id");
    assert!(status.metadata().get("traceparent").is_some());

    let spans = collector
        .wait_for(&gw, "the gRPC trace", |spans| {
            let ours = in_trace(spans, TRACE_ID);
            ["infer credit-scoring", "infer", "queue", "onnxruntime.run"]
                .iter()
                .all(|n| !named(&ours, n).is_empty())
        })
        .await;
    let ours = in_trace(&spans, TRACE_ID);
    let server = one(&ours, "infer credit-scoring");
    assert_eq!(server["parentSpanId"], CALLER_SPAN);
    assert_eq!(answered, format!("00-{TRACE_ID}-{}-01", server["spanId"].as_str().unwrap()));
    assert_eq!(attr(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attr(server, "rpc.method").as_deref(), Some("ModelInfer"));
    assert_eq!(attr(server, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr(server, "gateway.request_id").as_deref(), Some(request_id));
    let run = one(&ours, "onnxruntime.run");
    assert_eq!(run["parentSpanId"], server["spanId"]);
    assert!(links_to(server, run));
    assert_eq!(one(&ours, "queue")["parentSpanId"], server["spanId"]);
    let refused = one(&ours, "infer");
    assert_eq!(attr(refused, "rpc.grpc.status_code").as_deref(), Some("5"));
    assert_eq!(attr(refused, "gateway.request_id").as_deref(), Some("grpc-client-id"));
    assert_eq!(attr(refused, "gateway.outcome").as_deref(), Some("client_error"));
    gw.stop().await;
}

/// `gateway_trace_spans_total{outcome}`; panics when the series is missing.
async fn spans_counted(gw: &TestGateway, outcome: &str) -> f64 {
    let text = gw.metrics().await;
    metric_present(&text, "gateway_trace_spans_total", &[("outcome", outcome)])
        .unwrap_or_else(|| panic!("gateway_trace_spans_total{{outcome=\"{outcome}\"}} is missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request_and_its_spans_are_counted_failed() {
    let _serial = common::exclusive().await;
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = start(common::CREDIT, &tracing_table(&format!("http://{dead}"), 1.0), "").await;
    let (failed, exported) = (spans_counted(&gw, "failed").await, spans_counted(&gw, "exported").await);
    const REQUESTS: usize = 10;
    for _ in 0..REQUESTS {
        infer(&gw, &[]).await;
    }
    // Each request: its server span, its queue wait and its run.
    let want = failed + (3 * REQUESTS) as f64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while spans_counted(&gw, "failed").await < want {
        assert!(Instant::now() < deadline, "failed spans: {} of {want}", spans_counted(&gw, "failed").await);
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the exporter's counter
    }
    assert_eq!(spans_counted(&gw, "exported").await, exported);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_slows_no_request_and_excess_spans_are_dropped() {
    let _serial = common::exclusive().await;
    // A collector that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled = listener.local_addr().unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let gw = start(common::CREDIT, &tracing_table(&format!("http://{stalled}"), 1.0), "").await;
    // A small buffer; the first export hangs for a minute while requests go on.
    let tuning = Tuning {
        buffer: 4,
        max_batch: 2,
        interval: Duration::from_millis(5),
        timeout: Duration::from_secs(60),
    };
    gw.gateway.as_ref().unwrap().tracer.retune(tuning).unwrap();
    let dropped = spans_counted(&gw, "dropped").await;
    const REQUESTS: usize = 20;
    let mut slowest = Duration::ZERO;
    for _ in 0..REQUESTS {
        let started = Instant::now();
        infer(&gw, &[]).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?} while the collector stalled");
    // 60 spans; at most 2 in the hanging export and 4 buffered.
    let dropped_now = spans_counted(&gw, "dropped").await - dropped;
    assert!(dropped_now >= (3 * REQUESTS - 6) as f64, "dropped {dropped_now} of {}", 3 * REQUESTS);
    // Let go of the stalled connection so shutdown's flush fails at once instead of waiting.
    holding.abort();
    let _ = holding.await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_the_request_id_is_still_answered_and_no_traceparent() {
    let _serial = common::exclusive().await;
    let gw = common::start(common::CREDIT).await;
    let reply = infer(&gw, &[("traceparent", SAMPLED), ("x-request-id", "mine")]).await;
    assert_eq!(reply.header("x-request-id"), Some("mine"));
    assert_eq!(reply.header("traceparent"), None, "nothing is recorded without [tracing]");
    let reply = infer(&gw, &[]).await;
    assert!(reply.header("x-request-id").is_some_and(|id| !id.is_empty()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_remote_version_is_a_client_span_and_the_remote_continues_the_trace() {
    let _serial = common::exclusive().await;
    let collector = Collector::start();
    let tracing = tracing_table(&collector.endpoint(), 0.0);
    // The remote: another gateway, serving the credit model as `upstream-credit`, tracing too.
    let repo = common::scratch("traced-remote");
    std::os::unix::fs::symlink(format!("{}/credit-scoring", common::repo()), repo.join("upstream-credit"))
        .unwrap();
    let remote_models = format!(
        "[models.upstream-credit]\nrepository = \"{}\"\nrouting = {{ primary = 1 }}\n",
        repo.display()
    );
    let remote = start(&remote_models, &tracing, "").await;
    let front = format!(
        "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = {{ primary = 1, versions = [5] }}\n\
         [models.credit-scoring.remote]\n5 = {{ url = \"http://{}\", model = \"upstream-credit\" }}\n",
        remote.data
    );
    let gw = start(&front, &tracing, "").await;
    let body = serde_json::to_vec(&credit_request(1)).unwrap();
    let headers = [("content-type", "application/json"), ("traceparent", SAMPLED)];
    let reply = gw.post("/v2/models/credit-scoring/versions/5/infer", body, &headers).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let spans = collector
        .wait_for(&gw, "the front's and the remote's spans", |spans| {
            let ours = in_trace(spans, TRACE_ID);
            !named(&ours, "infer upstream-credit").is_empty()
                && !named(&ours, "remote credit-scoring v5").is_empty()
        })
        .await;
    let ours = in_trace(&spans, TRACE_ID);
    let server = one(&ours, "infer credit-scoring");
    let client = one(&ours, "remote credit-scoring v5");
    let remote_server = one(&ours, "infer upstream-credit");
    assert_eq!(client["parentSpanId"], server["spanId"], "the call hangs from the request's span");
    assert_eq!(client["kind"], 3, "SPAN_KIND_CLIENT");
    assert!(within(client, server), "the call lies within the request");
    assert_eq!(remote_server["parentSpanId"], client["spanId"], "the remote's span hangs from the call");
    assert_eq!(attr(server, "gateway.version").as_deref(), Some("5"));
    gw.stop().await;
    remote.stop().await;
}
