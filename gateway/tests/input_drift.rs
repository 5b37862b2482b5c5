//! Input drift over real sockets: with a training baseline of credit-scoring's 8 features,
//! traffic whose feature 0 moved shows a high PSI on feature 0 and a low one on the 7 others,
//! and a rollout gated on `max_input_drift_psi` holds on that traffic (saying why) but steps
//! forward on traffic that did not move. Sampling is random (one request in 8), so tests send
//! until the sample counter says enough rows were binned, never for a fixed time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{TestGateway, metric, metric_present};
use serde_json::{Value, json};

const ROWS: usize = 20;

/// credit-scoring's versions 1 and 2 copied under `name` (metrics are process-wide: each test
/// serves its own model name).
fn repo_with(dir: &Path, name: &str) -> PathBuf {
    for v in ["1", "2"] {
        std::fs::create_dir_all(dir.join(name).join(v)).unwrap();
        std::fs::copy(
            format!("{}/credit-scoring/{v}/model.onnx", common::repo()),
            dir.join(name).join(v).join("model.onnx"),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

/// The training distribution of the tests' traffic: every feature uniform over [-2, 2), in 10
/// equal bins.
fn write_baseline(dir: &Path) -> PathBuf {
    let edges: Vec<f64> = (0..=10).map(|i| -2.0 + 0.4 * f64::from(i)).collect();
    let baseline = json!({"inputs": {"features": {
        "edges": vec![edges; 8],
        "proportions": vec![vec![0.1; 10]; 8],
    }}});
    let path = dir.join("input-baseline.json");
    std::fs::write(&path, baseline.to_string()).unwrap();
    path
}

/// `ROWS` rows of uniform [-2, 2) features, feature 0 moved up by `shift`.
fn request(seed: u64, shift: f32) -> Value {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<f32> =
        (0..ROWS * 8).map(|i| rng.f32() * 4.0 - 2.0 + if i % 8 == 0 { shift } else { 0.0 }).collect();
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [ROWS, 8], "data": data}]})
}

/// Sends requests until `samples` sampled requests of `model` were binned and the candidate
/// (when `candidate`) answered `min_candidate`; bounded.
async fn send_until(gw: &TestGateway, model: &str, shift: f32, samples: f64, min_candidate: usize) {
    let mut candidate = 0;
    for i in 0..20_000u64 {
        let reply = gw.infer(model, &request(i, shift)).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        if reply.header("x-model-version") == Some("2") {
            candidate += 1;
        }
        if i % 16 == 15 && candidate >= min_candidate {
            let text = gw.metrics().await;
            let used = [("model", model), ("outcome", "used")];
            if metric(&text, "gateway_input_drift_samples_total", &used) >= samples {
                return;
            }
        }
    }
    panic!("{model}: too few samples binned after 20,000 requests");
}

fn feature_psi(text: &str, model: &str, feature: &str) -> f64 {
    let labels = [("model", model), ("version", "1"), ("input", "features"), ("feature", feature)];
    metric_present(text, "gateway_input_drift_psi", &labels)
        .unwrap_or_else(|| panic!("no gateway_input_drift_psi for feature {feature}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shifted_feature_drifts_and_the_others_stay_low() {
    let dir = common::scratch("input-drift");
    let repo = repo_with(&dir, "drift_shift");
    let baseline = write_baseline(&dir);
    let toml = format!(
        "[models.drift_shift]\nrepository = \"{}\"\nrouting = {{ primary = 1 }}\n\
         monitor = {{ output = \"probabilities\", input_baseline = \"{}\" }}\n",
        repo.display(),
        baseline.display()
    );
    let gw = common::start(&toml).await;
    // 60 samples of 20 rows: the 1,000-row window is full of shifted traffic.
    send_until(&gw, "drift_shift", 1.5, 60.0, 0).await;
    let text = gw.metrics().await;
    // Feature 0 moved by 1.5 of its 4-wide range: most of its values leave the baseline's
    // lower bins for the top one.
    let moved = feature_psi(&text, "drift_shift", "0");
    assert!(moved > 1.0, "feature 0 PSI {moved}");
    for f in 1..8 {
        let psi = feature_psi(&text, "drift_shift", &f.to_string());
        assert!(psi < 0.1, "feature {f} did not move, yet its PSI is {psi}");
    }
    let max =
        metric_present(&text, "gateway_input_drift_psi_max", &[("model", "drift_shift"), ("version", "1")])
            .expect("gateway_input_drift_psi_max");
    assert!((max - moved).abs() < 1e-9, "max {max}, feature 0 {moved}");
    // Skips are counted (registered at 0 with the first sample; this test's queue keeps up).
    let skipped = [("model", "drift_shift"), ("outcome", "skipped")];
    assert!(metric_present(&text, "gateway_input_drift_samples_total", &skipped).is_some());
    assert!(
        metric_present(&text, "gateway_input_drift_psi", &[("model", "drift_shift"), ("feature", "8")])
            .is_none(),
        "credit-scoring has 8 features"
    );
    gw.stop().await;
}

fn rollout_toml(repo: &Path, model: &str, baseline: &Path) -> String {
    format!(
        r#"
[models.{model}]
repository = "{}"
[models.{model}.routing]
primary = 1
candidates = [{{ version = 2, percent = 50.0 }}]
[models.{model}.monitor]
output = "probabilities"
input_baseline = "{}"
[models.{model}.rollout]
steps = [50, 100]
step_interval_s = 3600
min_requests = 20
max_error_rate = 0.5
max_input_drift_psi = 0.25
"#,
        repo.display(),
        baseline.display()
    )
}

async fn judge(gw: &TestGateway, model: &str) -> Value {
    let g = gw.gateway.as_ref().unwrap();
    let _control = g.registry.control.lock().await;
    g.monitor.judge_now(&g.registry, model).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_holds_while_the_traffic_has_drifted_and_steps_when_it_has_not() {
    let dir = common::scratch("input-drift-rollout");
    let baseline = write_baseline(&dir);
    for (model, shift) in [("drift_hold", 1.5f32), ("drift_calm", 0.0)] {
        let repo = repo_with(&dir, model);
        let gw = common::start(&rollout_toml(&repo, model, &baseline)).await;
        send_until(&gw, model, shift, 60.0, 20).await;
        let verdict = judge(&gw, model).await;
        let analysis = &verdict["last_verdict"]["analysis"];
        let figure = analysis["input_drift_psi"].as_f64().unwrap_or_else(|| panic!("no figure: {verdict}"));
        if shift > 0.0 {
            assert_eq!(verdict["state"], "insufficient_data", "{verdict}");
            assert_eq!(verdict["step"], 0, "{verdict}");
            assert!(figure > 0.25, "{verdict}");
            let reasons = analysis["reasons"].to_string();
            assert!(reasons.contains("input drift") && reasons.contains("features[0]"), "{reasons}");
            assert!(!reasons.contains("features[1]"), "feature 1 did not move: {reasons}");
            // The view of the next window says so too, with the figure.
            let view = gw.get_at(gw.admin, "/admin/rollouts").await.json();
            assert!(view["rollouts"][model]["current_window"]["input_drift_psi"].as_f64().unwrap() > 0.25);
        } else {
            assert_eq!(verdict["state"], "progressing", "{verdict}");
            assert_eq!(verdict["step"], 1, "{verdict}");
            assert!(figure < 0.25, "{verdict}");
        }
        gw.stop().await;
    }
}
