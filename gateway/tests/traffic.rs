//! Traffic management over real sockets: the weighted split, sticky users, pins, and shadows
//! that compare without ever touching the primary's answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{TestGateway, credit_request, metric};
use serde_json::Value;

/// Sends `n` requests from 8 concurrent clients; counts answers per `x-model-version`.
async fn versions_of(
    gw: &Arc<TestGateway>,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> HashMap<String, usize> {
    let body = serde_json::to_vec(&credit_request(1)).unwrap();
    let headers: Vec<Vec<(String, String)>> = (0..n).map(headers).collect();
    let mut tasks = Vec::new();
    for client in 0..8 {
        let (gw, body) = (gw.clone(), body.clone());
        let mine: Vec<Vec<(String, String)>> = headers.iter().skip(client).step_by(8).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for h in mine {
                let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let reply = gw.post("/v2/models/credit-scoring/infer", body.clone(), &pairs).await;
                assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
                assert_eq!(
                    reply.header("x-model-version").unwrap(),
                    reply.json()["model_version"].as_str().unwrap()
                );
                seen.push(reply.header("x-model-version").unwrap().to_string());
            }
            seen
        }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        for v in t.await.unwrap() {
            *counts.entry(v).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_matches_the_configured_percent() {
    let gw = Arc::new(common::start(common::SPLIT).await);
    let counts = versions_of(&gw, 4000, |_| Vec::new()).await;
    let candidate = counts.get("2").copied().unwrap_or(0) as f64;
    // Binomial(4000, 0.2): mean 800, sd 25.3; 5 sd either side fails about once in 3 million runs.
    assert!((673.0..=927.0).contains(&candidate), "{counts:?}");
    assert_eq!(counts.get("1").copied().unwrap_or(0) as f64 + candidate, 4000.0, "{counts:?}");
    let text = gw.metrics().await;
    let candidate_ok = metric(
        &text,
        "gateway_requests_total",
        &[("model", "credit-scoring"), ("version", "2"), ("role", "candidate"), ("outcome", "ok")],
    );
    assert!(candidate_ok >= candidate, "{candidate_ok} < {candidate}");
    assert_eq!(
        metric(
            &text,
            "gateway_route_weight_percent",
            &[("model", "credit-scoring"), ("version", "2"), ("role", "candidate")]
        ),
        20.0
    );
    assert_eq!(
        metric(
            &text,
            "gateway_route_weight_percent",
            &[("model", "credit-scoring"), ("version", "1"), ("role", "primary")]
        ),
        80.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_always_get_the_same_version() {
    let gw = Arc::new(common::start(common::SPLIT).await);
    let mut first: HashMap<String, String> = HashMap::new();
    let body = serde_json::to_vec(&credit_request(1)).unwrap();
    for round in 0..3 {
        for user in 0..200 {
            let id = format!("user-{user}");
            let reply = gw.post("/v2/models/credit-scoring/infer", body.clone(), &[("x-user-id", &id)]).await;
            assert_eq!(reply.header("x-route-reason"), Some("sticky"));
            let v = reply.header("x-model-version").unwrap().to_string();
            if round == 0 {
                first.insert(id, v);
            } else {
                assert_eq!(first[&id], v, "{id} changed version");
            }
        }
    }
    let on_candidate = first.values().filter(|v| *v == "2").count();
    assert!((15..=70).contains(&on_candidate), "{on_candidate} of 200 sticky users on the 20% candidate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_choose_the_version_and_skip_the_split() {
    let gw = Arc::new(common::start(common::SPLIT).await);
    let counts = versions_of(&gw, 200, |_| vec![("x-model-version".into(), "2".into())]).await;
    assert_eq!(counts.get("2"), Some(&200), "{counts:?}");
    // A pin-only version, by header and by path.
    let pinned = gw
        .post(
            "/v2/models/credit-scoring/infer",
            serde_json::to_vec(&credit_request(1)).unwrap(),
            &[("x-model-version", "3")],
        )
        .await;
    assert_eq!(
        (pinned.header("x-model-version"), pinned.header("x-route-reason")),
        (Some("3"), Some("pinned"))
    );
    let by_path = gw.post_json("/v2/models/credit-scoring/versions/3/infer", &credit_request(1)).await;
    assert_eq!(by_path.json()["model_version"], "3");
    assert_eq!(by_path.header("x-route-reason"), Some("pinned"));
    // A version that is not loaded cannot be pinned.
    let missing = gw
        .post(
            "/v2/models/credit-scoring/infer",
            serde_json::to_vec(&credit_request(1)).unwrap(),
            &[("x-model-version", "7")],
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.error());
    let text = gw.metrics().await;
    assert!(
        metric(
            &text,
            "gateway_requests_total",
            &[("model", "credit-scoring"), ("version", "2"), ("role", "pinned"), ("outcome", "ok")]
        ) >= 200.0
    );
}

const SHADOWED: &str = r#"
[models.credit-scoring]
repository = "REPO"
routing = { primary = 1, shadows = [{ version = 3, percent = 100.0 }], pin_header = "x-model-version", shadow_max_in_flight = 100 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_see_every_routed_request_and_are_compared() {
    // The shadow's deadline is request_timeout_ms, and its worker runs only on CPU nothing else
    // wants: a long deadline keeps a machine busy with other tests from timing the copies out,
    // and a budget above the 50 copies (SHADOWED) keeps a lagging worker from dropping any.
    let gw = common::start_with_server(SHADOWED, "request_timeout_ms = 120000").await;
    let n = 50;
    for _ in 0..n {
        let reply = gw.infer("credit-scoring", &credit_request(2)).await;
        assert_eq!(reply.json()["model_version"], "1");
    }
    // Pinned calls are never shadowed.
    let pinned = gw
        .post(
            "/v2/models/credit-scoring/infer",
            serde_json::to_vec(&credit_request(1)).unwrap(),
            &[("x-model-version", "1")],
        )
        .await;
    assert_eq!(pinned.status, 200);
    let shadow = [("model", "credit-scoring"), ("version", "3")];
    let text = gw
        .wait_for_metrics("50 shadow requests", |t| {
            metric(t, "gateway_shadow_requests_total", &[shadow[0], shadow[1], ("outcome", "ok")]) >= n as f64
        })
        .await;
    assert_eq!(
        metric(&text, "gateway_shadow_requests_total", &[shadow[0], shadow[1], ("outcome", "ok")]),
        n as f64
    );
    for output in ["label", "probabilities"] {
        let compared =
            metric(&text, "gateway_shadow_comparisons_total", &[shadow[0], shadow[1], ("output", output)]);
        assert_eq!(compared, n as f64, "{output}");
    }
    // v3 is v1 with slightly perturbed weights: its probabilities differ a little, per element.
    let diffs =
        metric(&text, "gateway_shadow_abs_diff_count", &[shadow[0], shadow[1], ("output", "probabilities")]);
    assert_eq!(diffs, (n * 2 * 2) as f64);
    assert!(
        metric(&text, "gateway_shadow_abs_diff_sum", &[shadow[0], shadow[1], ("output", "probabilities")])
            > 0.0
    );
    assert_eq!(
        metric(
            &text,
            "gateway_requests_total",
            &[shadow[0], shadow[1], ("role", "shadow"), ("outcome", "ok")]
        ),
        n as f64
    );
    gw.stop().await;
}

fn mirror_config(shadow: u64, budget: u64) -> String {
    format!(
        "[models.mirror]\nrepository = \"TESTS\"\nrouting = {{ primary = 1, shadows = [{{ version = {shadow}, percent = 100.0 }}], shadow_max_in_flight = {budget} }}\n"
    )
}

async fn answers(gw: &TestGateway, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let reply = gw.infer("mirror", &credit_request(2)).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let mut v = reply.json();
        v.as_object_mut().unwrap().remove("id");
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shadow_leaves_primary_answers_intact() {
    let plain = common::start("[models.mirror]\nrepository = \"TESTS\"\nrouting = { primary = 1 }\n").await;
    let expected = answers(&plain, 1).await.remove(0);
    plain.stop().await;
    let gw = common::start(&mirror_config(3, 32)).await;
    // Metrics are process-wide: the plain gateway above counted under the same labels.
    let ok = [("model", "mirror"), ("version", "1"), ("outcome", "ok")];
    let before = metric(&gw.metrics().await, "gateway_requests_total", &ok);
    for got in answers(&gw, 20).await {
        assert_eq!(got, expected);
    }
    let labels = [("model", "mirror"), ("version", "3"), ("outcome", "error")];
    gw.wait_for_metrics("20 failed shadow requests", |t| {
        metric(t, "gateway_shadow_requests_total", &labels) >= 20.0
    })
    .await;
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "gateway_requests_total", &ok) - before, 20.0);
    assert_eq!(
        metric(
            &text,
            "gateway_requests_total",
            &[("model", "mirror"), ("version", "1"), ("outcome", "server_error")]
        ),
        0.0
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_over_its_budget_is_dropped_and_counted() {
    // v2 takes ~0.2 s per request; with a budget of 1, most copies find it busy.
    let gw = common::start(&mirror_config(2, 1)).await;
    let got = answers(&gw, 20).await;
    assert!(got.iter().all(|v| v["model_version"] == "1"));
    let dropped = [("model", "mirror"), ("version", "2"), ("outcome", "dropped")];
    let text = gw.metrics().await;
    assert!(metric(&text, "gateway_shadow_requests_total", &dropped) >= 1.0, "{text}");
    gw.stop().await;
}

/// The scheduling policy of this process's thread named `name` (field 41 of
/// /proc/self/task/*/stat: 0 normal, 5 idle).
fn thread_policy(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim() != name {
            return None;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // Fields after the ")" that closes the name; policy is field 41 overall.
        let rest = stat.rsplit_once(')')?.1;
        rest.split_whitespace().nth(41 - 3)?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_only_versions_run_at_idle_cpu_priority() {
    let gw = common::start(&mirror_config(2, 4)).await;
    // The worker lowers its own priority as it starts: poll (bounded) until it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while thread_policy("ort-mirror-v2-0") != Some(5) {
        assert!(std::time::Instant::now() < deadline, "the shadow's worker never ran at SCHED_IDLE");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(thread_policy("ort-mirror-v1-0"), Some(0), "the primary's worker runs normally");
    gw.stop().await;
}
