//! A fleet of replicas sharing labels and rollouts through a real Redis (Debian's
//! `redis-server`, started here on a Unix socket in a scratch folder and stopped by PID). The
//! replicas are gateways in this process, each with its own listeners and its own state; they
//! share only Redis, as replicas on different machines do. The same behaviour across real
//! containers behind HAProxy is proved by `fleet_compose.rs`.
//!
//! `#[ignore]`d for a plain `cargo test` (no Redis on a fresh machine); `.ci/run` installs
//! `redis-server` and runs them: `cargo test -p gateway --test fleet -- --include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestGateway, metric};
use serde_json::{Value, json};

/// A `redis-server` of our own, on a Unix socket (no port to collide with anything).
struct Redis {
    child: Option<Child>,
    socket: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let mut r = Redis { child: None, socket: dir.join("redis.sock") };
        r.resume();
        r
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// Starts the server (again) on the same socket, and waits until it answers.
    fn resume(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..500 {
            let ping = Command::new("redis-cli").arg("-s").arg(&self.socket).arg("ping").output();
            if ping.is_ok_and(|o| o.stdout.starts_with(b"PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10)); // polling a process start
        }
        panic!("redis-server did not answer on {}", self.socket.display());
    }

    /// Stops the server (by its PID) and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").arg("-s").arg(&self.socket).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fleet_table(redis: &Redis, name: &str, lease_ms: u64) -> String {
    format!("[fleet]\nredis_url = \"{}\"\nname = \"{name}\"\nlease_ttl_ms = {lease_ms}\n", redis.url())
}

/// credit-scoring, v2 a sticky 5%... candidate, monitored, with a rollout table (`gates`).
fn rollout_models(steps: &str, interval_s: f64, gates: &str) -> String {
    format!(
        r#"
[models.credit-scoring]
repository = "REPO"
[models.credit-scoring.routing]
primary = 1
candidates = [{{ version = 2, percent = 5.0 }}]
sticky_header = "x-user-id"
[models.credit-scoring.monitor]
output = "probabilities"
[models.credit-scoring.rollout]
steps = {steps}
step_interval_s = {interval_s}
{gates}
"#
    )
}

const MONITORED: &str = r#"
[models.credit-scoring]
repository = "REPO"
[models.credit-scoring.routing]
primary = 1
[models.credit-scoring.monitor]
output = "probabilities"
"#;

async fn replicas(n: usize, models: &str, fleet: &str) -> Vec<TestGateway> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(common::start(&format!("{fleet}\n{models}")).await);
    }
    out
}

async fn infer_as(gw: &TestGateway, user: &str, id: &str) -> common::Reply {
    let mut body = common::credit_request_seeded(1, fastrand::u64(..));
    body["id"] = json!(id);
    gw.post("/v2/models/credit-scoring/infer", serde_json::to_vec(&body).unwrap(), &[("x-user-id", user)])
        .await
}

async fn label(gw: &TestGateway, id: &str, label: u64) -> common::Reply {
    gw.post_json("/v2/feedback", &json!({"id": id, "label": label})).await
}

