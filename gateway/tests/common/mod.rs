//! Shared test harness: start a real gateway on 127.0.0.1:0 from a TOML snippet, and a small
//! HTTP client. Every test file includes it with `mod common;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gateway::Gateway;
use gateway::config::{self, Overrides};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Absolute path of the repository's `models/` folder.
pub fn repo() -> String {
    format!("{}/../models", env!("CARGO_MANIFEST_DIR"))
}

/// Absolute path of the test models (`models/tests/`).
pub fn test_repo() -> String {
    format!("{}/../models/tests", env!("CARGO_MANIFEST_DIR"))
}

/// Replaces `REPO` and `TESTS` in `toml` with the model folders.
pub fn with_paths(toml: &str) -> String {
    toml.replace("TESTS", &test_repo()).replace("REPO", &repo())
}

pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    /// The gRPC listener, when the config sets `grpc_listen`.
    pub grpc: Option<SocketAddr>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

/// Starts a gateway. `toml` holds the `[models...]` tables (and optionally more `[server]`
/// keys via `server_extra`); listeners are bound on 127.0.0.1:0.
/// credit-scoring with an 80/20 split (v1 primary, v2 candidate), sticky users on `x-user-id`,
/// pins on `x-model-version`, and v3 pin-only: the traffic tests over HTTP and gRPC share it.
pub const SPLIT: &str = r#"
[models.credit-scoring]
repository = "REPO"
[models.credit-scoring.routing]
primary = 1
candidates = [{ version = 2, percent = 20.0 }]
sticky_header = "x-user-id"
pin_header = "x-model-version"
versions = [3]
"#;

pub async fn start(toml: &str) -> TestGateway {
    start_with_server(toml, "").await
}

pub async fn start_with_server(toml: &str, server_extra: &str) -> TestGateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n{}",
        with_paths(toml)
    );
    let cfg = config::from_toml(&text, &Overrides::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    start_config(cfg).await
}

pub async fn start_config(cfg: config::GatewayConfig) -> TestGateway {
    let gateway = Gateway::start(cfg).await.expect("gateway starts");
    let data = gateway.data_addr;
    let admin = gateway.admin_addr;
    let grpc = gateway.grpc_addr;
    let client = Client::builder(TokioExecutor::new()).build_http();
    TestGateway { gateway: Some(gateway), data, admin, grpc, client }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }
}

impl TestGateway {
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .expect("response within 60 s")
            .expect("request succeeds");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.get_at(self.data, path).await
    }

    pub async fn get_at(&self, addr: SocketAddr, path: &str) -> Reply {
        let req = Request::get(format!("http://{addr}{path}")).body(Full::new(Bytes::new())).unwrap();
        self.send(req).await
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::post(format!("http://{}{path}", self.data));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::new(body.into())).unwrap()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, serde_json::to_vec(body).unwrap(), &[("content-type", "application/json")]).await
    }

    /// POST to `/v2/models/{model}/infer`.
    pub async fn infer(&self, model: &str, body: &Value) -> Reply {
        self.post_json(&format!("/v2/models/{model}/infer"), body).await
    }

    /// The admin plane's /metrics text.
    pub async fn metrics(&self) -> String {
        String::from_utf8(self.get_at(self.admin, "/metrics").await.body.to_vec()).unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown();
            g.wait().await;
        }
    }
}

/// The value of one sample in Prometheus text (0 when absent). `labels` must all be present.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one sample in Prometheus text, or `None` when no series matches: for
/// assertions that must fail when a series is missing (a missing series is not zero).
pub fn metric_present(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A credit-scoring request with `rows` rows of features drawn from a fixed seed: varied
/// inputs, so that versions that differ get to show it.
pub fn credit_request_seeded(rows: usize, seed: u64) -> Value {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<f32> = (0..rows * 8).map(|_| rng.f32() * 4.0 - 2.0).collect();
    serde_json::json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 8], "data": data}]})
}

/// A credit-scoring request body with `rows` rows of 8 features.
pub fn credit_request(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 8).map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0).collect();
    serde_json::json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 8], "data": data}]})
}

pub const CREDIT: &str = "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n";

/// A unique scratch folder for one test (under the target dir's tmp).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a config file (listeners on 127.0.0.1:0, `REPO`/`TESTS` replaced) into `dir`.
pub fn write_config(dir: &std::path::Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let text =
        format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}", with_paths(toml));
    // Write then rename, as an editor would: the watcher never sees half a file.
    let temp = dir.join("gateway.toml.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    path
}

