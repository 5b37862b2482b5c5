//! Prediction monitoring over real sockets: prediction metrics and PSI against hand-computed
//! values on fixed inputs, and delayed labels joined to predictions (join, expiry, unknown ids).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{credit_request, metric, scratch};
use serde_json::json;

/// multi_io's `scaled.out` is 2·x: with x of shape [rows, 2] it is a two-class score output
/// whose values the test chooses exactly.
fn scaled_request(rows: &[[f32; 2]]) -> serde_json::Value {
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [rows.len(), 2], "data": x},
        {"name": "y", "datatype": "FP32", "shape": [rows.len(), 2], "data": vec![0.0f32; rows.len() * 2]},
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [1]}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prediction_metrics_and_psi_match_hand_computed_values() {
    let dir = scratch("psi");
    let baseline = dir.join("baseline.json");
    std::fs::write(&baseline, r#"{"proportions": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}"#).unwrap();
    let toml = format!(
        "[models.multi_io]\nrepository = \"TESTS\"\nrouting = {{ primary = 1 }}\nmonitor = {{ output = \"scaled.out\", baseline = \"{}\" }}\n",
        baseline.display()
    );
    let gw = common::start(&toml).await;
    // 50 rows scoring [0.125, 0] (top score 0.125, bin 1, class 0) and 50 scoring [0, 0.875]
    // (top score 0.875, bin 8, class 1), in 10 requests of 10 rows; all exact in binary.
    for i in 0..10 {
        let row = if i % 2 == 0 { [0.0625, 0.0] } else { [0.0, 0.4375] };
        let reply = gw.infer("multi_io", &scaled_request(&[row; 10])).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    let text = gw.metrics().await;
    let v = [("model", "multi_io"), ("version", "1")];
    assert_eq!(metric(&text, "gateway_prediction_value_count", &v), 100.0);
    assert!((metric(&text, "gateway_prediction_value_sum", &v) - 50.0).abs() < 1e-4);
    assert_eq!(metric(&text, "gateway_prediction_value_bucket", &[v[0], v[1], ("le", "0.15")]), 50.0);
    assert_eq!(metric(&text, "gateway_prediction_class_total", &[v[0], v[1], ("class", "0")]), 50.0);
    assert_eq!(metric(&text, "gateway_prediction_class_total", &[v[0], v[1], ("class", "1")]), 50.0);
    // PSI against a uniform baseline: bins 1 and 8 hold 0.5 each, the 8 others 0 (floored at
    // 0.0001): 2·(0.5 − 0.1)·ln(0.5/0.1) + 8·(0.0001 − 0.1)·ln(0.0001/0.1).
    let expected = 2.0 * 0.4 * 5f64.ln() + 8.0 * (0.0001 - 0.1) * (0.0001f64 / 0.1).ln();
    let psi = metric(&text, "gateway_drift_psi", &v);
    assert!((psi - expected).abs() < 1e-9, "psi {psi}, expected {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psi_appears_only_once_the_window_holds_100_predictions() {
    // Metrics are process-wide: serve multi_io under a name no other test uses.
    let dir = scratch("psi-min");
    std::fs::create_dir_all(dir.join("psi_min/1")).unwrap();
    std::fs::copy(format!("{}/multi_io/1/model.onnx", common::test_repo()), dir.join("psi_min/1/model.onnx"))
        .unwrap();
    let baseline = dir.join("baseline.json");
    std::fs::write(&baseline, r#"{"values": [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]}"#)
        .unwrap();
    let toml = format!(
        "[models.psi_min]\nrepository = \"{}\"\nrouting = {{ primary = 1 }}\nmonitor = {{ output = \"sum.out\", baseline = \"{}\" }}\n",
        dir.display(),
        baseline.display()
    );
    let gw = common::start(&toml).await;
    let rows = [[0.1f32, 0.2]; 99];
    gw.infer("psi_min", &scaled_request(&rows)).await;
    assert!(
        !gw.metrics().await.contains("gateway_drift_psi{model=\"psi_min\""),
        "PSI published before 100 predictions"
    );
    gw.infer("psi_min", &scaled_request(&[[0.1, 0.2]])).await;
    assert!(gw.metrics().await.contains("gateway_drift_psi{model=\"psi_min\""));
}

const CREDIT_MONITORED: &str = r#"
[models.credit-scoring]
repository = "REPO"
routing = { primary = 1 }
monitor = { output = "probabilities", feedback_ttl_s = 1 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_join_predictions_by_request_id() {
    let gw = common::start(CREDIT_MONITORED).await;
    let mut body = credit_request(1);
    body["id"] = json!("loan-1");
    let predicted = gw.infer("credit-scoring", &body).await.json()["outputs"][0]["data"][0].as_i64().unwrap();
    let reply = gw.post_json("/v2/feedback", &json!({"id": "loan-1", "label": 0})).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let expected = if predicted == 1 { "fp" } else { "tn" };
    assert_eq!(reply.json()["results"], json!([expected]));
    assert_eq!(reply.json()["version"], 1);
    // A second label for the same prediction is refused.
    assert_eq!(gw.post_json("/v2/feedback", &json!({"id": "loan-1", "label": 1})).await.status, 409);
    // Without a body id, the request's x-request-id is the key.
    let reply = gw
        .post(
            "/v2/models/credit-scoring/infer",
            serde_json::to_vec(&credit_request(2)).unwrap(),
            &[("x-request-id", "hdr-7")],
        )
        .await;
    let labels: Vec<i64> =
        reply.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let wrong_count = gw.post_json("/v2/feedback", &json!({"id": "hdr-7", "label": 1})).await;
    assert_eq!(wrong_count.status, 400, "two rows need two labels");
    let reply = gw.post_json("/v2/feedback", &json!({"id": "hdr-7", "label": labels})).await;
    let results = reply.json()["results"].clone();
    assert!(results.as_array().unwrap().iter().all(|r| r == "tp" || r == "tn"), "{results}");
    let text = gw.metrics().await;
    assert!(
        metric(
            &text,
            "gateway_feedback_total",
            &[("model", "credit-scoring"), ("version", "1"), ("result", expected)]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_expired_ids_are_refused_and_counted() {
    let gw = common::start(CREDIT_MONITORED).await;
    let before = metric(&gw.metrics().await, "gateway_feedback_total", &[("result", "unknown")]);
    let reply = gw.post_json("/v2/feedback", &json!({"id": "never-seen", "label": 1})).await;
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("never-seen"), "{}", reply.error());
    let after = metric(&gw.metrics().await, "gateway_feedback_total", &[("result", "unknown")]);
    assert_eq!(after - before, 1.0);
    let mut body = credit_request(1);
    body["id"] = json!("late");
    gw.infer("credit-scoring", &body).await;
    // feedback_ttl_s = 1: the label arrives after the prediction's time limit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = gw.post_json("/v2/feedback", &json!({"id": "late", "label": 1})).await;
    assert_eq!(reply.status, 410, "{}", String::from_utf8_lossy(&reply.body));
    let text = gw.metrics().await;
    assert!(
        metric(&text, "gateway_feedback_total", &[("model", "credit-scoring"), ("result", "expired")]) >= 1.0
    );
    assert_eq!(gw.post_json("/v2/feedback", &json!({"id": "x", "label": "yes"})).await.status, 400);
    assert_eq!(gw.post_json("/v2/feedback", &json!({"label": 1})).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitored_output_the_model_lacks_is_a_config_problem() {
    let toml = "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1 }\nmonitor = { output = \"scores\" }\n";
    let gw = common::start(toml).await;
    let ready = gw.get("/v2/models/credit-scoring/ready").await;
    assert_eq!(ready.status, 503);
    let infer = gw.infer("credit-scoring", &credit_request(1)).await;
    assert!(infer.error().contains("models.credit-scoring.monitor.output"), "{}", infer.error());
}