/// Posts the label until the fleet has the prediction (the writer sends it within a batch,
/// off the request path): the first answer that is not 404.
async fn label_when_shared(gw: &TestGateway, id: &str, value: u64) -> common::Reply {
    for _ in 0..500 {
        let reply = label(gw, id, value).await;
        if reply.status != 404 {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // polling the background writer
    }
    panic!("the prediction {id} never reached the fleet");
}

async fn rollout(gw: &TestGateway) -> Value {
    gw.get_at(gw.admin, "/admin/rollouts").await.json()["rollouts"]["credit-scoring"].clone()
}

/// Polls every replica's rollout until `done` holds on all of them (bounded).
async fn until_all(gws: &[TestGateway], what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    for _ in 0..3000 {
        let mut seen = Vec::new();
        for gw in gws {
            seen.push(rollout(gw).await);
        }
        if seen.iter().all(&done) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // polling the fleet's tick
    }
    panic!("timed out waiting until every replica {what}");
}

fn events(text: &str, event: &str) -> f64 {
    metric(text, "gateway_rollout_events_total", &[("model", "credit-scoring"), ("event", event)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_label_joins_on_any_replica_and_only_once() {
    let _one_at_a_time = common::exclusive().await;
    let dir = common::scratch("fleet-labels");
    let redis = Redis::start(&dir);
    let gws = replicas(3, MONITORED, &fleet_table(&redis, "labels", 5000)).await;

    // Made on replica 0, labelled on replica 1: joined; a second label anywhere is refused.
    assert_eq!(infer_as(&gws[0], "ann", "req-1").await.status, 200);
    let joined = label_when_shared(&gws[1], "req-1", 1).await;
    assert_eq!(joined.status, 200, "{}", joined.error());
    assert_eq!(joined.json()["model"], "credit-scoring");
    for gw in &gws {
        assert_eq!(label(gw, "req-1", 0).await.status, 409);
    }

    // Labelled at once on the replica that made it (before Redis has it): joined there, and
    // refused elsewhere once the prediction reaches the fleet.
    assert_eq!(infer_as(&gws[2], "bob", "req-2").await.status, 200);
    assert_eq!(label(&gws[2], "req-2", 1).await.status, 200);
    assert_eq!(label_when_shared(&gws[0], "req-2", 1).await.status, 409);

    // Bounded fleet-wide: the index never holds more than feedback_capacity ids.
    let text = gws[0].metrics().await;
    assert!(metric(&text, "gateway_fleet_writes_total", &[("outcome", "written")]) >= 2.0);
    assert_eq!(redis.cli(&["zcard", "gw:labels:preds:credit-scoring"]), "2");
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn the_fleet_bound_forgets_the_oldest_predictions() {
    let _one_at_a_time = common::exclusive().await;
    let dir = common::scratch("fleet-bound");
    let redis = Redis::start(&dir);
    let models =
        MONITORED.replace("output = \"probabilities\"", "output = \"probabilities\"\nfeedback_capacity = 5");
    let gws = replicas(2, &models, &fleet_table(&redis, "bound", 5000)).await;
    for i in 0..12 {
        assert_eq!(infer_as(&gws[i % 2], "u", &format!("b-{i}")).await.status, 200);
    }
    // The newest joins through the other replica; the oldest is forgotten fleet-wide.
    assert_eq!(label_when_shared(&gws[0], "b-11", 1).await.status, 200);
    assert_eq!(redis.cli(&["zcard", "gw:bound:preds:credit-scoring"]), "5");
    assert_eq!(redis.cli(&["exists", "gw:bound:pred:credit-scoring:b-0"]), "0");
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_candidate_with_false_positives_is_rolled_back_on_every_replica_once() {
    let _one_at_a_time = common::exclusive().await;
    let dir = common::scratch("fleet-rollback");
    let redis = Redis::start(&dir);
    let gates = "min_requests = 20\nmax_false_positive_rate = 0.10\nmin_labelled_negatives = 20";
    let models = rollout_models("[50, 100]", 0.5, gates);
    let gws = replicas(3, &models, &fleet_table(&redis, "rollback", 2000)).await;
    until_all(&gws, "published the rollout", |r| r["fleet"]["seq"].as_u64() >= Some(1)).await;
    let before = events(&gws[0].metrics().await, "rollback");

    // Requests round-robin over the replicas; every label goes to the next replica.
    let mut candidate_ids = Vec::new();
    for i in 0..4000 {
        let (user, id) = (format!("user-{i}"), format!("fp-{i}"));
        let reply = infer_as(&gws[i % 3], &user, &id).await;
        assert_eq!(reply.status, 200);
        let version = reply.header("x-model-version").unwrap().to_string();
        // A sticky user gets the same version from every replica.
        let again = infer_as(&gws[(i + 1) % 3], &user, &format!("{id}-again")).await;
        assert_eq!(again.header("x-model-version"), Some(version.as_str()), "user {user}");
        if version == "2" {
            candidate_ids.push((i, id));
            if candidate_ids.len() == 60 {
                break;
            }
        }
    }
    assert_eq!(candidate_ids.len(), 60, "the candidate answered too few requests");
    for (i, id) in &candidate_ids {
        let reply = label_when_shared(&gws[(i + 1) % 3], id, 0).await;
        assert_eq!(reply.status, 200, "{}", reply.error());
    }
    let seen = until_all(&gws, "rolled back", |r| r["state"] == "rolled_back").await;
    for r in &seen {
        assert_eq!(r["weight"], 0.0, "{r}");
        let reasons = r["last_verdict"]["analysis"]["reasons"].to_string();
        assert!(reasons.contains("false-positive rate"), "{reasons}");
    }
    assert_eq!(seen.iter().filter(|r| r["fleet"]["judging"] == true).count(), 1, "{seen:?}");
    // One rollback for the whole fleet (every replica of this process shares one registry of
    // metrics, so this counter is the fleet's sum).
    let text = gws[0].metrics().await;
    assert_eq!(events(&text, "rollback") - before, 1.0);
    // Every replica routes the candidate's users back to the primary.
    for gw in &gws {
        for (_, id) in candidate_ids.iter().take(3) {
            let user = format!("user-{}", id.trim_start_matches("fp-"));
            assert_eq!(infer_as(gw, &user, "after").await.header("x-model-version"), Some("1"));
        }
    }
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn the_judge_is_replaced_and_a_restarted_replica_resumes_the_fleets_rollout() {
    let _one_at_a_time = common::exclusive().await;
    let dir = common::scratch("fleet-judge");
    let redis = Redis::start(&dir);
    // No gate but min_requests: every window with a request passes, one step per interval.
    let models = rollout_models("[10, 20, 30, 40, 100]", 1.0, "min_requests = 1");
    let fleet = fleet_table(&redis, "judge", 1000);
    let mut gws = replicas(2, &models, &fleet).await;
    let seen = until_all(&gws, "published the rollout", |r| r["fleet"]["seq"].as_u64() >= Some(1)).await;
    let judge = seen.iter().position(|r| r["fleet"]["judging"] == true).unwrap();
    // Keeps a candidate request in every window: a sticky user the candidate answers.
    let user = candidate_user(&gws[0]).await;
    let step_of = |r: &Value| r["step"].as_u64().unwrap();
    until_steps(&gws, &user, 1).await;

    // The judge leaves; the other replica takes over within the lease and carries on from
    // the published step (not from the first).
    let left = gws.remove(judge);
    let step_before = step_of(&rollout(&gws[0]).await);
    left.stop().await;
    let r = until_all(&gws, "took over judging", |r| r["fleet"]["judging"] == true).await;
    assert!(step_of(&r[0]) >= step_before, "{r:?}");
    until_steps(&gws, &user, step_before + 1).await;

    // A replica started now resumes the fleet's rollout before its first request.
    let published = rollout(&gws[0]).await;
    let fresh = common::start(&format!("{fleet}\n{models}")).await;
    let resumed = rollout(&fresh).await;
    assert!(step_of(&resumed) >= step_of(&published), "{resumed} vs {published}");
    assert_ne!(resumed["step"], 0, "{resumed}");
    fresh.stop().await;
    for gw in gws {
        gw.stop().await;
    }
}

/// A sticky user the candidate (v2) answers.
async fn candidate_user(gw: &TestGateway) -> String {
    for i in 0..5000 {
        let user = format!("cand-{i}");
        if infer_as(gw, &user, &format!("c-{i}")).await.header("x-model-version") == Some("2") {
            return user;
        }
    }
    panic!("no user reached the candidate");
}

/// Sends the candidate's user to every replica until every replica shows step >= `step`.
async fn until_steps(gws: &[TestGateway], user: &str, step: u64) {
    for i in 0..3000 {
        let _ = infer_as(&gws[i % gws.len()], user, &format!("s-{i}")).await;
        let mut all = true;
        for gw in gws {
            all &= rollout(gw).await["step"].as_u64().unwrap_or(0) >= step;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // polling the fleet's tick
    }
    panic!("the fleet never reached step {step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn without_redis_requests_are_served_writes_dropped_and_rollouts_held() {
    let _one_at_a_time = common::exclusive().await;
    let dir = common::scratch("fleet-down");
    let mut redis = Redis::start(&dir);
    let models = rollout_models("[50, 100]", 0.5, "min_requests = 1000000");
    let gws = replicas(2, &models, &fleet_table(&redis, "down", 1000)).await;
    until_all(&gws, "published the rollout", |r| r["fleet"]["seq"].as_u64() >= Some(1)).await;
    let weight = rollout(&gws[0]).await["weight"].clone();

    redis.stop();
    for i in 0..200 {
        let reply = infer_as(&gws[i % 2], &format!("d-{i}"), &format!("down-{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.error());
    }
    let seen = until_all(&gws, "saw Redis gone", |r| r["fleet"]["connected"] == false).await;
    for r in &seen {
        assert_eq!(r["weight"], weight, "the routing in force stays: {r}");
        assert!(r["fleet"]["held"].as_str().unwrap().contains("unreachable"), "{r}");
    }
    // Nobody judges once the lease has run out. (The leader gauge is one per process, so it is
    // checked across containers, in fleet_compose.rs.)
    until_all(&gws, "stopped judging", |r| r["fleet"]["judging"] == false).await;
    let text = gws[0].metrics().await;
    let lost = metric(&text, "gateway_fleet_writes_total", &[("outcome", "dropped")])
        + metric(&text, "gateway_fleet_writes_total", &[("outcome", "failed")]);
    assert!(lost >= 1.0, "shared writes lost while Redis is down must be counted");
    // A label for a prediction this replica made still joins here.
    assert_eq!(label(&gws[0], "down-0", 1).await.status, 200);

    // Redis back, empty (it kept nothing): the replicas reconnect and the judge publishes the
    // state the fleet had, rather than starting the rollout over.
    redis.resume();
    until_all(&gws, "reconnected", |r| r["fleet"]["connected"] == true && r["fleet"]["held"].is_null()).await;
    until_all(&gws, "republished", |r| r["fleet"]["seq"].as_u64() >= Some(1) && r["weight"] == 50.0).await;
    assert_eq!(infer_as(&gws[1], "x", "back-1").await.status, 200);
    assert_eq!(label_when_shared(&gws[0], "back-1", 1).await.status, 200);
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_tenants_rate_is_the_fleets_not_each_replicas() {
    let _one_at_a_time = common::exclusive().await;
    let dir = common::scratch("fleet-tenant-rate");
    let redis = Redis::start(&dir);
    let keys = dir.join("keys.toml");
    let hash = gateway::config::hash_key("k-shared");
    std::fs::write(
        &keys,
        format!(
            "[[tenant]]\nname = \"shared\"\nkey_sha256 = \"{hash}\"\nmodels = [\"*\"]\nrps = 4.0\nburst = 4\n"
        ),
    )
    .unwrap();
    let auth = format!("[auth]\nkeys_file = \"{}\"\n", keys.display());
    let gws = replicas(2, &format!("{auth}{MONITORED}"), &fleet_table(&redis, "tenant-rate", 5000)).await;
    let body = serde_json::to_vec(&common::credit_request(1)).unwrap();
    let headers = [("x-api-key", "k-shared"), ("content-type", "application/json")];
    // Both replicas see the tenant (as behind a round-robin balancer), then 3 s of requests
    // alternating between them as fast as they answer.
    let (mut admitted, mut refused) = (0u32, 0u32);
    let started = std::time::Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        let reply = gws[i % 2].post("/v2/models/credit-scoring/infer", body.clone(), &headers).await;
        match reply.status.as_u16() {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}: {}", reply.error()),
        }
        i += 1;
    }
    // Each replica on its own would admit its burst and its rate: 2 x (4 + 4 x 3) = 32. The
    // fleet's rate is 4/s: the two bursts before they learn of each other, then ~4/s in all.
    assert!(refused > 0, "nothing refused in {i} requests");
    assert!(admitted <= 24, "{admitted} admitted in 3 s: each replica applied the whole rate");
    assert!(admitted >= 8, "{admitted} admitted: the rate was over-split");
    assert!(redis.cli(&["keys", "gw:tenant-rate:window:rate:*"]).contains("rate:"), "nothing shared");
    for gw in gws {
        gw.stop().await;
    }
}