/// Starts a gateway from a config file, so reloads re-read it.
pub async fn start_file(path: &std::path::Path, watch: bool) -> TestGateway {
    let overrides = Overrides::default();
    let cfg = config::load_file(path, &overrides).unwrap_or_else(|e| panic!("{e}"));
    let source = gateway::reload::ConfigSource::File { path: path.to_path_buf(), overrides };
    let gateway = Gateway::start_with(cfg, source, watch).await.expect("gateway starts");
    let (data, admin, grpc) = (gateway.data_addr, gateway.admin_addr, gateway.grpc_addr);
    let client = Client::builder(TokioExecutor::new()).build_http();
    TestGateway { gateway: Some(gateway), data, admin, grpc, client }
}

impl TestGateway {
    /// POST on the admin plane, with a bearer token when given.
    pub async fn admin_post(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = Request::post(format!("http://{}{path}", self.admin));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req.body(Full::new(Bytes::new())).unwrap()).await
    }

    /// Polls /metrics until `done` holds for it (bounded by 120 s: shadow workers run at idle
    /// CPU priority, so on a machine busy with other tests they may wait a long time for a core).
    pub async fn wait_for_metrics(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let text = self.metrics().await;
            if done(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await; // polling interval, not a wait-and-hope
        }
    }
}

// ---- Added for the protocol, binary and hostile tests ----

/// A `[models.NAME]` table serving `models/tests/NAME` version 1.
pub fn test_model(name: &str) -> String {
    format!("[models.{name}]\nrepository = \"TESTS\"\nrouting = {{ primary = 1 }}\n")
}

/// `models/tests/reference.json`: inputs and the outputs Python's onnxruntime gave for them.
pub fn reference() -> Vec<Value> {
    let path = format!("{}/reference.json", test_repo());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match serde_json::from_str(&text).unwrap() {
        Value::Array(entries) => entries,
        other => panic!("{path} is not a JSON array: {other}"),
    }
}

/// A binary-extension body: the JSON header, then `raw`; returns it with the JSON length.
pub fn binary_body(json: &Value, raw: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(json).unwrap();
    let json_length = body.len();
    body.extend_from_slice(raw);
    (body, json_length)
}

/// BYTES elements in the binary encoding: a 4-byte little-endian length before each.
pub fn length_prefixed(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&u32::try_from(e.len()).unwrap().to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

impl TestGateway {
    /// POSTs `json` followed by `raw` with `Inference-Header-Content-Length` set.
    pub async fn post_binary(&self, path: &str, json: &Value, raw: &[u8]) -> Reply {
        let (body, json_length) = binary_body(json, raw);
        let n = json_length.to_string();
        self.post(
            path,
            body,
            &[("content-type", "application/octet-stream"), ("inference-header-content-length", &n)],
        )
        .await
    }

    /// Sends `request` as raw bytes on a fresh connection (closed by the request's
    /// `Connection: close`) and returns everything the gateway wrote back.
    pub async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.data).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut out))
            .await
            .expect("connection closed within 60 s")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A binary-extension reply split into its JSON header and each binary output's bytes.
pub struct BinaryReply {
    pub json: Value,
    /// Output name → its raw bytes, for the outputs sent as binary data.
    pub parts: Vec<(String, Vec<u8>)>,
}

impl BinaryReply {
    pub fn part(&self, name: &str) -> &[u8] {
        self.parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .unwrap_or_else(|| panic!("no binary part for output {name}"))
    }
}

impl Reply {
    /// Splits a binary-extension reply, checking its header and content type, that each
    /// binary output's `binary_data_size` is honoured and that no byte is left over.
    pub fn binary(&self) -> BinaryReply {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/octet-stream"));
        let n: usize = self
            .header("inference-header-content-length")
            .expect("inference-header-content-length header")
            .parse()
            .unwrap();
        assert!(n <= self.body.len(), "header length {n} > body {}", self.body.len());
        let json: Value = serde_json::from_slice(&self.body[..n]).unwrap();
        let mut rest = &self.body[n..];
        let mut parts = Vec::new();
        for out in json["outputs"].as_array().unwrap() {
            if let Some(size) = out["parameters"]["binary_data_size"].as_u64() {
                assert!(out.get("data").is_none(), "binary output with data too: {out}");
                let size = usize::try_from(size).unwrap();
                assert!(size <= rest.len(), "{out} claims {size} bytes, {} remain", rest.len());
                let (mine, tail) = rest.split_at(size);
                parts.push((out["name"].as_str().unwrap().to_string(), mine.to_vec()));
                rest = tail;
            }
        }
        assert!(rest.is_empty(), "{} bytes after the last binary output", rest.len());
        BinaryReply { json, parts }
    }

