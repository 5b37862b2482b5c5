//! Connection handling and overload behaviour on real sockets: the header-read and idle
//! timeouts (raw TCP clients that stall), h2c prior knowledge, the max-in-flight limit, the
//! request timeout, a full per-version queue, a client that goes away while queued, and
//! graceful shutdown with a request in flight.
//!
//! Slow requests use `models/tests/slow` (a Loop whose trip count is the `iterations` input).
//! Every wait is on observable state (the in-flight gauge, a queue depth, a socket read),
//! bounded by an outer timeout. The tests take `common::exclusive()` because they read
//! process-wide metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestGateway;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW_MODEL: &str = "[models.slow]\nrepository = \"TESTS\"\nrouting = { primary = 1 }\n";

/// Loop iterations that keep the slow model busy for about 2 s on a quiet 2-core machine
/// (1,000,000 ≈ 1.7-2.3 s; 100,000 ≈ 0.25 s; 2,000,000 ≈ 3.4 s). Tests whose slow requests must
/// succeed set a long request_timeout_ms, so a loaded machine only makes them slower.
const SLOW: i64 = 1_000_000;

/// Generous bound for anything that should happen "soon".
const BOUND: Duration = Duration::from_secs(10);

const IN_FLIGHT: &str = "gateway_in_flight_requests";
const INFERENCE_DURATION_COUNT: &str = "gateway_inference_duration_seconds_count";
const SLOW_V1: &[(&str, &str)] = &[("model", "slow"), ("version", "1")];

/// A slow-model request: `iterations` loop turns over `rows` rows of zeros (tanh(0·W) = 0, so
/// the answer is zeros whatever the count).
fn slow_request(iterations: i64, rows: usize) -> Value {
    json!({"inputs": [
        {"name": "iterations", "datatype": "INT64", "shape": [], "data": [iterations]},
        {"name": "x", "datatype": "FP32", "shape": [rows, 64], "data": vec![0.0f32; rows * 64]}
    ]})
}

fn assert_zeros(reply: &common::Reply, rows: usize) {
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let v = reply.json();
    assert_eq!(v["model_name"], "slow");
    assert_eq!(v["outputs"][0]["name"], "y");
    assert_eq!(v["outputs"][0]["shape"], json!([rows, 64]));
    let data = v["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(data.len(), rows * 64);
    assert!(data.iter().all(|x| x.as_f64() == Some(0.0)), "{v}");
}

/// Reads until the peer closes (EOF or reset); returns what was read. Panics after `BOUND`.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read_all).await.expect("the server closes the connection");
    seen
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before a full response: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + length {
                    return head;
                }
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("a response")
}

