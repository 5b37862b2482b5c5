//! The MLflow registry client against a real tracking server: PyPI's `mlflow` (pinned by
//! `scripts/mlflow/setup.sh`), started here on a free loopback port with a SQLite store and a
//! proxied artifact store in a scratch folder, in its own process group, and stopped by that
//! group. Versions are registered by MLflow itself (`scripts/mlflow/register.py` calls
//! `mlflow.onnx.log_model`), and what the Rust client changes is read back with MLflow's own
//! Python client.
//!
//! `#[ignore]`d for a plain `cargo test` (no MLflow on a fresh machine):
//! `scripts/mlflow/setup.sh && cargo test -p gateway --test mlflow -- --include-ignored`.
//! `MLFLOW_VENV` names another venv than `/tmp/gateway-mlflow-venv`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::source::cache::Cache;
use gateway::source::mlflow::{Credentials, MlflowClient, MlflowError, ModelVersion};
use serde_json::Value;

const MODEL: &str = "credit-scoring";
const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(15);

fn venv() -> PathBuf {
    std::env::var_os("MLFLOW_VENV").map_or_else(|| PathBuf::from("/tmp/gateway-mlflow-venv"), PathBuf::from)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_file(version: u32) -> PathBuf {
    repo_root().join(format!("models/credit-scoring/{version}/model.onnx"))
}

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("gateway-mlflow-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `mlflow server` in its own process group; dropping it stops the whole group.
struct Server {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mlflow = venv().join("bin/mlflow");
        assert!(mlflow.exists(), "{} missing: run scripts/mlflow/setup.sh", mlflow.display());
        // The port is free when we pick it but another process may take it before mlflow binds;
        // a server that dies at start is retried on a new port.
        for _attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            // One file for both streams (uvicorn's access log included), sharing one offset.
            let log = dir.join(format!("server-{port}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&mlflow)
                .arg("server")
                .arg("--backend-store-uri")
                .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
                .arg("--artifacts-destination")
                .arg(dir.join("artifacts"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
                // The job runner (GenAI evaluation jobs) adds seven consumer processes and seconds
                // of start-up; the registry does not need it.
                .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .process_group(0)
                .spawn()
                .expect("mlflow server starts");
            let mut server = Server { child: Some(child), port, log };
            if server.wait_healthy() {
                return server;
            }
            server.stop();
        }
        panic!("mlflow server did not start; see {}", dir.display());
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/health` until it answers 200, the process exits, or the start limit passes.
    fn wait_healthy(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < START_LIMIT {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                return false;
            }
            if http_get(self.port, "/health").is_some_and(|answer| answer.starts_with("HTTP/1.1 200")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100)); // polling a process start
        }
        false
    }

    /// SIGTERM to the group, then SIGKILL if anything is left after the stop limit; returns once
    /// no process of the group is alive (uvicorn's worker included).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = child.id();
        signal_group("TERM", group);
        if !wait_group_gone(group, STOP_LIMIT) {
            signal_group("KILL", group);
            assert!(wait_group_gone(group, STOP_LIMIT), "mlflow process group {group} survived SIGKILL");
        }
        let _ = child.wait();
    }

    /// Requests that the server's access log records, so far.
    fn access_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the access log has caught up with every request answered so far: a marker
    /// request is sent and the log polled until it shows.
    fn sync_access_log(&self) {
        let marker = format!("/health?sync={}", fastrand::u64(..));
        assert!(http_get(self.port, &marker).is_some());
        let started = Instant::now();
        while !self.access_log().contains(&marker) {
            assert!(started.elapsed() < Duration::from_secs(10), "access log never showed {marker}");
            std::thread::sleep(Duration::from_millis(20)); // polling a log file
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(signal: &str, group: u32) {
    let _ = Command::new("kill").args([&format!("-{signal}"), "--", &format!("-{group}")]).status();
}

/// True once no live (non-zombie) process is in `group`.
fn wait_group_gone(group: u32, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !group_alive(group) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50)); // polling process exit
    }
    !group_alive(group)
}

fn group_alive(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(") ") else { return false };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
    })
}

/// One plain HTTP/1.1 GET on loopback; the whole answer, or `None` if nothing listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Runs `scripts/mlflow/register.py` with the venv's Python against `server`; its JSON answer.
fn register_py(server: &Server, args: &[&str]) -> Value {
    let output = Command::new(venv().join("bin/python"))
        .arg(repo_root().join("scripts/mlflow/register.py"))
        .args(args)
        .env("MLFLOW_TRACKING_URI", server.uri())
        .stdin(Stdio::null())
        .output()
        .expect("the venv's python runs");
    assert!(
        output.status.success(),
        "register.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Versions 1 and 2 of credit-scoring, champion → 1, challenger → 2.
fn register_credit_scoring(server: &Server) {
    let (one, two) = (model_file(1), model_file(2));
    let answer = register_py(
        server,
        &[
            "register",
            MODEL,
            one.to_str().unwrap(),
            two.to_str().unwrap(),
            "--alias",
            "champion=1",
            "--alias",
            "challenger=2",
        ],
    );
    assert_eq!(answer["versions"].as_array().unwrap().len(), 2, "{answer}");
}

fn client(server: &Server) -> MlflowClient {
    MlflowClient::with_credentials(&server.uri(), Credentials::None)
        .unwrap()
        .with_timeout(Duration::from_secs(5))
}

fn downloads_of(server: &Server, version: &ModelVersion) -> usize {
    let id = version.model_id.as_deref().unwrap();
    let needle = format!(
        "\"GET /api/2.0/mlflow-artifacts/artifacts/0/models/{id}/artifacts/model.onnx HTTP/1.1\" 200"
    );
    server.access_log().matches(&needle).count()
}

#[tokio::test]
#[ignore = "needs mlflow (scripts/mlflow/setup.sh)"]
async fn aliases_and_tags_round_trip_with_mlflows_own_client() {
    let scratch = Scratch::new("registry");
    let server = Server::start(&scratch.0);
    register_credit_scoring(&server);
    let client = client(&server);

    let champion = client.version_by_alias(MODEL, "champion").await.unwrap();
    let challenger = client.version_by_alias(MODEL, "challenger").await.unwrap();
    assert_eq!((champion.version, challenger.version), (1, 2));
    assert!(champion.source.starts_with("models:/m-"), "MLflow 3 names a logged model: {champion:?}");
    assert!(champion.model_id.is_some() && champion.run_id.is_some(), "{champion:?}");
    assert!(champion.aliases.contains(&"champion".to_owned()));
    assert_eq!(client.get_version(MODEL, 2).await.unwrap(), challenger);

    // Moved by MLflow's Python client: the next read sees it.
    register_py(&server, &["alias", MODEL, "champion", "2"]);
    assert_eq!(client.version_by_alias(MODEL, "champion").await.unwrap().version, 2);

    // Moved by us: MLflow's Python client sees it.
    client.set_alias(MODEL, "challenger", 1).await.unwrap();
    let seen = register_py(&server, &["show", MODEL, "--alias", "challenger"]);
    assert_eq!(seen["version"], "1", "{seen}");
    client.set_alias(MODEL, "shadow", 2).await.unwrap();
    assert_eq!(register_py(&server, &["show", MODEL, "--alias", "shadow"])["version"], "2");
    let aliases = client.aliases(MODEL).await.unwrap();
    assert_eq!(
        aliases.into_iter().collect::<Vec<_>>(),
        [("challenger".to_owned(), 1), ("champion".to_owned(), 2), ("shadow".to_owned(), 2)]
    );

    client.set_version_tag(MODEL, 2, "gateway.validated", "true").await.unwrap();
    let seen = register_py(&server, &["show", MODEL, "--version", "2"]);
    assert_eq!(seen["tags"]["gateway.validated"], "true", "{seen}");
    let tags = client.get_version(MODEL, 2).await.unwrap().tags;
    assert_eq!(tags.get("gateway.validated").map(String::as_str), Some("true"));

    // What is not there is NotFound, whichever way MLflow words it (an unknown alias of a known
    // model is a 400 INVALID_PARAMETER_VALUE there).
    for result in [
        client.version_by_alias(MODEL, "nonesuch").await,
        client.version_by_alias("no-such-model", "champion").await,
        client.get_version(MODEL, 99).await,
        client.get_version("no-such-model", 1).await,
    ] {
        assert!(matches!(result, Err(MlflowError::NotFound { .. })), "{result:?}");
    }
    let err = client.set_alias(MODEL, "champion", 99).await.unwrap_err();
    assert!(matches!(err, MlflowError::NotFound { .. }), "{err:?}");
    let err = client.set_version_tag("no-such-model", 1, "k", "v").await.unwrap_err();
    assert!(matches!(err, MlflowError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
#[ignore = "needs mlflow (scripts/mlflow/setup.sh)"]
async fn onnx_files_are_downloaded_once_into_the_cache() {
    let scratch = Scratch::new("fetch");
    let server = Server::start(&scratch.0);
    register_credit_scoring(&server);
    let client = client(&server);
    let cache = Cache::open(scratch.0.join("cache")).await.unwrap();

    let champion = client.version_by_alias(MODEL, "champion").await.unwrap();
    let challenger = client.version_by_alias(MODEL, "challenger").await.unwrap();
    let one = client.fetch_onnx(&champion, &cache).await.unwrap();
    let two = client.fetch_onnx(&challenger, &cache).await.unwrap();
    assert_eq!(std::fs::read(&one.path).unwrap(), std::fs::read(model_file(1)).unwrap());
    assert_eq!(std::fs::read(&two.path).unwrap(), std::fs::read(model_file(2)).unwrap());
    assert_ne!(one.sha256, two.sha256);
    assert_eq!(one.path, scratch.0.join(format!("cache/sha256-{}.onnx", one.sha256)));
    assert_eq!(cache.get(&one.sha256).await.unwrap(), Some(one.clone()));

    // Seen before, same size in the listing: answered from the cache, nothing downloaded.
    assert_eq!(client.fetch_onnx(&champion, &cache).await.unwrap(), one);
    let reopened = Cache::open(scratch.0.join("cache")).await.unwrap();
    assert_eq!(client.fetch_onnx(&challenger, &reopened).await.unwrap(), two);
    server.sync_access_log();
    assert_eq!((downloads_of(&server, &champion), downloads_of(&server, &challenger)), (1, 1));
    let index = std::fs::read_to_string(scratch.0.join("cache/index.json")).unwrap();
    assert!(index.contains(&one.sha256) && index.contains(&two.sha256), "{index}");

    // Sources older clients wrote, and MLflow 3's runs:/ URI that names a logged model.
    let legacy = register_py(&server, &["legacy", "legacy", model_file(2).to_str().unwrap()]);
    let sources: Vec<&str> =
        legacy["versions"].as_array().unwrap().iter().map(|v| v["source"].as_str().unwrap()).collect();
    assert!(sources[0].starts_with("runs:/") && sources[0].ends_with("/legacy"), "{sources:?}");
    assert!(sources[1].starts_with("mlflow-artifacts:/"), "{sources:?}");
    assert!(sources[2].starts_with("runs:/") && sources[2].ends_with("/model"), "{sources:?}");
    for version in 1..=3 {
        let v = client.get_version("legacy", version).await.unwrap();
        let fetched = client.fetch_onnx(&v, &cache).await.unwrap();
        assert_eq!(fetched.sha256, two.sha256, "version {version} from {}", v.source);
    }

    // mlflow.onnx.log_model's default layout keeps big tensors in a sidecar file.
    let dense = repo_root().join("models/dense/1/model.onnx");
    register_py(&server, &["register", "dense", dense.to_str().unwrap(), "--external-data"]);
    let v = client.get_version("dense", 1).await.unwrap();
    let err = client.fetch_onnx(&v, &cache).await.unwrap_err();
    assert!(matches!(&err, MlflowError::ExternalData { files, .. } if files.len() == 1), "{err:?}");
}

#[tokio::test]
#[ignore = "needs mlflow (scripts/mlflow/setup.sh)"]
async fn a_stopped_server_is_unreachable_within_the_timeout() {
    let scratch = Scratch::new("stopped");
    let mut server = Server::start(&scratch.0);
    let timeout = Duration::from_secs(3);
    let client = client(&server).with_timeout(timeout);
    let answered = client.get_version(MODEL, 1).await;
    assert!(matches!(answered, Err(MlflowError::NotFound { .. })), "{answered:?}");

    server.stop();
    let started = Instant::now();
    let err = client.version_by_alias(MODEL, "champion").await.unwrap_err();
    assert!(matches!(err, MlflowError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < timeout, "took {:?}", started.elapsed());
}

/// The gateway with `[models.credit-scoring.source]` on this server: the routing names versions
/// by alias, the registry is polled every second, and a rollout promotes quickly.
async fn gateway_on(server: &Server, dir: &Path) -> common::TestGateway {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[models.credit-scoring.source]
mlflow = {{ tracking_uri = "{uri}", name = "{MODEL}", poll_s = 1 }}
cache_dir = "{cache}"
[models.credit-scoring.routing]
primary = "@champion"
candidates = [{{ version = "@challenger", percent = 50.0 }}]
sticky_header = "x-user-id"
[models.credit-scoring.rollout]
steps = [50, 100]
step_interval_s = 1
min_requests = 5
"#,
        uri = server.uri(),
        cache = dir.join("cache").display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let overrides = gateway::config::Overrides::default();
    let cfg = gateway::source::load_file(&path, &overrides).await.unwrap();
    let source = gateway::reload::ConfigSource::File { path, overrides };
    let gw = gateway::Gateway::start_with(cfg, source, false).await.unwrap();
    let (data, admin, grpc) = (gw.data_addr, gw.admin_addr, gw.grpc_addr);
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    common::TestGateway { gateway: Some(gw), data, admin, grpc, client }
}

/// The versions that answered `n` requests from distinct users.
async fn answering(gw: &common::TestGateway, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..n {
        let user = format!("u-{}", fastrand::u64(..));
        let reply = gw
            .post(
                "/v2/models/credit-scoring/infer",
                serde_json::to_vec(&common::credit_request_seeded(1, i as u64)).unwrap(),
                &[("x-user-id", &user)],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.error());
        seen.insert(reply.header("x-model-version").unwrap().to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mlflow (scripts/mlflow/setup.sh)"]
async fn the_gateway_serves_aliases_follows_them_and_promotes_through_the_registry() {
    let scratch = Scratch::new("gateway");
    let mut server = Server::start(&scratch.0);
    register_credit_scoring(&server); // champion → 1, challenger → 2
    let gw = gateway_on(&server, &scratch.0).await;
    let client = client(&server);

    // Served by alias: the champion and the challenger (the rollout's candidate) both answer,
    // from files the gateway fetched into its cache.
    let both: std::collections::BTreeSet<String> = ["1".to_string(), "2".to_string()].into();
    assert_eq!(answering(&gw, 60).await, both);
    assert!(scratch.0.join("cache/credit-scoring/2/model.onnx").is_file());

    // The candidate passes every step and is promoted: the gateway moves the champion alias in
    // MLflow and tags the version; the next poll follows the alias, and version 2 serves alone.
    let started = Instant::now();
    loop {
        answering(&gw, 10).await;
        if client.version_by_alias(MODEL, "champion").await.unwrap().version == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the promotion never reached MLflow");
    }
    let seen = register_py(&server, &["show", MODEL, "--alias", "champion"]);
    assert_eq!(seen["version"], "2", "read back with MLflow's own client: {seen}");
    let tag = seen["tags"]["gateway.rollout"].as_str().unwrap_or_default().to_string();
    assert!(tag.starts_with("promote"), "{seen}");
    until_served_by(&gw, "2").await;

    // An operator points the challenger alias at version 1 in MLflow: within a poll, with no
    // restart, version 1 is the candidate of a new rollout and takes its first step's share.
    register_py(&server, &["alias", MODEL, "challenger", "1"]);
    let started = Instant::now();
    while !answering(&gw, 20).await.contains("1") {
        assert!(started.elapsed() < Duration::from_secs(30), "the moved challenger alias was not followed");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the registry poller
    }

    // The registry goes away: what is loaded keeps serving, and /admin/models says so.
    server.stop();
    let started = Instant::now();
    loop {
        let models = gw.get_at(gw.admin, "/admin/models").await.json();
        let poll = models["models"][0]["registry"].clone();
        if poll["outcome"] == "failed" {
            assert!(poll["error"].as_str().is_some_and(|e| !e.is_empty()), "{poll}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the failed poll never showed: {models}");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the registry poller
    }
    assert!(!answering(&gw, 10).await.is_empty());
    gw.stop().await;
}

/// Polls until every answer comes from `version` (bounded: the registry is polled every second).
async fn until_served_by(gw: &common::TestGateway, version: &str) {
    let started = Instant::now();
    loop {
        let seen = answering(gw, 20).await;
        if seen.len() == 1 && seen.contains(version) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still answered by {seen:?}, not only v{version}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the registry poller
    }
}
