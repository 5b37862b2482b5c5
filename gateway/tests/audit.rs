//! The audit history over real sockets: each kind of change recorded once with its actor (the
//! start, a rollout's start and verdict, an operator's promotion, admin reloads, a refused
//! reload, the file watch), `GET /admin/history` paging, and `POST /admin/revert` restoring an
//! earlier generation's config file through a normal reload, across a restart too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{
    TestGateway, credit_request, credit_request_seeded, eventually, scratch, start_file, write_config,
};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

/// `CARGO_PKG_NAME` is set for every test: its value ("gateway") is the admin token.
const TOKEN: &str = "gateway";

fn config(audit_dir: &Path, body: &str) -> String {
    format!("[admin]\ntoken_env = \"CARGO_PKG_NAME\"\n[audit]\ndir = \"{}\"\n{body}", audit_dir.display())
}

fn credit(routing: &str) -> String {
    format!("[models.credit-scoring]\nrepository = \"REPO\"\n[models.credit-scoring.routing]\n{routing}\n")
}

async fn admin(gw: &TestGateway, method: &str, path: &str, body: Option<Value>) -> common::Reply {
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(body))
        .unwrap();
    gw.send(req).await
}

/// Every record, newest first, paging through `/admin/history` two at a time.
async fn history(gw: &TestGateway) -> Vec<Value> {
    let (mut all, mut before) = (Vec::new(), None::<u64>);
    loop {
        let path = match before {
            Some(b) => format!("/admin/history?limit=2&before={b}"),
            None => "/admin/history?limit=2".to_string(),
        };
        let reply = admin(gw, "GET", &path, None).await;
        assert_eq!(reply.status, 200, "{}", reply.error());
        let page = reply.json();
        all.extend(page["records"].as_array().unwrap().iter().cloned());
        match page["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => return all,
        }
    }
}

/// (event, outcome, actor kind) of each record, oldest first.
fn summary(records: &[Value]) -> Vec<(String, String, String)> {
    records
        .iter()
        .rev()
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
            (s(&r["event"]), s(&r["outcome"]), s(&r["actor"]["kind"]))
        })
        .collect()
}

