//! Hot swap and live reload: prepare → flip → drain under concurrent load, refused reloads that
//! leave the old routing serving, the file-watch trigger, and the admin API's token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestGateway, credit_request, metric, scratch, start_file, write_config};

fn credit(routing: &str) -> String {
    format!("[models.credit-scoring]\nrepository = \"REPO\"\n[models.credit-scoring.routing]\n{routing}\n")
}

/// The routings a reload cycles through: each loads some versions and unloads others.
const ROUTINGS: [&str; 4] = [
    "primary = 1",
    "primary = 2\ncandidates = [{ version = 3, percent = 50.0 }]",
    "primary = 3\nshadows = [{ version = 1, percent = 100.0 }]",
    "primary = 1\ncandidates = [{ version = 2, percent = 10.0 }]\nversions = [3]",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let dir = scratch("reload-load");
    let path = write_config(&dir, &credit(ROUTINGS[0]));
    let gw = Arc::new(start_file(&path, false).await);
    let stop = Arc::new(AtomicBool::new(false));
    let body = serde_json::to_vec(&credit_request(2)).unwrap();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop, body) = (gw.clone(), stop.clone(), body.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let reply = gw.post("/v2/models/credit-scoring/infer", body.clone(), &[]).await;
                    if reply.status == 200 {
                        ok += 1
                    } else {
                        failed.push(String::from_utf8_lossy(&reply.body).to_string())
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for i in 1..=23 {
        write_config(&dir, &credit(ROUTINGS[i % ROUTINGS.len()]));
        let reply = gw.admin_post("/admin/reload", None).await;
        assert_eq!(reply.status, 200, "reload {i}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.json()["outcome"], "applied");
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "failed requests during reloads: {failed:?}");
        total += ok;
    }
    assert!(total > 24, "clients made only {total} requests");
    // The final split is the last config's: primary 1 with 2 at 10%; 3 is pin-only.
    let config = gw.get_at(gw.admin, "/admin/config").await.json();
    let routing = &config["models"]["credit-scoring"];
    assert_eq!(routing["primary"], 1);
    assert_eq!(routing["candidates"][0]["version"], 2);
    assert_eq!(routing["versions"], serde_json::json!([1, 2, 3]));
    let text = gw.metrics().await;
    assert!(metric(&text, "gateway_config_reloads_total", &[("outcome", "applied")]) >= 23.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloaded_versions_drain_and_free_their_workers() {
    let dir = scratch("reload-free");
    let mirror =
        |routing: &str| format!("[models.mirror]\nrepository = \"TESTS\"\nrouting = {{ {routing} }}\n");
    let path = write_config(&dir, &mirror("primary = 1, versions = [3]"));
    let gw = start_file(&path, false).await;
    // A new thread names itself once it runs: wait for the name rather than race it.
    common::eventually("mirror v3's worker threads", Duration::from_secs(30), || async {
        worker_threads("ort-mirror-v3-").await > 0
    })
    .await;
    write_config(&dir, &mirror("primary = 1"));
    let reply = gw.admin_post("/admin/reload", None).await.json();
    assert_eq!(reply["unloaded"], serde_json::json!(["mirror/3"]));
    // Its queue closed with the old snapshot; its worker threads exit and are joined.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while worker_threads("ort-mirror-v3-").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "v3 workers still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "gateway_model_loaded", &[("model", "mirror"), ("version", "3")]), 0.0);
    assert_eq!(metric(&text, "gateway_model_loaded", &[("model", "mirror"), ("version", "1")]), 1.0);
    let pinned = gw.post_json("/v2/models/mirror/versions/3/infer", &credit_request(1)).await;
    assert_eq!(pinned.status, 404);
}

/// Threads of this process whose name starts with `prefix` (Linux: /proc/self/task/*/comm).
async fn worker_threads(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// A repository with credit-scoring v1, a broken v9 and the dense model as v8.
fn odd_repo() -> std::path::PathBuf {
    let repo = scratch("odd-repo");
    let model = repo.join("credit-scoring");
    for (v, from) in [(1, "credit-scoring/1"), (8, "dense/1")] {
        std::fs::create_dir_all(model.join(v.to_string())).unwrap();
        std::fs::copy(format!("{}/{from}/model.onnx", common::repo()), model.join(format!("{v}/model.onnx")))
            .unwrap();
    }
    std::fs::create_dir_all(model.join("9")).unwrap();
    std::fs::write(model.join("9/model.onnx"), b"not a model").unwrap();
    repo
}

async fn refused(gw: &TestGateway, dir: &std::path::Path, toml: &str) -> serde_json::Value {
    write_config(dir, toml);
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 400, "{toml}\n{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert!(body["error"].as_str().unwrap().contains("refused"), "{body}");
    body
}

fn problems(body: &serde_json::Value) -> Vec<(String, String)> {
    body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap().to_string(), p["message"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reloads_are_refused_whole_and_the_old_routing_serves() {
    let repo = odd_repo();
    let dir = scratch("reload-bad");
    let good = format!(
        "[models.credit-scoring]\nrepository = \"{}\"\nrouting = {{ primary = 1 }}\n",
        repo.display()
    );
    let path = write_config(&dir, &good);
    let gw = start_file(&path, false).await;
    let before = metric(&gw.metrics().await, "gateway_config_reloads_total", &[("outcome", "rejected")]);
    let with = |routing: &str| {
        format!("[models.credit-scoring]\nrepository = \"{}\"\nrouting = {{ {routing} }}\n", repo.display())
    };

    let body = refused(&gw, &dir, &with("primary = 1, candidates = [{ version = 8, percent = 70.0 }, { version = 9, percent = 40.0 }], typo = 1")).await;
    let p = problems(&body);
    assert!(p.iter().any(|(path, _)| path == "models.credit-scoring.routing.typo"), "{p:?}");
    // Unknown keys stop parsing, so fix that and see the rest reported together.
    let body = refused(
        &gw,
        &dir,
        &with("primary = 1, candidates = [{ version = 7, percent = 70.0 }, { version = 6, percent = 40.0 }]"),
    )
    .await;
    let p = problems(&body);
    assert!(
        p.iter().any(|(path, m)| path == "models.credit-scoring.routing.candidates" && m.contains("110")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|(path, m)| path == "models.credit-scoring.routing.candidates[0].version"
            && m.contains("does not exist")),
        "{p:?}"
    );
    assert!(p.iter().any(|(path, _)| path == "models.credit-scoring.routing.candidates[1].version"), "{p:?}");

    let body = refused(&gw, &dir, &with("primary = 1, candidates = [{ version = 9, percent = 5.0 }]")).await;
    let p = problems(&body);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "models.credit-scoring.routing.candidates[0].version");
    assert!(p[0].1.contains("9/model.onnx"), "{p:?}");

    let body = refused(&gw, &dir, &with("primary = 1, shadows = [{ version = 8, percent = 100.0 }]")).await;
    let p = problems(&body);
    assert!(
        p[0].1.contains("does not accept the primary's (v1) inputs")
            && p[0].1.contains("'features' is missing"),
        "{p:?}"
    );

    // Still v1 alone, still answering.
    let reply = gw.infer("credit-scoring", &credit_request(1)).await;
    assert_eq!((reply.status.as_u16(), reply.json()["model_version"].as_str()), (200, Some("1")));
    let config = gw.get_at(gw.admin, "/admin/config").await.json();
    assert_eq!(config["generation"], 1);
    let after = metric(&gw.metrics().await, "gateway_config_reloads_total", &[("outcome", "rejected")]);
    assert_eq!(after - before, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_reloads_it() {
    let dir = scratch("reload-watch");
    let path = write_config(&dir, &credit("primary = 1"));
    let gw = start_file(&path, true).await;
    write_config(&dir, &credit("primary = 2"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = gw.infer("credit-scoring", &credit_request(1)).await;
        if reply.json()["model_version"] == "2" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the file change was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_named_and_kept() {
    let dir = scratch("reload-restart");
    let path = write_config(&dir, &credit("primary = 1"));
    let gw = start_file(&path, false).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_in_flight = 7\n{}",
        common::with_paths(&credit("primary = 2"))
    );
    std::fs::write(&path, text).unwrap();
    let report = gw.admin_post("/admin/reload", None).await.json();
    assert_eq!(report["outcome"], "applied");
    let restart = report["restart_required"].as_array().unwrap();
    assert!(restart.iter().any(|r| r.as_str().unwrap().starts_with("server.max_in_flight")), "{report}");
    assert_eq!(gw.infer("credit-scoring", &credit_request(1)).await.json()["model_version"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_bearer_token() {
    // CARGO_PKG_NAME is set for every test process by cargo, so no env var has to be written.
    let token = std::env::var("CARGO_PKG_NAME").unwrap();
    let toml = format!("[admin]\ntoken_env = \"CARGO_PKG_NAME\"\n{}", credit("primary = 1"));
    let gw = common::start(&toml).await;
    for path in ["/admin/models", "/admin/config"] {
        assert_eq!(gw.get_at(gw.admin, path).await.status, 401);
    }
    assert_eq!(gw.admin_post("/admin/reload", Some("wrong")).await.status, 401);
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, 401);
    // Right token: reaches the handler (a config built in code has nothing to reload).
    let reply = gw.admin_post("/admin/reload", Some(&token)).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    // /metrics stays open.
    assert_eq!(gw.get_at(gw.admin, "/metrics").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_budget_is_the_models_and_survives_a_reload() {
    let dir = scratch("reload-budget");
    let routing = |percent: f64| {
        credit(&format!(
            "primary = 1\ncandidates = [{{ version = 2, percent = {percent} }}]\nshadows = [{{ version = 3, percent = 100.0 }}]\nshadow_max_in_flight = 1"
        ))
    };
    let path = write_config(&dir, &routing(10.0));
    let gw = start_file(&path, false).await;
    let registry = gw.gateway.as_ref().unwrap().registry.clone();
    // A mirrored copy in flight on the running snapshot holds the model's one place.
    let held = registry.snapshot().model("credit-scoring").unwrap().shadow_budget.try_acquire().unwrap();

    write_config(&dir, &routing(20.0));
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let next = registry.snapshot();
    let budget = &next.model("credit-scoring").unwrap().shadow_budget;
    assert!(budget.try_acquire().is_none(), "the copy in flight must still count after the reload");
    drop(held);
    assert!(budget.try_acquire().is_some());

    // A refused reload does not change the limit; an applied one does.
    write_config(&dir, "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 99 }\n");
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, 400);
    let places = |b: &Arc<gateway::registry::ShadowBudget>| {
        let permits: Vec<_> = std::iter::from_fn(|| b.try_acquire()).take(10).collect();
        permits.len()
    };
    assert_eq!(places(budget), 1);
    write_config(&dir, &routing(20.0).replace("shadow_max_in_flight = 1", "shadow_max_in_flight = 3"));
    assert_eq!(gw.admin_post("/admin/reload", None).await.status, 200);
    assert_eq!(places(&registry.snapshot().model("credit-scoring").unwrap().shadow_budget), 3);
    gw.stop().await;
}
