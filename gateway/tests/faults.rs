//! Faults an operator or a client can cause, and what must hold through them: a model file
//! replaced, truncated, corrupted or removed between reloads; requests that ONNX Runtime
//! refuses at run time (alone, and inside a batch); zero-element tensors with dimensions no
//! tensor may have; more rows than a batched version takes. (A shadow that fails every run is
//! in `traffic.rs`: `a_failing_shadow_leaves_primary_answers_intact`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestGateway, credit_request_seeded, scratch, start_file, test_model, write_config};
use gateway::batching::{BatchPolicy, InferError};
use gateway::onnx::SessionOptions;
use gateway::registry::{FileId, ServedVersion, VersionKey};
use gateway::tensor::{Tensor, TensorData};
use serde_json::{Value, json};

fn model_file(repo: &str, model: &str, version: u64) -> PathBuf {
    Path::new(repo).join(model).join(version.to_string()).join("model.onnx")
}

/// A repository in a scratch folder holding `credit/1`, a copy of credit-scoring v1.
fn scratch_repository(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let file = dir.join("repo").join("credit").join("1").join("model.onnx");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::copy(model_file(&common::repo(), "credit-scoring", 1), &file).unwrap();
    let toml = format!(
        "[models.credit]\nrepository = \"{}\"\nrouting = {{ primary = 1 }}\n",
        dir.join("repo").display()
    );
    write_config(&dir, &toml);
    (dir, file)
}

/// Credit's answer to a fixed request.
async fn probabilities(gw: &TestGateway) -> Value {
    let reply = gw.infer("credit", &credit_request_seeded(4, 7)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.output("probabilities")["data"].clone()
}

/// Replaces `file` the way a deployment does: a new file renamed over the old one.
fn replace(file: &Path, content: &[u8]) {
    let temp = file.with_extension("new");
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_replaced_in_place_is_loaded_by_the_next_reload() {
    let (dir, file) = scratch_repository("replaced");
    let gw = start_file(&dir.join("gateway.toml"), false).await;
    let before = probabilities(&gw).await;

    let v2 = std::fs::read(model_file(&common::repo(), "credit-scoring", 2)).unwrap();
    replace(&file, &v2);
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["loaded"], json!(["credit/1"]), "{}", reply.json());
    let after = probabilities(&gw).await;
    assert_ne!(before, after, "the replaced file must answer now");

    // The same answer as a gateway started on the new file.
    let fresh = start_file(&dir.join("gateway.toml"), false).await;
    assert_eq!(probabilities(&fresh).await, after);
    // A reload with nothing changed loads nothing.
    let again = gw.admin_post("/admin/reload", None).await.json();
    assert_eq!(again["loaded"], json!([]), "{again}");
    fresh.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_corrupted_or_removed_model_file_refuses_the_reload_and_the_old_one_serves() {
    let (dir, file) = scratch_repository("faulty-file");
    let gw = start_file(&dir.join("gateway.toml"), false).await;
    let serving = probabilities(&gw).await;
    let good = std::fs::read(&file).unwrap();

    let mut corrupted = good.clone();
    for b in corrupted.iter_mut().skip(16).step_by(7) {
        *b ^= 0x5a;
    }
    let faults: [(&str, Option<Vec<u8>>); 3] = [
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("corrupted", Some(corrupted)),
        ("removed", None),
    ];
    for (what, content) in faults {
        match content {
            Some(bytes) => replace(&file, &bytes),
            None => std::fs::remove_file(&file).unwrap(),
        }
        let reply = gw.admin_post("/admin/reload", None).await;
        assert_eq!(reply.status, 400, "{what}: {}", String::from_utf8_lossy(&reply.body));
        let problems = reply.json()["problems"].to_string();
        assert!(problems.contains("models.credit"), "{what}: {problems}");
        assert!(problems.contains(&file.display().to_string()), "{what}: {problems}");
        assert_eq!(probabilities(&gw).await, serving, "{what}: the running version keeps answering");
        assert_eq!(gw.get("/v2/health/ready").await.status, 200, "{what}");
    }
    let text = gw.metrics().await;
    assert_eq!(common::metric(&text, "gateway_config_reloads_total", &[("outcome", "rejected")]), 3.0);
    // Put the file back: the next reload applies (the same content as the running version).
    replace(&file, &good);
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, 200);
    assert_eq!(probabilities(&gw).await, serving);
    gw.stop().await;
}

fn embed_request(ids: &[i64]) -> Value {
    json!({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, ids.len()], "data": ids}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_id_outside_the_vocabulary_is_the_clients_error() {
    let _serial = common::exclusive().await;
    let gw = common::start(&test_model("embed")).await;
    let ok = gw.infer("embed", &embed_request(&[1, 2, 3])).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));

    let reply = gw.infer("embed", &embed_request(&[1, 99, 3])).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    let message = reply.error();
    assert!(message.contains("refused the inputs") && message.contains("out of data bounds"), "{message}");

    let labels = [("model", "embed"), ("version", "1"), ("role", "primary")];
    let text = gw.metrics().await;
    let count = |outcome: &str| {
        let mut l = labels.to_vec();
        l.push(("outcome", outcome));
        common::metric_present(&text, "gateway_requests_total", &l)
            .unwrap_or_else(|| panic!("no {outcome} series in\n{text}"))
    };
    assert_eq!(count("client_error"), 1.0);
    assert_eq!(count("server_error"), 0.0);
    assert_eq!(count("ok"), 1.0);
    gw.stop().await;
}

