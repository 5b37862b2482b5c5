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
    pub client: Client<HttpConnector, Full<Bytes>>,
}

/// Starts a gateway. `toml` holds the `[models...]` tables (and optionally more `[server]`
/// keys via `server_extra`); listeners are bound on 127.0.0.1:0.
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
    let client = Client::builder(TokioExecutor::new()).build_http();
    TestGateway {
        gateway: Some(gateway),
        data,
        admin,
        client,
    }
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
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.get_at(self.data, path).await
    }

    pub async fn get_at(&self, addr: SocketAddr, path: &str) -> Reply {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
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
        self.post(
            path,
            serde_json::to_vec(body).unwrap(),
            &[("content-type", "application/json")],
        )
        .await
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

/// A credit-scoring request body with `rows` rows of 8 features.
pub fn credit_request(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 8)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
        .collect();
    serde_json::json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 8], "data": data}]})
}

pub const CREDIT: &str = "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n";

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
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
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
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
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

    /// Waits (up to 30 s, polling every 5 ms) until the sample satisfies `want`; returns it.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        want: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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
pub fn reference(model: &str) -> Value {
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
                (Some(x), Some(y)) if !integers => assert!(
                    (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                    "{}: {x} != {y}",
                    want["name"]
                ),
                _ => assert_eq!(a, b, "{}", want["name"]),
            }
        }
    }
}
