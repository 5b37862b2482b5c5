//! Progressive delivery over real sockets: each gate failing alone rolls the candidate back,
//! too little data holds, a healthy candidate walks every step to promotion with concurrent
//! clients losing nothing, and operators promote or abort by API. The analysis timer is set far
//! in the future; tests judge when they choose, through the same code the timer calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestGateway, credit_request, metric};
use serde_json::{Value, json};

fn rollout_config(model: &str, repo: &str, candidate: u64, steps: &str, gates: &str) -> String {
    format!(
        r#"
[models.{model}]
repository = "{repo}"
[models.{model}.routing]
primary = 1
candidates = [{{ version = {candidate}, percent = 5.0 }}]
sticky_header = "x-user-id"
[models.{model}.monitor]
output = "probabilities"
[models.{model}.rollout]
steps = {steps}
step_interval_s = 3600
min_requests = 20
{gates}
"#
    )
}

/// Judges `model`'s rollout now (what the timer does every `step_interval_s`).
async fn judge(gw: &TestGateway, model: &str) -> Value {
    let g = gw.gateway.as_ref().unwrap();
    let _control = g.registry.control.lock().await;
    g.monitor.judge_now(&g.registry, model).unwrap()
}

async fn rollouts(gw: &TestGateway, model: &str) -> Value {
    gw.get_at(gw.admin, "/admin/rollouts").await.json()["rollouts"][model].clone()
}

/// Sends requests from distinct sticky users until the candidate has answered `n` of them
/// (bounded); returns which users it answered.
async fn until_candidate_answers(
    gw: &TestGateway,
    model: &str,
    candidate: &str,
    n: usize,
    id_prefix: &str,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..20_000 {
        let id = format!("{id_prefix}-{i}");
        let mut body = common::credit_request_seeded(1, i);
        body["id"] = json!(id);
        let reply = gw
            .post(
                &format!("/v2/models/{model}/infer"),
                serde_json::to_vec(&body).unwrap(),
                &[("x-user-id", &id)],
            )
            .await;
        if reply.header("x-model-version") == Some(candidate) {
            ids.push(id);
            if ids.len() == n {
                return ids;
            }
        }
    }
    panic!("the candidate answered only {} requests", ids.len());
}

