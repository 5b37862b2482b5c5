//! Triton model repositories as they are (`--model-repository DIR`): `config.pbtxt` applied or,
//! without one, the configuration completed as Triton does; version policies; other backends
//! left out with the reason; the repository extension (index, load, unload) in each control
//! mode, over HTTP and gRPC; and poll mode following version folders as they come and go.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestGateway, credit_request};
use gateway::Gateway;
use gateway::config::Overrides;
use gateway::reload::{ConfigSource, ControlMode, RepositoryControl};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

fn credit_file(version: u64) -> PathBuf {
    Path::new(&common::repo()).join("credit-scoring").join(version.to_string()).join("model.onnx")
}

/// Writes `<repo>/<model>/<version>/<file>` copies of credit-scoring's versions, and the config.
fn add_model(repo: &Path, model: &str, versions: &[u64], file: &str, config: Option<&str>) {
    for &v in versions {
        let dir = repo.join(model).join(v.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(credit_file(v.min(3)), dir.join(file)).unwrap();
    }
    if let Some(text) = config {
        std::fs::write(repo.join(model).join("config.pbtxt"), text).unwrap();
    }
}

/// A repository laid out as Triton's documentation shows.
fn triton_repository() -> PathBuf {
    let repo = common::scratch("triton-repo");
    // No config.pbtxt: Triton's auto-complete, latest version only.
    add_model(&repo, "auto", &[1, 2, 3], "model.onnx", None);
    add_model(
        &repo,
        "configured",
        &[1, 2, 3],
        "net.onnx",
        Some(
            r#"name: "configured"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "features" data_type: TYPE_FP32 dims: [ 8 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 preferred_batch_size: [ 8 ] }
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { all { } }
default_model_filename: "net.onnx"
model_warmup [ { name: "w" batch_size: 1 } ]
"#,
        ),
    );
    add_model(
        &repo,
        "specific",
        &[1, 2, 3],
        "model.onnx",
        Some("max_batch_size: 0\nversion_policy: { specific: { versions: [1, 3] } }\n"),
    );
    add_model(
        &repo,
        "tf",
        &[1],
        "model.onnx",
        Some("platform: \"tensorflow_savedmodel\"\nmax_batch_size: 8\n"),
    );
    repo
}

async fn start(repo: &Path, mode: ControlMode, load: &[&str], poll: Duration) -> TestGateway {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        grpc_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let load: Vec<String> = load.iter().map(|s| s.to_string()).collect();
    let control = RepositoryControl::new(repo.to_path_buf(), mode, poll, &load);
    let cfg = gateway::source::repository_config(repo, &overrides, control.selection().as_ref()).unwrap();
    let gw = Gateway::start_with(cfg, ConfigSource::Repository { control, overrides }, false).await.unwrap();
    let (data, admin, grpc) = (gw.data_addr, gw.admin_addr, gw.grpc_addr);
    TestGateway {
        gateway: Some(gw),
        data,
        admin,
        grpc,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

async fn index(gw: &TestGateway, ready: bool) -> Vec<Value> {
    let reply = gw.post_json("/v2/repository/index", &json!({ "ready": ready })).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    reply.json().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_pbtxt_is_applied_and_a_model_without_one_is_completed_as_triton_does() {
    let repo = triton_repository();
    let gw = start(&repo, ControlMode::None, &[], Duration::from_secs(15)).await;

    // Without config.pbtxt: batching on up to Triton's default 4, dims without the batch
    // dimension, the latest version only.
    let auto = gw.get("/v2/models/auto/config").await.json();
    assert_eq!(auto["max_batch_size"], 4, "{auto}");
    assert_eq!(auto["input"][0]["dims"], json!([8]), "{auto}");
    assert!(auto["dynamic_batching"].is_object(), "{auto}");
    assert_eq!(gw.get("/v2/models/auto").await.json()["versions"], json!(["3"]));

    // config.pbtxt: its batch size, delay, instance count, policy and file name.
    let configured = gw.get("/v2/models/configured/config").await.json();
    assert_eq!(configured["max_batch_size"], 16, "{configured}");
    assert_eq!(configured["dynamic_batching"]["max_queue_delay_microseconds"], 200, "{configured}");
    assert_eq!(configured["instance_group"][0]["count"], 2, "{configured}");
    assert_eq!(gw.get("/v2/models/configured").await.json()["versions"], json!(["1", "2", "3"]));
    let pinned = gw.infer("configured", &credit_request(3)).await;
    assert_eq!(pinned.status, 200, "{}", pinned.error());
    assert_eq!(gw.get("/v2/models/specific").await.json()["versions"], json!(["1", "3"]));
    // max_batch_size 0: not batched, dims are whole shapes.
    let specific = gw.get("/v2/models/specific/config").await.json();
    assert_eq!(
        (specific["max_batch_size"].clone(), specific["input"][0]["dims"].clone()),
        (json!(0), json!([-1, 8]))
    );

    // Another backend is not served, and the index says why.
    assert_eq!(gw.get("/v2/models/tf").await.status, 404);
    let all = index(&gw, false).await;
    let tf = all.iter().find(|e| e["name"] == "tf").unwrap();
    assert_eq!(tf["state"], "UNAVAILABLE");
    assert!(tf["reason"].as_str().unwrap().contains("not an ONNX model"), "{tf}");
    let ready: Vec<(String, String)> = index(&gw, true)
        .await
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["version"].as_str().unwrap().to_string()))
        .collect();
    let want = [
        ("auto", "3"),
        ("configured", "1"),
        ("configured", "2"),
        ("configured", "3"),
        ("specific", "1"),
        ("specific", "3"),
    ];
    assert_eq!(ready, want.map(|(a, b)| (a.to_string(), b.to_string())));

    // Mode none: loading and unloading are refused.
    let refused = gw.post_json("/v2/repository/models/auto/unload", &json!({})).await;
    assert_eq!(refused.status, 400);
    assert!(refused.error().contains("not allowed"), "{}", refused.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_loads_and_unloads_through_the_reload_path() {
    let repo = triton_repository();
    let gw = start(&repo, ControlMode::Explicit, &[], Duration::from_secs(15)).await;
    // Nothing loaded at start: the server is ready (no model to wait for), the index lists all.
    assert_eq!(gw.get("/v2/health/ready").await.status, 200);
    let all = index(&gw, false).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|e| e["state"] == "UNAVAILABLE"), "{all:?}");
    assert_eq!(gw.infer("auto", &credit_request(1)).await.status, 404);

    let loaded = gw.post_json("/v2/repository/models/auto/load", &json!({})).await;
    assert_eq!(loaded.status, 200, "{}", loaded.error());
    assert_eq!(gw.infer("auto", &credit_request(1)).await.status, 200);
    let refused = gw.post_json("/v2/repository/models/tf/load", &json!({})).await;
    assert_eq!(refused.status, 400);
    assert!(refused.error().contains("not an ONNX model"), "{}", refused.error());
    let missing = gw.post_json("/v2/repository/models/nope/load", &json!({})).await;
    assert_eq!(missing.status, 400);
    let with_files = gw
        .post_json("/v2/repository/models/auto/load", &json!({"parameters": {"file:1/model.onnx": "AAAA"}}))
        .await;
    assert_eq!(with_files.status, 400);
    // The refused loads left the loaded model serving.
    assert_eq!(gw.infer("auto", &credit_request(1)).await.status, 200);

    let unloaded = gw.post_json("/v2/repository/models/auto/unload", &json!({})).await;
    assert_eq!(unloaded.status, 200, "{}", unloaded.error());
    assert_eq!(gw.infer("auto", &credit_request(1)).await.status, 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_follows_version_folders_as_they_come_and_go() {
    let repo = triton_repository();
    std::fs::write(
        repo.join("auto").join("config.pbtxt"),
        "version_policy: { all { } }\nmax_batch_size: 8\n",
    )
    .unwrap();
    let gw = start(&repo, ControlMode::Poll, &[], Duration::from_secs(1)).await;
    assert_eq!(versions(&gw).await, json!(["1", "2", "3"]));
    assert_eq!(gw.post_json("/v2/repository/models/auto/load", &json!({})).await.status, 400);

    add_model(&repo, "auto", &[4], "model.onnx", None);
    until_versions(&gw, json!(["1", "2", "3", "4"])).await;
    // The new version is the primary: it answers unpinned requests.
    assert_eq!(gw.infer("auto", &credit_request(1)).await.json()["model_version"], "4");
    std::fs::remove_dir_all(repo.join("auto").join("4")).unwrap();
    until_versions(&gw, json!(["1", "2", "3"])).await;
    gw.stop().await;
}

async fn versions(gw: &TestGateway) -> Value {
    gw.get("/v2/models/auto").await.json()["versions"].clone()
}

async fn until_versions(gw: &TestGateway, want: Value) {
    for _ in 0..400 {
        if versions(gw).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await; // polling the repository poller
    }
    panic!("the repository change was not applied: want {want}, got {}", versions(gw).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_extension_over_grpc() {
    use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use gateway::grpc::proto::{
        RepositoryIndexRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
    };
    let repo = triton_repository();
    let gw = start(&repo, ControlMode::Explicit, &["specific"], Duration::from_secs(15)).await;
    let mut client =
        GrpcInferenceServiceClient::connect(format!("http://{}", gw.grpc.unwrap())).await.unwrap();
    let ready = client
        .repository_index(RepositoryIndexRequest { repository_name: String::new(), ready: true })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(String, String)> =
        ready.models.iter().map(|m| (m.name.clone(), m.version.clone())).collect();
    assert_eq!(names, [("specific".to_string(), "1".to_string()), ("specific".to_string(), "3".to_string())]);
    let load = RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: "auto".into(),
        parameters: Default::default(),
    };
    client.repository_model_load(load).await.unwrap();
    assert_eq!(gw.infer("auto", &credit_request(1)).await.status, 200);
    let unload = RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: "auto".into(),
        parameters: Default::default(),
    };
    client.repository_model_unload(unload).await.unwrap();
    let tf = RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: "tf".into(),
        parameters: Default::default(),
    };
    let status = client.repository_model_load(tf).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    gw.stop().await;
}
