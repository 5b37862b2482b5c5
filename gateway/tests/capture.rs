//! Request capture (`[models.X.capture]`) and its replay, over real sockets: every field of a
//! record, sampling, rotation under the byte budget, a full buffer that drops and counts
//! without failing a request, CloudEvents in KServe's format reaching a sink, and `loadtest
//! replay` agreeing 100% with the version that answered and reporting a different version's
//! disagreement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{TestGateway, credit_request_seeded, eventually, metric_present};
use gateway::capture::{Record, Records, Tuning, files, tensors};
use gateway::tensor::{Tensor, TensorData};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::Value;

const MODEL: &str = "credit-scoring";

/// credit-scoring captured into `dir` at `percent`, with `routing` and `extra` capture keys.
fn config(dir: &Path, percent: f64, routing: &str, extra: &str) -> String {
    format!(
        "[models.{MODEL}]\nrepository = \"REPO\"\n[models.{MODEL}.routing]\n{routing}\n\
         [models.{MODEL}.capture]\npercent = {percent}\ndir = \"{}\"\n{extra}\n",
        dir.display()
    )
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// The process's metrics (every gateway of this test binary shares one recorder), readable
/// after a gateway has stopped.
fn scrape() -> String {
    gateway::telemetry::install().render()
}

/// `gateway_capture_records_total{model, outcome}`; panics when the series is missing.
fn records_total(outcome: &str) -> f64 {
    let text = scrape();
    metric_present(&text, "gateway_capture_records_total", &[("model", MODEL), ("outcome", outcome)])
        .unwrap_or_else(|| panic!("no gateway_capture_records_total{{outcome={outcome}}} in:\n{text}"))
}

fn events_total(outcome: &str) -> f64 {
    let text = scrape();
    metric_present(&text, "gateway_capture_cloudevents_total", &[("model", MODEL), ("outcome", outcome)])
        .unwrap_or_else(|| panic!("no gateway_capture_cloudevents_total{{outcome={outcome}}} in:\n{text}"))
}

fn read_all(dir: &Path) -> Vec<Record> {
    Records::open(dir).unwrap().collect()
}

fn infer_path(version: Option<u64>) -> String {
    match version {
        Some(v) => format!("/v2/models/{MODEL}/versions/{v}/infer"),
        None => format!("/v2/models/{MODEL}/infer"),
    }
}

/// Sends `n` seeded requests (1 to 4 rows each) and checks each is answered.
async fn traffic(gw: &TestGateway, n: u64, seed: u64) {
    for i in 0..n {
        let body = credit_request_seeded(1 + (i % 4) as usize, seed + i);
        let reply = gw.post_json(&infer_path(None), &body).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(deserialize_with = "tensors::deserialize_vec")]
    outputs: Vec<Tensor>,
}

fn features(body: &Value) -> Vec<f32> {
    body["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_every_field_of_the_exchange() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-fields");
    let routing = "primary = 1\ncandidates = [{ version = 2, percent = 50.0 }]\n\
                   sticky_header = \"x-user-id\"\nversions = [3]";
    let gw = common::start(&config(&dir, 100.0, routing, "")).await;
    let written_before = records_total("written");
    let started = now_us();
    let mut sent = HashMap::new();
    for i in 0..12u64 {
        let pinned = i >= 10;
        let id = format!("req-{i}");
        let user = format!("user-{i}");
        let body = credit_request_seeded(1 + (i % 3) as usize, 100 + i);
        let path = infer_path(pinned.then_some(3));
        let reply = gw
            .post(&path, serde_json::to_vec(&body).unwrap(), &[("x-request-id", &id), ("x-user-id", &user)])
            .await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        sent.insert(id, (body, reply));
    }
    let ended = now_us();
    gw.stop().await; // finishes the files
    assert_eq!(records_total("written") - written_before, 12.0);

    let files = files::list(&dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!((started / 1000..=ended / 1000).contains(&files[0].started_ms), "{files:?}");
    let records = read_all(&dir);
    assert_eq!(records.len(), 12);
    let mut roles = HashMap::new();
    for r in &records {
        let id = r.request_id.clone().expect("request id");
        let (body, reply) = &sent[&id];
        assert_eq!(r.model, MODEL);
        assert_eq!(r.version.to_string(), reply.header("x-model-version").unwrap(), "{id}");
        assert_eq!(r.reason, reply.header("x-route-reason").unwrap(), "{id}");
        assert_eq!(r.generation.to_string(), reply.header("x-gateway-generation").unwrap(), "{id}");
        let role = match (r.reason.as_ref(), r.version) {
            ("pinned", _) => "pinned",
            (_, 1) => "primary",
            _ => "candidate",
        };
        assert_eq!(r.role, role, "{id}");
        *roles.entry(role).or_insert(0) += 1;
        assert!(r.latency_us > 0 && r.latency_us < 60_000_000, "{id}: {}", r.latency_us);
        assert!((started..=ended).contains(&r.time_us), "{id}: {} not in {started}..={ended}", r.time_us);
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].name, "features");
        assert_eq!(r.inputs[0].shape, vec![body["inputs"][0]["shape"][0].as_u64().unwrap() as usize, 8]);
        assert_eq!(r.inputs[0].data, TensorData::F32(features(body)));
        let answer: Answer = serde_json::from_slice(&reply.body).unwrap();
        let mut got = r.outputs.to_vec();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = answer.outputs;
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(got, want, "{id}");
    }
    assert_eq!(roles.get("pinned"), Some(&2), "{roles:?}");
    assert_eq!(roles.values().sum::<i32>(), 12);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_records_about_the_configured_percent() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-sampling");
    let gw = common::start(&config(&dir, 20.0, "primary = 1", "")).await;
    let (written, dropped) = (records_total("written"), records_total("dropped"));
    traffic(&gw, 600, 1).await;
    gw.stop().await;
    let captured = read_all(&dir).len() as f64;
    // Binomial(600, 0.2): mean 120, sd 9.8; 5 sd either side.
    assert!((71.0..=169.0).contains(&captured), "{captured} of 600 captured at 20%");
    assert_eq!(records_total("written") - written, captured);
    assert_eq!(records_total("dropped") - dropped, 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rotate_and_the_oldest_go_to_stay_under_the_budget() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-rotation");
    let max_bytes: u64 = 1 << 20; // the smallest budget: files rotate at 128 KiB
    let gw = common::start(&config(&dir, 100.0, "primary = 1", &format!("max_bytes = {max_bytes}"))).await;
    // An older run's file counts toward the budget too, and is the oldest.
    std::fs::write(dir.join("capture-1.jsonl.gz"), vec![0u8; 100_000]).unwrap();
    // 2048 random rows: about 100 KB compressed per record, so 1.5 MB in all.
    let n = 16;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("big-{i}");
        let body = serde_json::to_vec(&credit_request_seeded(2048, 500 + i)).unwrap();
        let reply = gw.post(&infer_path(None), body, &[("x-request-id", &id)]).await;
        assert_eq!(reply.status, 200);
        ids.push(id);
    }
    gw.stop().await;
    let listed = files::list(&dir).unwrap();
    let total: u64 = listed.iter().map(|f| f.bytes).sum();
    assert!(total <= max_bytes, "{total} bytes in {listed:#?}");
    assert!(listed.len() >= 3, "no rotation: {listed:#?}");
    assert!(listed.iter().all(|f| f.started_ms != 1), "the oldest file was kept: {listed:#?}");
    // Every closed file rotated at its size; the newest records are the ones kept.
    let rotate_at = files::rotate_at(max_bytes);
    for f in &listed[..listed.len() - 1] {
        assert!(f.bytes >= rotate_at, "{f:?} closed under {rotate_at}");
    }
    let kept: Vec<String> = read_all(&dir).into_iter().map(|r| r.request_id.unwrap()).collect();
    assert!(!kept.is_empty() && kept.len() < ids.len(), "{kept:?}");
    assert_eq!(kept, ids[ids.len() - kept.len()..].to_vec(), "not the newest records, in order");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_and_counts_and_every_request_is_answered() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-full");
    let gw = common::start(&config(&dir, 100.0, "primary = 1", "")).await;
    let capture = gw.gateway.as_ref().unwrap().capture.clone();
    // Writers held (a stalled disk) and a 4-record buffer: the 5th request on is dropped.
    let hold = capture.hold_writers();
    capture.retune(Tuning { buffer: 4, ..Tuning::default() });
    let (written, dropped) = (records_total("written"), records_total("dropped"));
    traffic(&gw, 20, 7).await; // each one answered 200 (checked inside)
    assert_eq!(records_total("dropped") - dropped, 16.0);
    drop(hold);
    eventually("the 4 buffered records written", Duration::from_secs(30), || async {
        records_total("written") - written == 4.0
    })
    .await;
    gw.stop().await;
    assert_eq!(read_all(&dir).len(), 4);
    assert_eq!(records_total("dropped") - dropped, 16.0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// One request a CloudEvents sink received.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A sink on 127.0.0.1:0 answering 200 to every POST and keeping what it got.
async fn sink() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let got = kept.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let got = got.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        got.lock().unwrap().push(Received { headers: parts.headers, body });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_reach_the_sink_in_kserves_format() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-events");
    let (url, got) = sink().await;
    let extra = format!("cloudevents_url = \"{url}\"");
    let gw = common::start(&config(&dir, 100.0, "primary = 1", &extra)).await;
    let sent_before = events_total("sent");
    let mut replies = HashMap::new();
    for i in 0..3u64 {
        let id = format!("ce-{i}");
        let body = credit_request_seeded(2, 40 + i);
        let reply =
            gw.post(&infer_path(None), serde_json::to_vec(&body).unwrap(), &[("x-request-id", &id)]).await;
        assert_eq!(reply.status, 200);
        replies.insert(id, (body, reply));
    }
    eventually("6 CloudEvents at the sink", Duration::from_secs(60), || async {
        got.lock().unwrap().len() >= 6
    })
    .await;
    eventually("6 sends counted", Duration::from_secs(30), || async {
        events_total("sent") - sent_before == 6.0
    })
    .await;
    let events = got.lock().unwrap().clone();
    assert_eq!(events.len(), 6);
    let header = |e: &Received, name: &str| {
        e.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", e.headers))
            .to_string()
    };
    let mut kinds = HashMap::new();
    for e in &events {
        assert_eq!(header(e, "ce-specversion"), "1.0");
        assert_eq!(header(e, "content-type"), "application/json");
        assert_eq!(header(e, "ce-inferenceservicename"), MODEL);
        assert!(!header(e, "ce-source").is_empty());
        assert_eq!(header(e, "ce-endpoint"), "default");
        assert_eq!(header(e, "ce-component"), "predictor");
        assert!(!header(e, "ce-namespace").is_empty());
        assert_eq!(header(e, "ce-metadata"), "{}");
        assert_eq!(header(e, "ce-modelversion"), "1");
        let time = header(e, "ce-time");
        assert!(time.len() == 27 && time.ends_with('Z') && time.starts_with("20"), "{time}");
        let id = header(e, "ce-id");
        let (body, reply) = &replies[&id];
        let json: Value = serde_json::from_slice(&e.body).unwrap();
        let kind = header(e, "ce-type");
        match kind.as_str() {
            "org.kubeflow.serving.inference.request" => {
                assert_eq!(features(&json), features(body), "{id}");
                assert_eq!(json["inputs"][0]["shape"], body["inputs"][0]["shape"]);
            }
            "org.kubeflow.serving.inference.response" => {
                assert_eq!(json["model_name"], MODEL);
                assert_eq!(json["model_version"], "1");
                let ours: Answer = serde_json::from_value(json).unwrap();
                let theirs: Answer = serde_json::from_slice(&reply.body).unwrap();
                let mut a = ours.outputs;
                a.sort_by(|x, y| x.name.cmp(&y.name));
                let mut b = theirs.outputs;
                b.sort_by(|x, y| x.name.cmp(&y.name));
                assert_eq!(a, b, "{id}");
            }
            other => panic!("unexpected ce-type {other}"),
        }
        *kinds.entry((id, kind)).or_insert(0) += 1;
    }
    assert_eq!(kinds.len(), 6, "one request and one response event per exchange: {kinds:?}");
    gw.stop().await;
    assert_eq!(read_all(&dir).len(), 3, "the files are written as well");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sink_counts_failures_and_requests_go_on() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-events-down");
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!("cloudevents_url = \"http://127.0.0.1:{port}/\"");
    let gw = common::start(&config(&dir, 100.0, "primary = 1", &extra)).await;
    let failed = events_total("failed");
    traffic(&gw, 3, 60).await;
    eventually("6 failed sends counted", Duration::from_secs(60), || async {
        events_total("failed") - failed == 6.0
    })
    .await;
    gw.stop().await;
    assert_eq!(read_all(&dir).len(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

fn replay_plan(dir: &Path, gw: &TestGateway, version: Option<u64>, limit: u64) -> loadtest::replay::Plan {
    loadtest::replay::Plan {
        source: PathBuf::from(dir),
        target: format!("http://{}", gw.data),
        pace: loadtest::replay::Pace::Max,
        version,
        connections: 4,
        timeout: Duration::from_secs(30),
        limit: Some(limit),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_agrees_with_the_same_version_and_shows_another_ones_disagreement() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-replay");
    let gw = common::start(&config(&dir, 100.0, "primary = 1\nversions = [2, 3]", "")).await;
    // Flushed every 50 ms, so the files can be read while the gateway runs.
    let capture = gw.gateway.as_ref().unwrap().capture.clone();
    capture.retune(Tuning { flush_every: Duration::from_millis(50), ..Tuning::default() });
    let n = 60;
    traffic(&gw, n, 900).await;
    eventually("the records readable before the file is finished", Duration::from_secs(30), || async {
        read_all(&dir).len() >= n as usize
    })
    .await;

    // Replayed traffic is captured too (into the same folder): replay the first n records only.
    let same = loadtest::replay::replay(replay_plan(&dir, &gw, Some(1), n)).await.unwrap();
    assert_eq!((same.requests, same.answered, same.errors), (n, n, 0), "{}", same.to_text());
    assert_eq!(same.agreement_percent, 100.0, "{}", same.to_text());
    assert_eq!(same.versions.get("1"), Some(&n), "{}", same.to_text());
    let names: Vec<&str> = same.outputs.iter().map(|o| o.output.as_str()).collect();
    assert_eq!(names, ["label", "probabilities"]);
    assert!(same.outputs.iter().all(|o| o.compared == n && o.percent == 100.0), "{}", same.to_text());

    let other = loadtest::replay::replay(replay_plan(&dir, &gw, Some(2), n)).await.unwrap();
    assert_eq!((other.answered, other.errors), (n, 0), "{}", other.to_text());
    assert!(other.agreement_percent < 90.0, "v2 approves far more often than v1:\n{}", other.to_text());
    assert!(other.outputs.iter().all(|o| o.percent < 100.0), "{}", other.to_text());
    assert_eq!(other.versions.get("2"), Some(&n));

    // The routed path (v1 is the primary) agrees too, and a paced replay keeps the recorded pace.
    let mut paced = replay_plan(&dir, &gw, None, n);
    paced.pace = loadtest::replay::Pace::Scaled(4.0);
    let routed = loadtest::replay::replay(paced).await.unwrap();
    assert_eq!(routed.agreement_percent, 100.0, "{}", routed.to_text());
    assert!(routed.recorded_span_s > 0.0);
    assert!(routed.elapsed_s >= routed.recorded_span_s / 4.0 * 0.95, "{}", routed.to_text());
    gw.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_capture_and_the_old_writer_finishes_its_file() {
    let _lock = common::exclusive().await;
    let dir = common::scratch("capture-reload");
    let (first, second) = (dir.join("first"), dir.join("second"));
    let path = common::write_config(&dir, &config(&first, 100.0, "primary = 1", ""));
    let gw = common::start_file(&path, false).await;
    traffic(&gw, 3, 70).await;
    // A new folder: a new writer; the old one finishes its file while the gateway serves on.
    common::write_config(&dir, &config(&second, 100.0, "primary = 1", ""));
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, 200);
    traffic(&gw, 4, 80).await;
    eventually("the first folder's file finished", Duration::from_secs(30), || {
        let first = first.clone();
        async move {
            let mut r = Records::open(&first).unwrap();
            r.by_ref().count() == 3 && r.problems().cut_files == 0
        }
    })
    .await;
    // Only the share changes: the same writer and file go on; 0% records nothing more.
    common::write_config(&dir, &config(&second, 0.0, "primary = 1", ""));
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, 200);
    traffic(&gw, 5, 90).await;
    gw.stop().await;
    assert_eq!(read_all(&second).len(), 4);
    assert_eq!(files::list(&second).unwrap().len(), 1);
    assert_eq!(read_all(&first).len(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}