async fn assert_rolled_back(gw: &TestGateway, model: &str, verdict: &Value, gate: &str, sticky: &[String]) {
    assert_eq!(verdict["state"], "rolled_back", "{verdict}");
    assert_eq!(verdict["weight"], 0.0);
    let reasons = verdict["last_verdict"]["analysis"]["reasons"].to_string();
    assert!(reasons.contains(gate), "{gate} not in {reasons}");
    // Sticky users of the candidate are back on the primary.
    for id in sticky.iter().take(5) {
        let reply = gw
            .post(
                &format!("/v2/models/{model}/infer"),
                serde_json::to_vec(&credit_request(1)).unwrap(),
                &[("x-user-id", id)],
            )
            .await;
        assert_eq!(reply.header("x-model-version"), Some("1"));
    }
    let text = gw.metrics().await;
    assert!(metric(&text, "gateway_rollout_events_total", &[("model", model), ("event", "rollback")]) >= 1.0);
    assert_eq!(
        metric(&text, "gateway_route_weight_percent", &[("model", model), ("role", "candidate")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_error_rate_gate_rolls_back() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    // mirror v3 accepts the same inputs and fails every run.
    let gw = common::start(&rollout_config("mirror", "TESTS", 3, "[50, 100]", "max_error_rate = 0.01")).await;
    let users = until_candidate_answers_failing(&gw).await;
    let verdict = judge(&gw, "mirror").await;
    assert_rolled_back(&gw, "mirror", &verdict, "error rate", &users).await;
}

/// mirror v3 answers 500: count by header-less status instead of x-model-version.
async fn until_candidate_answers_failing(gw: &TestGateway) -> Vec<String> {
    let mut users = Vec::new();
    for i in 0..2000 {
        let id = format!("err-{i}");
        let reply = gw
            .post(
                "/v2/models/mirror/infer",
                serde_json::to_vec(&credit_request(1)).unwrap(),
                &[("x-user-id", &id)],
            )
            .await;
        if reply.status == 500 {
            users.push(id);
            if users.len() == 20 {
                return users;
            }
        }
    }
    panic!("the failing candidate was not picked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_latency_gate_rolls_back() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    // mirror v2 takes ~0.2 s a request.
    let gw =
        common::start(&rollout_config("mirror", "TESTS", 2, "[50, 100]", "max_p99_latency_ms = 50")).await;
    let users = until_candidate_answers(&gw, "mirror", "2", 20, "slow").await;
    let verdict = judge(&gw, "mirror").await;
    assert_rolled_back(&gw, "mirror", &verdict, "p99 latency", &users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disagreement_gate_rolls_back() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    // credit-scoring v2 approves far more often than v1: their argmax disagrees often.
    let gw = common::start(&rollout_config(
        "credit-scoring",
        "REPO",
        2,
        "[50, 100]",
        "max_shadow_disagreement = 0.05",
    ))
    .await;
    let users = until_candidate_answers(&gw, "credit-scoring", "2", 40, "dis").await;
    wait_for_window(&gw, "credit-scoring", |w| w["compared"].as_u64().unwrap_or(0) >= 40).await;
    let verdict = judge(&gw, "credit-scoring").await;
    assert_rolled_back(&gw, "credit-scoring", &verdict, "shadow disagreement", &users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_false_positive_gate_rolls_back() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    let gw = common::start(&rollout_config(
        "credit-scoring",
        "REPO",
        2,
        "[50, 100]",
        "max_false_positive_rate = 0.10",
    ))
    .await;
    let users = until_candidate_answers(&gw, "credit-scoring", "2", 60, "fp").await;
    // Every candidate prediction turns out negative: each "1" it predicted is a false positive.
    for id in &users {
        let reply = gw.post_json("/v2/feedback", &json!({"id": id, "label": 0})).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    let verdict = judge(&gw, "credit-scoring").await;
    assert_rolled_back(&gw, "credit-scoring", &verdict, "false-positive rate", &users).await;
    assert!(verdict["last_verdict"]["analysis"]["false_positive_rate"].as_f64().unwrap() > 0.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_data_holds_and_says_so() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    let gates = "max_error_rate = 0.01\nmax_false_positive_rate = 0.10";
    let gw = common::start(&rollout_config("credit-scoring", "REPO", 2, "[50, 100]", gates)).await;
    let verdict = judge(&gw, "credit-scoring").await;
    assert_eq!(verdict["state"], "insufficient_data", "{verdict}");
    assert_eq!(verdict["weight"], 50.0);
    assert!(
        verdict["last_verdict"]["analysis"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("fewer than min_requests")
    );
    // Enough requests, but too few labelled negatives: the false-positive gate holds.
    until_candidate_answers(&gw, "credit-scoring", "2", 20, "hold").await;
    let verdict = judge(&gw, "credit-scoring").await;
    assert_eq!(verdict["state"], "insufficient_data", "{verdict}");
    assert!(
        verdict["last_verdict"]["analysis"]["reasons"][0].as_str().unwrap().contains("labelled negatives")
    );
    assert_eq!(verdict["step"], 0);
    let text = gw.metrics().await;
    assert!(
        metric(
            &text,
            "gateway_rollout_events_total",
            &[("model", "credit-scoring"), ("event", "insufficient_data")]
        ) >= 2.0
    );
}

/// Polls /admin/rollouts until the current window satisfies `done` (bounded).
async fn wait_for_window(gw: &TestGateway, model: &str, done: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = rollouts(gw, model).await;
        if done(&r["current_window"]) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "window never got there: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_walks_every_step_to_promotion_losing_nothing() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    // credit-scoring v3 differs from v1 only slightly: gates it passes.
    let gates = "max_error_rate = 0.01\nmax_p99_latency_ms = 2000\nmax_shadow_disagreement = 0.3";
    let gw =
        Arc::new(common::start(&rollout_config("credit-scoring", "REPO", 3, "[10, 40, 100]", gates)).await);
    let events = |text: &str, event: &str| {
        metric(text, "gateway_rollout_events_total", &[("model", "credit-scoring"), ("event", event)])
    };
    let before = gw.metrics().await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut seen, mut failed) = (HashMap::<String, usize>::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = format!("client{c}-{i}");
                    let body = common::credit_request_seeded(1, i);
                    let reply = gw
                        .post(
                            "/v2/models/credit-scoring/infer",
                            serde_json::to_vec(&body).unwrap(),
                            &[("x-user-id", &user)],
                        )
                        .await;
                    if reply.status != 200 {
                        failed.push(String::from_utf8_lossy(&reply.body).to_string());
                    }
                    *seen.entry(reply.header("x-model-version").unwrap_or("?").to_string()).or_default() += 1;
                }
                (seen, failed)
            })
        })
        .collect();
    for (step, weight) in [(1, 40.0), (2, 100.0)] {
        wait_for_window(&gw, "credit-scoring", |w| {
            w["requests"].as_u64().unwrap_or(0) >= 20 && w["compared"].as_u64().unwrap_or(0) >= 5
        })
        .await;
        let verdict = judge(&gw, "credit-scoring").await;
        assert_eq!(
            (verdict["state"].as_str(), verdict["step"].as_u64()),
            (Some("progressing"), Some(step)),
            "{verdict}"
        );
        assert_eq!(verdict["weight"], weight);
    }
    // At 100% every request is the candidate's; its comparisons with the primary continue.
    wait_for_window(&gw, "credit-scoring", |w| {
        w["requests"].as_u64().unwrap_or(0) >= 20 && w["compared"].as_u64().unwrap_or(0) >= 5
    })
    .await;
    let verdict = judge(&gw, "credit-scoring").await;
    assert_eq!(verdict["state"], "promoted", "{verdict}");
    // The candidate is the primary now.
    let reply = gw.infer("credit-scoring", &credit_request(1)).await;
    assert_eq!(
        (reply.header("x-model-version"), reply.header("x-route-reason")),
        (Some("3"), Some("primary"))
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let (seen, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "requests failed during the rollout: {failed:?}");
        assert!(seen.contains_key("3"), "{seen:?}");
    }
    let text = gw.metrics().await;
    assert_eq!(events(&text, "step") - events(&before, "step"), 2.0);
    assert_eq!(events(&text, "promote") - events(&before, "promote"), 1.0);
    assert_eq!(
        metric(
            &text,
            "gateway_route_weight_percent",
            &[("model", "credit-scoring"), ("version", "3"), ("role", "primary")]
        ),
        100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_promote_and_abort_by_api() {
    // Rollout metrics are process-wide: one test at a time, counting differences.
    let _one_at_a_time = common::exclusive().await;
    let gw = common::start(&rollout_config("credit-scoring", "REPO", 2, "[5, 100]", "max_error_rate = 0.01"))
        .await;
    let state = rollouts(&gw, "credit-scoring").await;
    assert_eq!((state["state"].as_str(), state["weight"].as_f64()), (Some("progressing"), Some(5.0)));
    let aborted = gw.admin_post("/admin/rollouts/credit-scoring/abort", None).await.json();
    assert_eq!((aborted["state"].as_str(), aborted["weight"].as_f64()), (Some("aborted"), Some(0.0)));
    for i in 0..50 {
        let reply = gw
            .post(
                "/v2/models/credit-scoring/infer",
                serde_json::to_vec(&credit_request(1)).unwrap(),
                &[("x-user-id", &format!("u{i}"))],
            )
            .await;
        assert_eq!(reply.header("x-model-version"), Some("1"));
    }
    let promoted = gw.admin_post("/admin/rollouts/credit-scoring/promote", None).await.json();
    assert_eq!(promoted["state"], "promoted");
    let reply = gw.infer("credit-scoring", &credit_request(1)).await;
    assert_eq!(reply.header("x-model-version"), Some("2"));
    assert_eq!(gw.admin_post("/admin/rollouts/nope/promote", None).await.status, 404);
    let text = gw.metrics().await;
    for event in ["abort", "promote"] {
        assert!(
            metric(&text, "gateway_rollout_events_total", &[("model", "credit-scoring"), ("event", event)])
                >= 1.0
        );
    }
}