    /// The output called `name` in a JSON reply.
    pub fn output(&self, name: &str) -> Value {
        let v = self.json();
        v["outputs"]
            .as_array()
            .and_then(|outs| outs.iter().find(|o| o["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no output {name} in {v}"))
    }
}

/// Asserts `got` equals `expected` element by element: integers, booleans and strings
/// exactly, floats within 1e-4 relative (1e-6 absolute near zero); `what` names the tensor.
pub fn assert_data_close(what: &str, expected: &Value, got: &Value) {
    let (e, g) = (flat(expected), flat(got));
    assert_eq!(e.len(), g.len(), "{what}: {e:?} vs {g:?}");
    for (i, (e, g)) in e.iter().zip(&g).enumerate() {
        match (e.as_f64(), g.as_f64()) {
            (Some(x), Some(y)) if e.is_f64() || g.is_f64() => {
                let ok = (x - y).abs() <= 1e-6 || (x - y).abs() <= 1e-4 * x.abs().max(y.abs());
                assert!(ok, "{what}[{i}]: expected {x}, got {y}");
            }
            _ => assert_eq!(e, g, "{what}[{i}]"),
        }
    }
}

fn flat(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.clone()],
    }
}

// ---- Additions for the connection and start-up tests ----

/// Polls `check` every 5 ms until it holds; panics naming `what` after `limit`. Waits on
/// observable state (a metric, a socket), never on time alone.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serialises the tests of one test binary that read process-wide metrics (the in-flight
/// gauge, per-version counters): the Prometheus recorder is shared by every gateway in it.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Sends `request` with `client` (bounded by 60 s) and collects the reply.
pub async fn send_with(client: &Client<HttpConnector, Full<Bytes>>, request: Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .expect("response within 60 s")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// A GET on a fresh client (for a gateway this test did not start in-process).
pub async fn get_url(url: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    send_with(&client, req).await
}

impl TestGateway {
    /// POSTs `body` to `/v2/models/{model}/infer` on a task of its own, for a request that must
    /// be in progress while the test does something else.
    pub fn spawn_infer(&self, model: &str, body: &Value) -> tokio::task::JoinHandle<Reply> {
        let client = self.client.clone();
        let req = Request::post(format!("http://{}/v2/models/{model}/infer", self.data))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap();
        tokio::spawn(async move { send_with(&client, req).await })
    }

    /// One sample from the admin plane's /metrics (see `metric`).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics().await, name, labels)
    }

    /// Waits (up to 120 s, as `wait_for_metrics`, polling every 5 ms) until the sample satisfies
    /// `want`; returns it.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        want: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let value = self.metric(name, labels).await;
            if want(value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name}{labels:?}; last value {value}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Requests waiting in a version's queue, from the admin plane's /admin/models.
    pub async fn queue_depth(&self, model: &str, version: u64) -> u64 {
        let models = self.get_at(self.admin, "/admin/models").await.json();
        models["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["name"] == model)
            .flat_map(|m| m["versions"].as_array().cloned().unwrap_or_default())
            .find(|v| v["version"] == version)
            .and_then(|v| v["queue_depth"].as_u64())
            .unwrap_or_else(|| panic!("/admin/models lists no {model} v{version}: {models}"))
    }
}

/// Every request/response pair in `models/tests/reference.json` (computed with ONNX Runtime
/// in Python by `models/make_models.py`).
pub fn references() -> Vec<Value> {
    let path = format!("{}/reference.json", test_repo());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The first reference case of `model`.
pub fn reference_for(model: &str) -> Value {
    references()
        .into_iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("no reference case for {model}"))
}

/// Asserts that a V2 response's outputs equal `expected` (name, datatype, shape; numbers to
/// 1e-5 relative, everything else exactly), in any order.
pub fn assert_outputs(response: &Value, expected: &[Value]) {
    let outputs = response["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), expected.len(), "{response}");
    for want in expected {
        let got = outputs
            .iter()
            .find(|o| o["name"] == want["name"])
            .unwrap_or_else(|| panic!("no output {} in {response}", want["name"]));
        assert_eq!(got["datatype"], want["datatype"], "{}", want["name"]);
        assert_eq!(got["shape"], want["shape"], "{}", want["name"]);
        let (g, w) = (got["data"].as_array().unwrap(), want["data"].as_array().unwrap());
        assert_eq!(g.len(), w.len(), "{}", want["name"]);
        for (a, b) in g.iter().zip(w) {
            let integers = (a.is_i64() && b.is_i64()) || (a.is_u64() && b.is_u64());
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if !integers => {
                    assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{}: {x} != {y}", want["name"])
                }
                _ => assert_eq!(a, b, "{}", want["name"]),
            }
        }
    }
}

// ---- Additions for the gRPC tests ----

pub mod grpc;

pub type GrpcClient = gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient<
    tonic::transport::Channel,
>;

impl TestGateway {
    /// A client on a fresh HTTP/2 connection to the gRPC listener (which must be on).
    pub async fn grpc_client(&self) -> GrpcClient {
        let addr = self.grpc.expect("grpc_listen is set");
        tokio::time::timeout(Duration::from_secs(30), GrpcClient::connect(format!("http://{addr}")))
            .await
            .expect("connected within 30 s")
            .expect("gRPC connection")
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}