/// The embed model as a batched version: up to 8 rows, batch-mates waited for up to 10 s.
fn batched_embed() -> Arc<ServedVersion> {
    let path = model_file(&common::test_repo(), "embed", 1);
    let key = VersionKey {
        file: FileId::of(&path),
        path,
        instances: 1,
        policy: BatchPolicy { max_batch_size: 8, max_queue_delay: Duration::from_secs(10), max_queue: 64 },
        options: SessionOptions::default(),
        background: false,
        remote: None,
    };
    Arc::new(ServedVersion::load("embed", 1, key).unwrap())
}

fn ids(values: &[i64]) -> Arc<Vec<Tensor>> {
    Arc::new(vec![Tensor {
        name: "input_ids".into(),
        shape: vec![1, values.len()],
        data: TensorData::I64(values.to_vec()),
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_inside_a_batch_fails_alone() {
    let version = batched_embed();
    // Announce all eight first: the worker waits for every one of them and runs them as one
    // batch of 8, which ONNX Runtime refuses because of request 5.
    let announced: Vec<_> = (0..8).map(|_| version.expect()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs: Vec<_> = announced
        .into_iter()
        .enumerate()
        .map(|(i, expected)| {
            let (v, token) = (version.clone(), if i == 5 { 99 } else { i as i64 });
            tokio::spawn(async move { v.infer(ids(&[token, token]), deadline, expected).await })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let result = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap();
        if i == 5 {
            assert!(matches!(result, Err(InferError::Refused { .. })), "{result:?}");
        } else {
            let done = result.unwrap_or_else(|e| panic!("request {i}: {e}"));
            // Row i of the table is (4i .. 4i+3) / 10; the mean of two equal rows is that row.
            let expected: Vec<f32> = (0..4).map(|k| (4 * i + k) as f32 / 10.0).collect();
            let TensorData::F32(got) = &done.outputs[0].data else { panic!("not FP32") };
            assert!(got.iter().zip(&expected).all(|(g, e)| (g - e).abs() < 1e-5), "{i}: {got:?}");
        }
    }
    let stats = version.metrics.stats.snapshot("embed", 1);
    assert!(stats.batch_stats.iter().any(|b| b.batch_size == 8), "the 8 ran as one batch first");
    // Halving finds the refused request in 1 + 2·log₂(8) runs at most.
    assert!(stats.execution_count <= 7, "{} runs", stats.execution_count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_element_tensors_may_not_claim_huge_dimensions() {
    let gw = common::start(&test_model("norank")).await;
    for shape in [json!([1_099_511_627_776u64, 3, 0, 0]), json!([0, 1u64 << 62]), json!([1u64 << 40, 0])] {
        let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]});
        let reply = gw.infer("norank", &body).await;
        assert_eq!(reply.status, 400, "{shape}: {}", String::from_utf8_lossy(&reply.body));
        assert!(reply.error().contains("may hold"), "{}", reply.error());
    }
    // A small zero-element tensor is still fine.
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 3], "data": []}]});
    let reply = gw.infer("norank", &body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_rows_than_a_batched_version_takes_are_refused() {
    let toml = "[models.credit-scoring]\nrepository = \"REPO\"\nbatching = { max_batch_size = 4 }\nrouting = { primary = 1 }\n";
    let gw = common::start(toml).await;
    let reply = gw.infer("credit-scoring", &common::credit_request(4)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let reply = gw.infer("credit-scoring", &common::credit_request(5)).await;
    assert_eq!(reply.status, 422, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.error().contains("at most 4"), "{}", reply.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_refusing_inputs_its_primary_also_refuses_is_the_clients_error() {
    let _serial = common::exclusive().await;
    // embed v1 and v2 (the same file): every request goes to the candidate, v2.
    let dir = scratch("refused-by-both");
    for v in [1, 2] {
        let file = dir.join("repo").join("embed").join(v.to_string()).join("model.onnx");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::copy(model_file(&common::test_repo(), "embed", 1), &file).unwrap();
    }
    let toml = format!(
        "[models.embed]\nrepository = \"{}\"\n[models.embed.routing]\nprimary = 1\ncandidates = [{{ version = 2, percent = 100.0 }}]\n",
        dir.join("repo").display()
    );
    let gw = start_file(&write_config(&dir, &toml), false).await;
    let reply = gw.infer("embed", &embed_request(&[1, 99, 3])).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    let text = gw.metrics().await;
    let candidate = |outcome| {
        let labels = [("model", "embed"), ("version", "2"), ("role", "candidate"), ("outcome", outcome)];
        common::metric_present(&text, "gateway_requests_total", &labels).expect("the candidate's series")
    };
    assert_eq!((candidate("client_error"), candidate("server_error")), (1.0, 0.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_refusing_inputs_its_primary_accepts_is_a_server_error() {
    let _serial = common::exclusive().await;
    // mirror v3's own graph gathers past the end: ONNX Runtime says INVALID_ARGUMENT, the
    // code it gives for an index the request carried, yet v1 accepts the very same inputs.
    let toml = "[models.mirror]\nrepository = \"TESTS\"\nrouting = { primary = 1, versions = [3] }\n";
    let gw = common::start(toml).await;
    let request = serde_json::to_vec(&common::credit_request(1)).unwrap();
    let reply = gw.post("/v2/models/mirror/versions/3/infer", request, &[]).await;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, 500, "{body}");
    assert!(body.contains("its primary (version 1) accepts them"), "{body}");
    let text = gw.metrics().await;
    let labels = [("model", "mirror"), ("version", "3"), ("role", "pinned"), ("outcome", "server_error")];
    let failed = common::metric_present(&text, "gateway_requests_total", &labels).expect("v3's series");
    assert_eq!(failed, 1.0);
    gw.stop().await;
}