fn owned(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    expected.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_recorded_once_with_its_actor() {
    let dir = scratch("audit-kinds");
    let audit = dir.join("audit");
    // A latency gate no candidate can meet: its first verdict with data is a rollback.
    let rollout = "primary = 1\ncandidates = [{ version = 2, percent = 5.0 }]\nsticky_header = \"x-user-id\"\n\
                   [models.credit-scoring.rollout]\nsteps = [50, 100]\nstep_interval_s = 3600\n\
                   min_requests = 10\nmax_p99_latency_ms = 0.000001";
    let path = write_config(&dir, &config(&audit, &credit(rollout)));
    let gw = start_file(&path, false).await;

    // The controller's verdict: enough candidate traffic, then judge (what the timer does).
    let mut answered = 0;
    for i in 0..2000 {
        let mut body = credit_request_seeded(1, i);
        body["id"] = json!(format!("u{i}"));
        let req = Request::post(format!("http://{}/v2/models/credit-scoring/infer", gw.data))
            .header("x-user-id", format!("u{i}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let reply = gw.send(req).await;
        assert_eq!(reply.status, 200, "{}", reply.error());
        if reply.json()["model_version"] == "2" {
            answered += 1;
            if answered == 10 {
                break;
            }
        }
    }
    assert_eq!(answered, 10, "the candidate never answered 10 requests");
    let g = gw.gateway.as_ref().unwrap();
    {
        let _control = g.registry.control.lock().await;
        let verdict = g.monitor.judge_now(&g.registry, "credit-scoring").unwrap();
        assert_eq!(verdict["state"], "rolled_back", "{verdict}");
        // A second verdict changes nothing that serves: nothing recorded for it.
        g.monitor.judge_now(&g.registry, "credit-scoring").unwrap();
    }

    // The operator promotes the candidate anyway.
    let reply = admin(&gw, "POST", "/admin/rollouts/credit-scoring/promote", None).await;
    assert_eq!(reply.status, 200, "{}", reply.error());

    // An admin reload of an edited file, then one refused.
    let with_shadow = format!("{rollout}\n");
    let edited = credit(&with_shadow.replacen(
        "sticky_header",
        "shadows = [{ version = 3, percent = 100.0 }]\nsticky_header",
        1,
    ));
    write_config(&dir, &config(&audit, &edited));
    let reply = admin(&gw, "POST", "/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    write_config(&dir, &config(&audit, &credit("primary = 9")));
    let reply = admin(&gw, "POST", "/admin/reload", None).await;
    assert_eq!(reply.status, 400, "{}", reply.error());

    let records = history(&gw).await;
    assert_eq!(
        summary(&records),
        owned(&[
            // The rollout starts with the gateway: the start's routing already gives the
            // candidate steps[0].
            ("start", "applied", "gateway"),
            ("rollback", "applied", "controller"),
            ("promote", "applied", "admin"),
            ("reload", "applied", "admin"),
            ("reload", "refused", "admin"),
        ])
    );
    let by_event = |e: &str| records.iter().find(|r| r["event"] == e).unwrap().clone();
    // The start keeps the file's text (what a revert restores).
    let start = by_event("start");
    assert!(start["config"].as_str().unwrap().contains("max_p99_latency_ms"), "{start}");
    // The verdict's numbers, and the routing it changed.
    let rollback = by_event("rollback");
    assert!(rollback["details"]["analysis"]["p99_latency_ms"].as_f64().unwrap() > 0.0, "{rollback}");
    assert_eq!(rollback["routing_before"]["credit-scoring"]["candidates"][0]["percent"], 50.0);
    assert_eq!(rollback["routing_after"]["credit-scoring"]["candidates"][0]["percent"], 0.0);
    // The operator: the token's fingerprint and where the call came from, never the token.
    let promote = by_event("promote");
    let actor = &promote["actor"];
    assert!(actor["token"].as_str().unwrap().starts_with("sha256:"), "{actor}");
    assert!(actor["remote"].as_str().unwrap().starts_with("127.0.0.1:"), "{actor}");
    assert!(!promote.to_string().contains("\"gateway\""), "the token leaked: {promote}");
    // The refused reload says why, and the running generation stayed.
    let refused = &records[0];
    assert!(refused["details"]["problems"].to_string().contains("version 9"), "{refused}");
    assert_eq!(refused["generation"], records[1]["generation"]);
    // Generations increase by one per applied change.
    let generations: Vec<u64> = records
        .iter()
        .rev()
        .filter(|r| r["outcome"] == "applied")
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    assert!(generations.windows(2).all(|w| w[1] == w[0] + 1), "{generations:?}");

    // The file on disk: one JSON record per line, the same records.
    let text = std::fs::read_to_string(audit.join("history.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), records.len());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_restores_an_earlier_routing_through_a_normal_reload() {
    let dir = scratch("audit-revert");
    let audit = dir.join("audit");
    let first_text =
        std::fs::read_to_string(write_config(&dir, &config(&audit, &credit("primary = 1")))).unwrap();
    let path = dir.join("gateway.toml");
    let gw = start_file(&path, false).await;
    let first_generation = gw.get_at(gw.admin, "/admin/models").await;
    assert_eq!(first_generation.status, 401, "the admin API needs its token");
    let first_generation =
        admin(&gw, "GET", "/admin/models", None).await.json()["generation"].as_u64().unwrap();
    for routing in ["primary = 2", "primary = 3\ncandidates = [{ version = 1, percent = 20.0 }]"] {
        write_config(&dir, &config(&audit, &credit(routing)));
        assert_eq!(admin(&gw, "POST", "/admin/reload", None).await.status, 200);
    }

    let reply = admin(&gw, "POST", "/admin/revert", Some(json!({ "generation": first_generation }))).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    let report = reply.json();
    assert_eq!(report["outcome"], "applied");
    let generation = report["generation"].as_u64().unwrap();
    assert_eq!(generation, first_generation + 3);
    // The file is the source of truth: it holds generation 1's text again, byte for byte.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first_text);
    // Answers come from the restored routing, under the new generation.
    for _ in 0..20 {
        let reply = gw.infer("credit-scoring", &credit_request(1)).await;
        assert_eq!(reply.json()["model_version"], "1");
        assert_eq!(reply.header("x-gateway-generation"), Some(generation.to_string().as_str()));
    }
    let newest = &history(&gw).await[0];
    assert_eq!(newest["event"], "revert");
    assert_eq!(newest["trigger"], format!("revert to generation {first_generation}"));
    assert_eq!(newest["actor"]["kind"], "admin");
    assert_eq!(newest["routing_before"]["credit-scoring"]["primary"], 3);
    assert_eq!(newest["routing_after"]["credit-scoring"]["primary"], 1);

    // What cannot be reverted says why.
    let reply = admin(&gw, "POST", "/admin/revert", Some(json!({ "generation": 999 }))).await;
    assert_eq!(reply.status, 404, "{}", reply.error());
    let reply = admin(&gw, "POST", "/admin/revert", Some(json!({ "gen": 1 }))).await;
    assert_eq!(reply.status, 400, "{}", reply.error());
    let reply = admin(&gw, "GET", "/admin/history?limit=0", None).await;
    assert_eq!(reply.status, 400, "{}", reply.error());
    gw.stop().await;

    // A restart reads the history back, numbers its generations on from it, and can revert
    // to a generation the previous process served.
    let gw = start_file(&path, false).await;
    let records = history(&gw).await;
    assert_eq!(records[0]["event"], "start");
    assert_eq!(records[0]["generation"], generation + 1);
    assert_eq!(records[1]["event"], "revert");
    let reply =
        admin(&gw, "POST", "/admin/revert", Some(json!({ "generation": first_generation + 1 }))).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    let reply = gw.infer("credit-scoring", &credit_request(1)).await;
    assert_eq!(reply.json()["model_version"], "2");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_is_recorded_as_the_file_watch() {
    let dir = scratch("audit-watch");
    let audit = dir.join("audit");
    let path = write_config(&dir, &config(&audit, &credit("primary = 1")));
    let gw = start_file(&path, true).await;
    write_config(&dir, &config(&audit, &credit("primary = 2")));
    eventually("the file change is recorded", Duration::from_secs(30), || async {
        history(&gw).await.first().is_some_and(|r| r["trigger"] == "file change")
    })
    .await;
    let newest = &history(&gw).await[0];
    assert_eq!(newest["actor"]["kind"], "file_watch");
    assert_eq!(newest["event"], "reload");
    assert_eq!(newest["routing_after"]["credit-scoring"]["primary"], 2);
    assert!(newest["config"].as_str().unwrap().contains("primary = 2"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_folder_the_history_is_kept_in_memory_and_revert_needs_a_file() {
    let gw = common::start(&credit("primary = 1")).await;
    let page = gw.get_at(gw.admin, "/admin/history").await.json();
    assert_eq!(page["records"][0]["event"], "start");
    assert!(page["records"][0].get("config").is_none(), "a config built in code has no file text");
    let reply = gw
        .send(
            Request::post(format!("http://{}/admin/revert", gw.admin))
                .body(Full::new(Bytes::from(json!({ "generation": 1 }).to_string())))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.error());
    gw.stop().await;
}