/// A raw HTTP/1.1 infer request, as bytes.
fn raw_infer(model: &str, body: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap();
    let mut out = format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn wait_in_flight(gw: &TestGateway, n: f64) {
    gw.wait_for_metric(IN_FLIGHT, &[], |v| v == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(common::CREDIT, "header_read_timeout_ms = 300").await;
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    let connected = Instant::now();
    let seen = read_until_closed(&mut stream).await;
    let after = connected.elapsed();
    assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
    assert!(after >= Duration::from_millis(290), "closed too early: {after:?}");
    assert!(after < Duration::from_secs(3), "closed too late: {after:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_then_silence_is_closed_after_the_header_read_timeout() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(common::CREDIT, "header_read_timeout_ms = 300").await;
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    let connected = Instant::now();
    stream
        .write_all(b"POST /v2/models/credit-scoring/infer HTTP/1.1\r\nhost: gateway\r\ncontent-ty")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream).await;
    let after = connected.elapsed();
    // Closed without an answer, or with a 408; never a 200.
    let text = String::from_utf8_lossy(&seen);
    assert!(seen.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(after >= Duration::from_millis(290), "closed too early: {after:?}");
    assert!(after < Duration::from_secs(3), "closed too late: {after:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let _serial = common::exclusive().await;
    // The header-read timeout is much longer, so a close near 300 ms can only be the idle one.
    let gw =
        common::start_with_server(common::CREDIT, "header_read_timeout_ms = 5000\nidle_timeout_ms = 300")
            .await;
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: gateway\r\n\r\n").await.unwrap();
    let head = read_response(&mut stream).await;
    let answered = Instant::now();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let seen = read_until_closed(&mut stream).await;
    let idle = answered.elapsed();
    assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
    assert!(idle >= Duration::from_millis(250), "closed too early: {idle:?}");
    assert!(idle < Duration::from_secs(2), "closed too late: {idle:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_when_both_timeouts_agree() {
    let _serial = common::exclusive().await;
    // With equal timeouts the close is due 300 ms after the response, by either rule; the
    // connection must not live on to the default idle timeout (60 s).
    let gw = common::start_with_server(common::CREDIT, "header_read_timeout_ms = 300\nidle_timeout_ms = 300")
        .await;
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: gateway\r\n\r\n").await.unwrap();
    let head = read_response(&mut stream).await;
    let answered = Instant::now();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    read_until_closed(&mut stream).await;
    let idle = answered.elapsed();
    assert!(idle >= Duration::from_millis(250), "closed too early: {idle:?}");
    assert!(idle < Duration::from_secs(2), "closed too late: {idle:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_gets_a_correct_answer() {
    let _serial = common::exclusive().await;
    let gw = common::start(common::CREDIT).await;
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    let reference = common::reference_for("credit-scoring");
    let body = json!({"id": "h2-1", "inputs": reference["inputs"]});
    let request = Request::post(format!("http://{}/v2/models/credit-scoring/infer", gw.data))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .expect("an answer")
        .expect("h2c request succeeds");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-model-version"], "1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], "h2-1");
    assert_eq!(v["model_version"], "1");
    common::assert_outputs(&v, reference["outputs"].as_array().unwrap());
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_a_request_gets_503_with_retry_after_at_once() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(SLOW_MODEL, "max_in_flight = 1\nrequest_timeout_ms = 120000").await;
    let first = gw.spawn_infer("slow", &slow_request(SLOW, 1));
    wait_in_flight(&gw, 1.0).await;

    let asked = Instant::now();
    let second = gw.infer("slow", &slow_request(1, 1)).await;
    let took = asked.elapsed();
    assert_eq!(second.status, 503, "{}", String::from_utf8_lossy(&second.body));
    assert_eq!(second.header("retry-after"), Some("1"));
    assert!(second.error().contains("limit of 1 requests"), "{}", second.error());
    assert!(took < Duration::from_millis(500), "refused after {took:?}, not at once");
    assert!(!first.is_finished(), "the first request must still hold the slot");

    assert_zeros(&first.await.unwrap(), 1);
    // The slot is free again.
    assert_zeros(&gw.infer("slow", &slow_request(1, 1)).await, 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_request_timeout_gets_504() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(SLOW_MODEL, "request_timeout_ms = 200").await;
    let runs = gw.metric(INFERENCE_DURATION_COUNT, SLOW_V1).await;
    let asked = Instant::now();
    let reply = gw.infer("slow", &slow_request(SLOW, 1)).await;
    let took = asked.elapsed();
    assert_eq!(reply.status, 504, "{}", String::from_utf8_lossy(&reply.body));
    let error = reply.error();
    assert!(error.contains("deadline") || error.contains("request_timeout_ms"), "{error}");
    assert!(took >= Duration::from_millis(195), "answered too early: {took:?}");
    // Answered before the run it gave up on finished.
    assert_eq!(gw.metric(INFERENCE_DURATION_COUNT, SLOW_V1).await, runs);
    // The run cannot be interrupted; let it end before the next test.
    gw.wait_for_metric(INFERENCE_DURATION_COUNT, SLOW_V1, |v| v > runs).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_request_timeout_is_counted_as_timeout() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(SLOW_MODEL, "request_timeout_ms = 200").await;
    let labels = [("model", "slow"), ("outcome", "timeout")];
    let runs = gw.metric(INFERENCE_DURATION_COUNT, SLOW_V1).await;
    let timeouts = gw.metric("gateway_requests_total", &labels).await;
    // The request times out while its body is still being sent: only the deadline layer sees it.
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    let request = raw_infer("slow", &slow_request(SLOW, 1));
    stream.write_all(&request[..request.len() - 5]).await.unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 504"), "{head}");
    assert_eq!(gw.metric("gateway_requests_total", &labels).await, timeouts + 1.0);
    assert_eq!(gw.metric(INFERENCE_DURATION_COUNT, SLOW_V1).await, runs);
    drop(stream);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_version_queue_refuses_with_503_naming_the_queue() {
    let _serial = common::exclusive().await;
    let model = "[models.slow]\nrepository = \"TESTS\"\nbatching = { max_batch_size = 1, max_queue = 1 }\nrouting = { primary = 1 }\n";
    // A busy CI machine can stretch the slow runs: only the queue decides here, not the clock.
    let gw = common::start_with_server(model, "request_timeout_ms = 120000").await;
    // One request runs on the only worker...
    let running = gw.spawn_infer("slow", &slow_request(SLOW, 1));
    wait_in_flight(&gw, 1.0).await;
    common::eventually("the worker takes the first request", BOUND, || async {
        gw.queue_depth("slow", 1).await == 0
    })
    .await;
    // ...one waits in the queue of one...
    let queued = gw.spawn_infer("slow", &slow_request(SLOW / 10, 1));
    wait_in_flight(&gw, 2.0).await;
    common::eventually("the second request is queued", BOUND, || async {
        gw.queue_depth("slow", 1).await == 1
    })
    .await;
    // ...so the next one is refused at once.
    let refused = gw.infer("slow", &slow_request(1, 1)).await;
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    assert!(refused.header("retry-after").is_some());
    let error = refused.error();
    assert!(error.contains("max_queue") && error.contains("'slow' version 1"), "{error}");
    assert!(!running.is_finished() && !queued.is_finished());

    assert_zeros(&running.await.unwrap(), 1);
    assert_zeros(&queued.await.unwrap(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_while_queued_never_runs() {
    let _serial = common::exclusive().await;
    let model = "[models.slow]\nrepository = \"TESTS\"\nbatching = { max_batch_size = 1, max_queue = 8 }\nrouting = { primary = 1 }\n";
    // A busy CI machine can stretch the slow runs: only the queue decides here, not the clock.
    let gw = common::start_with_server(model, "request_timeout_ms = 120000").await;
    let runs = gw.metric(INFERENCE_DURATION_COUNT, SLOW_V1).await;
    let running = gw.spawn_infer("slow", &slow_request(SLOW, 1));
    wait_in_flight(&gw, 1.0).await;
    common::eventually("the worker takes the first request", BOUND, || async {
        gw.queue_depth("slow", 1).await == 0
    })
    .await;
    // A raw client queues a second (slow) request, then hangs up.
    let mut leaving = TcpStream::connect(gw.data).await.unwrap();
    leaving.write_all(&raw_infer("slow", &slow_request(SLOW, 1))).await.unwrap();
    wait_in_flight(&gw, 2.0).await;
    common::eventually("the second request is queued", BOUND, || async {
        gw.queue_depth("slow", 1).await == 1
    })
    .await;
    drop(leaving);
    // The gateway notices at once (its handler is dropped), long before the worker is free.
    wait_in_flight(&gw, 1.0).await;
    assert!(!running.is_finished());

    assert_zeros(&running.await.unwrap(), 1);
    // A quick request behind it: once it is answered, the abandoned one was skipped or run.
    assert_zeros(&gw.infer("slow", &slow_request(1, 1)).await, 1);
    let ran = gw.metric(INFERENCE_DURATION_COUNT, SLOW_V1).await - runs;
    assert_eq!(ran, 2.0, "the abandoned request must not cost a run");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_refuses_new_connections() {
    let _serial = common::exclusive().await;
    let mut gw =
        common::start_with_server(SLOW_MODEL, "drain_timeout_ms = 60000\nrequest_timeout_ms = 120000").await;
    let data: SocketAddr = gw.data;
    let in_flight = gw.spawn_infer("slow", &slow_request(SLOW, 2));
    wait_in_flight(&gw, 1.0).await;

    let gateway = gw.gateway.take().unwrap();
    gateway.shutdown();
    common::eventually("the data listener closes", BOUND, || async {
        TcpStream::connect(data).await.is_err()
    })
    .await;
    assert!(!in_flight.is_finished(), "the listener must close while the request is still running");

    let reply = tokio::time::timeout(Duration::from_secs(60), in_flight)
        .await
        .expect("the in-flight request completes")
        .unwrap();
    assert_zeros(&reply, 2);
    assert_eq!(reply.json()["model_version"], "1");
    tokio::time::timeout(BOUND, gateway.wait())
        .await
        .expect("wait() returns once the drain is over, well before drain_timeout");
    let refused = TcpStream::connect(data).await;
    assert!(refused.is_err(), "still accepting after wait()");
}

/// A raw HTTP/1.1 keep-alive GET of the liveness endpoint.
const LIVE: &[u8] = b"GET /v2/health/live HTTP/1.1\r\nhost: gateway\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_is_closed_at_once_and_counted() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(SLOW_MODEL, "max_connections = 2").await;
    let refused = [("listener", "data")];
    let before = gw.metric("gateway_connections_refused_total", &refused).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gw.data).await.unwrap();
        stream.write_all(LIVE).await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("http/1.1 200"));
        open.push(stream);
    }
    let mut third = TcpStream::connect(gw.data).await.unwrap();
    let _ = third.write_all(LIVE).await;
    assert!(read_until_closed(&mut third).await.is_empty(), "closed without an answer");
    let text = gw.metrics().await;
    let count = common::metric_present(&text, "gateway_connections_refused_total", &refused)
        .expect("the refused-connections series");
    assert_eq!(count - before, 1.0);

    // A place frees up when a connection closes: the next one is served.
    drop(open.pop());
    gw.wait_for_metric("gateway_open_connections", &refused, |v| v == 1.0).await;
    let mut next = TcpStream::connect(gw.data).await.unwrap();
    next.write_all(LIVE).await.unwrap();
    assert!(read_response(&mut next).await.starts_with("http/1.1 200"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_although_pings_keep_flowing() {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let gw = common::start_with_server(SLOW_MODEL, "idle_timeout_ms = 300").await;
    let stream = TcpStream::connect(gw.data).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request =
        Request::get(format!("http://{}/v2/health/live", gw.data)).body(Full::new(Bytes::new())).unwrap();
    let reply = send.send_request(request).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    drop(reply.into_body().collect().await.unwrap());
    // Pings every 50 ms, each acknowledged: bytes keep moving, but no request does.
    let closed = tokio::time::timeout(BOUND, conn).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection with pings must be closed after idle_timeout_ms");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_drain_timeout_the_connections_still_open_are_closed() {
    let _serial = common::exclusive().await;
    let mut gw =
        common::start_with_server(SLOW_MODEL, "drain_timeout_ms = 300\nrequest_timeout_ms = 120000").await;
    // A request whose body never completes keeps its connection busy.
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    let head =
        "POST /v2/models/slow/infer HTTP/1.1\r\nhost: gateway\r\ncontent-length: 1000\r\n\r\n{\"inputs\"";
    stream.write_all(head.as_bytes()).await.unwrap();
    wait_in_flight(&gw, 1.0).await;

    let gateway = gw.gateway.take().unwrap();
    gateway.shutdown();
    read_until_closed(&mut stream).await;
    tokio::time::timeout(BOUND, gateway.wait()).await.expect("wait() returns after the drain timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_counted_against_the_version() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(common::CREDIT, "request_timeout_ms = 60000").await;
    let version = [("model", "credit-scoring"), ("version", "1"), ("role", "primary")];
    let ok = gw.infer("credit-scoring", &common::credit_request(1)).await;
    assert_eq!(ok.status, 200);
    let sum = "gateway_request_duration_seconds_sum";
    let before = gw.metric(sum, &version).await;

    let request = raw_infer("credit-scoring", &common::credit_request(1));
    let (first, rest) = request.split_at(request.len() - 20);
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    stream.write_all(first).await.unwrap();
    // The client takes its time with the last bytes of the body; that is the scenario.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(rest).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("http/1.1 200"));

    let text = gw.metrics().await;
    let spent = common::metric_present(&text, sum, &version).expect("the version's duration series") - before;
    assert!(spent < 1.0, "the version was charged {spent:.3} s for a 1.5 s upload");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_deadline_times_out_without_a_version() {
    let _serial = common::exclusive().await;
    let gw = common::start_with_server(common::CREDIT, "request_timeout_ms = 300").await;
    let ok = gw.infer("credit-scoring", &common::credit_request(1)).await;
    assert_eq!(ok.status, 200);
    let timeouts = [("model", "credit-scoring"), ("outcome", "timeout")];
    let before = gw.metric("gateway_requests_total", &timeouts).await;

    let request = raw_infer("credit-scoring", &common::credit_request(1));
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    stream.write_all(&request[..request.len() - 20]).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("http/1.1 504"));

    let text = gw.metrics().await;
    let labels = [("model", "credit-scoring"), ("version", "1"), ("role", "primary"), ("outcome", "timeout")];
    let version =
        common::metric_present(&text, "gateway_requests_total", &labels).expect("the version's series");
    assert_eq!(version, 0.0, "no version was picked for a request that never arrived whole");
    assert_eq!(common::metric(&text, "gateway_requests_total", &timeouts) - before, 1.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_gauge_adds_up_across_gateways_sharing_a_process() {
    let _serial = common::exclusive().await;
    // The metrics recorder is process-wide; two gateways in one process (a library user, or
    // this test binary) share `gateway_in_flight_requests`. Each request must move it by one:
    // a gauge written with one gateway's own count would read 1 with two held, then 0.
    let server = "request_timeout_ms = 120000";
    let first = common::start_with_server(SLOW_MODEL, server).await;
    let second = common::start_with_server(SLOW_MODEL, server).await;
    let head = "POST /v2/models/slow/infer HTTP/1.1\r\nhost: gateway\r\ncontent-length: 1000\r\n\r\n{";
    let mut held = TcpStream::connect(first.data).await.unwrap();
    held.write_all(head.as_bytes()).await.unwrap();
    wait_in_flight(&first, 1.0).await;
    let mut other = TcpStream::connect(second.data).await.unwrap();
    other.write_all(head.as_bytes()).await.unwrap();
    wait_in_flight(&second, 2.0).await;
    drop(held);
    wait_in_flight(&second, 1.0).await;
    drop(other);
    wait_in_flight(&first, 0.0).await;
    first.stop().await;
    second.stop().await;
}
