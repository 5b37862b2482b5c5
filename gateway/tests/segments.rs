//! Approval rates by segment over real sockets: the segment comes from a configured header and
//! any value not configured counts as `other`; a candidate that approves one segment far less
//! than the primary does is rolled back by the fairness gate, the verdict naming the segments
//! and their rates. The rollout timer is set far in the future; the test judges when it chooses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestGateway, metric_present};
use serde_json::{Value, json};

/// `two_features` v1 approves when x0 + x1 > 0; v2 when x0 + x1 + 10·x2 > 0.
fn config(rollout: &str) -> String {
    common::with_paths(&format!(
        r#"
[models.two_features]
repository = "TESTS"
[models.two_features.routing]
primary = 1
{rollout}
[models.two_features.monitor]
output = "probabilities"
segment_header = "x-segment"
segments = ["a", "b"]
min_segment_requests = 20
"#
    ))
}

/// One row: both versions approve it with `x2 = 1`; v2 refuses it with `x2 = -1`.
fn request(x2: f32) -> Vec<u8> {
    let data = [1.0, 1.0, x2, 0.0, 0.0, 0.0, 0.0, 0.0];
    let body = json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": data}]});
    serde_json::to_vec(&body).unwrap()
}

async fn send(gw: &TestGateway, segment: Option<&str>, x2: f32) -> String {
    let headers: Vec<(&str, &str)> = segment.map(|s| ("x-segment", s)).into_iter().collect();
    let reply = gw.post("/v2/models/two_features/infer", request(x2), &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    reply.header("x-model-version").unwrap().to_string()
}

fn count(text: &str, version: &str, segment: &str) -> f64 {
    let labels = [("model", "two_features"), ("version", version), ("segment", segment)];
    metric_present(text, "gateway_segment_predictions_total", &labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_missing_segment_counts_as_other() {
    // Metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    let gw = common::start(&config("")).await;
    let before = gw.metrics().await;
    send(&gw, Some("a"), 1.0).await;
    send(&gw, Some("not-a-segment"), 1.0).await;
    send(&gw, Some("B"), 1.0).await; // names are exact: "B" is not "b"
    send(&gw, None, 1.0).await;
    let after = gw.metrics().await;
    let series = |segment: &str| {
        let labels = [("model", "two_features"), ("version", "1"), ("segment", segment), ("class", "1")];
        metric_present(&after, "gateway_segment_predictions_total", &labels)
            .unwrap_or_else(|| panic!("no approved series for segment {segment}"))
    };
    assert_eq!(series("other") - count(&before, "1", "other"), 3.0);
    assert_eq!(series("a") - count(&before, "1", "a"), 1.0);
    // Label values never come from the request.
    assert!(!after.contains("not-a-segment") && !after.contains("segment=\"B\""), "{after}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_approving_one_segment_far_less_is_rolled_back_naming_the_segments() {
    let _one_at_a_time = common::exclusive().await;
    let rollout = r#"candidates = [{ version = 2, percent = 50.0 }]
[models.two_features.rollout]
steps = [50, 100]
step_interval_s = 3600
min_requests = 20
max_segment_disparity = 0.1"#;
    let gw = common::start(&config(rollout)).await;
    // Segment a sends x2 = 1 (both approve), segment b x2 = -1 (only the primary approves),
    // until each version answered each segment 20 times (min_segment_requests).
    let mut answered = std::collections::HashMap::<(String, &str), u32>::new();
    for i in 0..4000 {
        let (segment, x2) = if i % 2 == 0 { ("a", 1.0) } else { ("b", -1.0) };
        let version = send(&gw, Some(segment), x2).await;
        *answered.entry((version, segment)).or_default() += 1;
        if answered.len() == 4 && answered.values().all(|&n| n >= 20) {
            break;
        }
    }
    assert!(answered.len() == 4 && answered.values().all(|&n| n >= 20), "{answered:?}");
    let verdict = judge(&gw).await;
    assert_eq!(verdict["state"], "rolled_back", "{verdict}");
    assert_eq!(verdict["weight"], 0.0);
    let analysis = &verdict["last_verdict"]["analysis"];
    let reasons = analysis["reasons"].to_string();
    assert!(reasons.contains("segment disparity"), "{reasons}");
    assert!(reasons.contains("a 1.0000 (primary 1.0000)"), "{reasons}");
    assert!(reasons.contains("b 0.0000 (primary 1.0000)"), "{reasons}");
    let rates = &analysis["segments"]["rates"];
    assert_eq!((rates["b"]["candidate"].as_f64(), rates["b"]["primary"].as_f64()), (Some(0.0), Some(1.0)));
    assert_eq!(analysis["segments"]["candidate_spread"].as_f64(), Some(1.0), "{analysis}");
    // The dashboard's series: the candidate's refusals of segment b are counted as such.
    let text = gw.metrics().await;
    let labels = [("model", "two_features"), ("version", "2"), ("segment", "b"), ("class", "0")];
    assert!(metric_present(&text, "gateway_segment_predictions_total", &labels).unwrap() >= 20.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_requests_in_a_segment_hold_the_fairness_gate() {
    let _one_at_a_time = common::exclusive().await;
    let rollout = r#"candidates = [{ version = 2, percent = 50.0 }]
[models.two_features.rollout]
steps = [50, 100]
step_interval_s = 3600
min_requests = 20
max_segment_disparity = 0.1"#;
    let gw = common::start(&config(rollout)).await;
    // Enough candidate requests for min_requests, all in segment a: b has none to compare.
    let mut candidate = 0;
    for _ in 0..4000 {
        if send(&gw, Some("a"), 1.0).await == "2" {
            candidate += 1;
            if candidate == 20 {
                break;
            }
        }
    }
    send(&gw, Some("b"), -1.0).await;
    let verdict = judge(&gw).await;
    assert_eq!(verdict["state"], "insufficient_data", "{verdict}");
    let reasons = verdict["last_verdict"]["analysis"]["reasons"].to_string();
    assert!(reasons.contains("fewer than min_segment_requests 20") && reasons.contains("b ("), "{reasons}");
    gw.stop().await;
}

/// Judges the rollout now (what the timer does every `step_interval_s`).
async fn judge(gw: &TestGateway) -> Value {
    let g = gw.gateway.as_ref().unwrap();
    let _control = g.registry.control.lock().await;
    g.monitor.judge_now(&g.registry, "two_features").unwrap()
}
