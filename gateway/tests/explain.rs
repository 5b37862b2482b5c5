//! Explanations over real sockets: a model that reads only features 0 and 1 gets its largest
//! attributions there (and none elsewhere), the answer is deterministic and carries the
//! prediction, and explanations past `max_features` or of unmonitored models are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestGateway;
use serde_json::{Value, json};

/// `two_features` v1 approves when x0 + x1 > 0; v2 when x0 + x1 + 10·x2 > 0.
fn config(max_features: usize) -> String {
    common::with_paths(&format!(
        r#"
[models.two_features]
repository = "TESTS"
routing = {{ primary = 1, versions = [2] }}
[models.two_features.monitor]
output = "probabilities"
max_features = {max_features}
[models.credit-scoring]
repository = "REPO"
routing = {{ primary = 1 }}
"#
    ))
}

fn body() -> Value {
    let rows = [[0.3, 0.2, 0.05, 5.0, -5.0, 5.0, 5.0, 5.0], [-0.1, 0.4, -0.02, -3.0, 3.0, 1.0, 2.0, -2.0]];
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"id": "why", "inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 8], "data": data}]})
}

async fn explain(gw: &TestGateway, path: &str) -> Value {
    let reply = gw.post_json(path, &body()).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    reply.json()
}

/// Row `r`'s attributions.
fn row(reply: &Value, r: usize) -> Vec<f64> {
    let a = &reply["attributions"][0];
    assert_eq!(a["name"], "features");
    assert_eq!(a["shape"], json!([2, 8]));
    a["data"].as_array().unwrap()[r * 8..(r + 1) * 8].iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Feature indices by attribution size, largest first.
fn ranked(attributions: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..attributions.len()).collect();
    order.sort_by(|&a, &b| attributions[b].abs().total_cmp(&attributions[a].abs()));
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_using_two_features_gives_them_the_largest_attributions() {
    let gw = common::start(&config(64)).await;
    let reply = explain(&gw, "/v2/models/two_features/explain").await;
    for r in 0..2 {
        let a = row(&reply, r);
        let mut top = ranked(&a)[..2].to_vec();
        top.sort_unstable();
        assert_eq!(top, vec![0, 1], "row {r}: {a:?}");
        assert!(a[0].abs() > 1e-3 && a[1].abs() > 1e-3, "row {r}: {a:?}");
        assert!(a[2..].iter().all(|v| v.abs() < 1e-6), "row {r}: features 2..8 are never read: {a:?}");
    }
    // Row 0 (x0 + x1 = 0.5 > 0): both push towards approval.
    assert!(row(&reply, 0)[0] > 0.0 && row(&reply, 0)[1] > 0.0);
    // The prediction for the original rows comes with it, as infer answers it.
    let probabilities =
        reply["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(probabilities["shape"], json!([2, 2]));
    assert_eq!(reply["id"], "why");
    assert_eq!(reply["model_version"], "1");
    // Deterministic.
    assert_eq!(explain(&gw, "/v2/models/two_features/explain").await, reply);
    // v2 also reads feature 2, with a weight of 10.
    let v2 = explain(&gw, "/v2/models/two_features/versions/2/explain").await;
    assert_eq!(ranked(&row(&v2, 0))[0], 2, "{v2}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_is_occluded_with_its_input_baseline_mean() {
    // Feature 0's training values lie in [0.2, 0.4): mean 0.3, row 0's own x0. The others: 0.
    let dir = common::scratch("explain-baseline");
    let mut edges = vec![json!([0.2, 0.4])];
    edges.extend((1..8).map(|_| json!([-1.0, 1.0])));
    let file = json!({"inputs": {"features": {"edges": edges, "proportions": vec![json!([1.0]); 8]}}});
    let path = dir.join("input-baseline.json");
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let toml = config(64).replace(
        "max_features = 64",
        &format!("max_features = 64\ninput_baseline = {:?}", path.display().to_string()),
    );
    let gw = common::start(&toml).await;
    let reply = explain(&gw, "/v2/models/two_features/explain").await;
    let (row0, row1) = (row(&reply, 0), row(&reply, 1));
    assert!(row0[0].abs() < 1e-6, "x0 = 0.3 is its baseline: nothing to attribute: {row0:?}");
    assert!(row0[1].abs() > 1e-3, "{row0:?}");
    assert!(row1[0].abs() > 1e-3, "x0 = -0.1 is not its baseline: {row1:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_past_max_features_or_without_a_monitor_are_refused() {
    let gw = common::start(&config(4)).await;
    let reply = gw.post_json("/v2/models/two_features/explain", &body()).await;
    assert_eq!(reply.status, 422, "{}", reply.error());
    assert!(reply.error().contains("max_features (4)"), "{}", reply.error());
    let credit = gw.post_json("/v2/models/credit-scoring/explain", &common::credit_request(1)).await;
    assert_eq!(credit.status, 422, "{}", credit.error());
    assert!(credit.error().contains("[monitor]"), "{}", credit.error());
    // Infer is unaffected.
    assert_eq!(gw.post_json("/v2/models/two_features/infer", &body()).await.status, 200);
    gw.stop().await;
}
