//! The fleet proof on real containers: three replicas of the gateway image (deploy/docker/), one
//! Redis and one HAProxy on private Compose networks (deploy/compose/fleet/), one config. Through
//! the balancer, requests of one user land on different replicas one after another, as behind a
//! Kubernetes Service; the test also asks each replica directly (its ports are published on
//! loopback) to see what each one believes.
//!
//! Proved, in order: sticky users get the same version from every replica; the judging replica
//! killed mid-rollout is replaced within the lease TTL and the rollout carries on; a healthy
//! candidate is promoted on every replica; labels posted through the balancer all join; a
//! candidate with many false positives is rolled back on every replica within two step
//! intervals of each other, with one rollback event fleet-wide; a replica cut off from Redis
//! keeps serving with the routing in force and rejoins; Redis stopped for ten seconds under load
//! loses no request.
//!
//! Needs Docker with Compose and the images from `deploy/docker/build.sh`; `.ci/run` builds them
//! and runs `cargo test -p gateway --test fleet_compose -- --include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const TOKEN: &str = "fleet-test-token";
const REPLICAS: [&str; 3] = ["gw1", "gw2", "gw3"];
/// The config's `step_interval_s` and `lease_ttl_ms`.
const STEP: Duration = Duration::from_secs(2);
const LEASE: Duration = Duration::from_secs(3);

/// One Compose project of our own, taken down (containers, networks) when dropped.
struct Compose {
    project: String,
    file: PathBuf,
}

impl Compose {
    fn up() -> Compose {
        let image = Command::new("docker").args(["image", "inspect", "gateway:dev"]).output().unwrap();
        assert!(image.status.success(), "no gateway:dev image: run deploy/docker/build.sh first");
        let file =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/fleet/docker-compose.yml");
        let compose = Compose { project: format!("gwfleet{}", std::process::id()), file };
        compose.run(&["up", "-d"]);
        compose
    }

    fn command(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("-p").arg(&self.project).arg("-f").arg(&self.file).env("GATEWAY_ADMIN_TOKEN", TOKEN);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Where `service`'s `port` is published on loopback.
    fn port(&self, service: &str, port: u16) -> SocketAddr {
        let shown = self.run(&["port", service, &port.to_string()]);
        shown.trim().parse().unwrap_or_else(|_| panic!("{service}:{port} is published as {shown:?}"))
    }

    fn container(&self, service: &str) -> String {
        self.run(&["ps", "-q", service]).trim().to_string()
    }

    fn docker(&self, args: &[&str]) {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.command().args(["logs", "--tail", "40"]).output();
            if let Ok(out) = logs {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let _ = self.command().args(["down", "-v", "--remove-orphans", "-t", "5"]).output();
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Answer {
    status: u16,
    version: Option<String>,
    body: Value,
}

/// One request; a connection failure is an answer with status 0 (counted, never a panic).
async fn call(client: &HttpClient, req: Request<Full<Bytes>>) -> Answer {
    let sent = tokio::time::timeout(Duration::from_secs(30), client.request(req)).await;
    let Ok(Ok(response)) = sent else { return Answer { status: 0, version: None, body: Value::Null } };
    let status = response.status().as_u16();
    let version = response.headers().get("x-model-version").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Answer { status, version, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

async fn infer(client: &HttpClient, at: SocketAddr, model: &str, user: &str, id: &str) -> Answer {
    let mut body = common::credit_request_seeded(1, fastrand::u64(..));
    body["id"] = json!(id);
    let req = Request::post(format!("http://{at}/v2/models/{model}/infer"))
        .header("content-type", "application/json")
        .header("x-user-id", user)
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    call(client, req).await
}

async fn label(client: &HttpClient, at: SocketAddr, id: &str, value: u64) -> Answer {
    let req = Request::post(format!("http://{at}/v2/feedback"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json!({"id": id, "label": value}).to_string())))
        .unwrap();
    call(client, req).await
}

async fn admin_get(client: &HttpClient, at: SocketAddr, path: &str) -> Answer {
    let req = Request::get(format!("http://{at}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    call(client, req).await
}

/// The fleet under test: the balancer's address and each replica's data and admin addresses.
struct Fleet {
    compose: Compose,
    client: HttpClient,
    balancer: SocketAddr,
    data: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
}

impl Fleet {
    async fn start() -> Fleet {
        let compose = Compose::up();
        let balancer = compose.port("haproxy", 8080);
        let data = REPLICAS.iter().map(|s| compose.port(s, 8080)).collect();
        let admin = REPLICAS.iter().map(|s| compose.port(s, 9090)).collect();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let fleet = Fleet { compose, client, balancer, data, admin };
        for i in 0..REPLICAS.len() {
            fleet.until_ready(i).await;
        }
        fleet
    }

    /// Re-reads a replica's published ports (a restarted container gets new ones).
    fn refresh(&mut self, i: usize) {
        self.data[i] = self.compose.port(REPLICAS[i], 8080);
        self.admin[i] = self.compose.port(REPLICAS[i], 9090);
    }

    async fn until_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let req = Request::get(format!("http://{}/v2/health/ready", self.data[i]))
                .body(Full::new(Bytes::new()))
                .unwrap();
            if call(&self.client, req).await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // polling a container start
        }
        panic!("{} never became ready", REPLICAS[i]);
    }

    async fn rollout(&self, i: usize, model: &str) -> Value {
        admin_get(&self.client, self.admin[i], "/admin/rollouts").await.body["rollouts"][model].clone()
    }

    /// Polls the replicas `which` until `done` holds on each; returns when each first held.
    async fn until_each(
        &self,
        which: &[usize],
        model: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<Instant> {
        let mut when: Vec<Option<Instant>> = vec![None; which.len()];
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            for (k, &i) in which.iter().enumerate() {
                if when[k].is_none() && done(&self.rollout(i, model).await) {
                    when[k] = Some(Instant::now());
                }
            }
            if when.iter().all(Option::is_some) {
                return when.into_iter().flatten().collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // polling the fleet's tick
        }
        panic!("timed out waiting until every replica {what}");
    }

    async fn judge(&self, which: &[usize], model: &str) -> Option<usize> {
        for &i in which {
            if self.rollout(i, model).await["fleet"]["judging"] == true {
                return Some(i);
            }
        }
        None
    }

    async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        for &at in &self.admin {
            let req = Request::get(format!("http://{at}/metrics")).body(Full::new(Bytes::new())).unwrap();
            let sent = self.client.request(req).await.unwrap();
            let text =
                String::from_utf8(sent.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            sum += common::metric_present(&text, name, labels).unwrap_or(0.0);
        }
        sum
    }
}

/// Requests through the balancer on a task of their own until stopped: how many, how many failed.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: &HttpClient, at: SocketAddr, models: &'static [&'static str]) -> Load {
        let (stop, sent, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, n, f, client) = (stop.clone(), sent.clone(), failed.clone(), client.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) && i < 1_000_000 {
                let model = models[(i % models.len() as u64) as usize];
                let answer =
                    infer(&client, at, model, &format!("load-{}", i % 5000), &format!("load-{i}")).await;
                n.fetch_add(1, Ordering::Relaxed);
                if answer.status != 200 {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        });
        Load { stop, sent, failed, task }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker and the images of deploy/docker/build.sh"]
async fn three_replicas_behind_haproxy_share_labels_and_rollouts_through_redis() {
    let mut fleet = Fleet::start().await;
    let all = [0, 1, 2];
    let published = |r: &Value| r["fleet"]["seq"].as_u64() >= Some(1);
    fleet.until_each(&all, "credit-good", "published credit-good's rollout", published).await;
    fleet.until_each(&all, "credit-scoring", "published credit-scoring's rollout", published).await;

    // 1. A sticky user gets the same version from every replica.
    for u in 0..60 {
        let user = format!("sticky-{u}");
        let mut versions = Vec::new();
        for &at in &fleet.data {
            versions
                .push(infer(&fleet.client, at, "credit-scoring", &user, &format!("st-{u}")).await.version);
        }
        assert!(versions.iter().all(|v| v.is_some() && *v == versions[0]), "user {user}: {versions:?}");
    }

    // 2. The judge killed mid-rollout (SIGKILL: no goodbye) is replaced within the lease TTL,
    //    and the healthy candidate carries on to promotion on every replica.
    let load = Load::start(&fleet.client, fleet.balancer, &["credit-good"]);
    fleet.until_each(&all, "credit-good", "stepped credit-good", |r| r["step"].as_u64() >= Some(1)).await;
    let judge = fleet.judge(&all, "credit-good").await.expect("one replica judges");
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != judge).collect();
    let killed = Instant::now();
    fleet.compose.docker(&["kill", &fleet.compose.container(REPLICAS[judge])]);
    let mut took_over = None;
    while killed.elapsed() < LEASE * 3 {
        if fleet.judge(&others, "credit-good").await.is_some() {
            took_over = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the lease
    }
    let took_over = took_over.expect("another replica took over judging");
    // The lease, plus one renewal period (a third of it) and a tick of slack.
    assert!(took_over <= LEASE + LEASE / 3 + Duration::from_millis(500), "took over after {took_over:?}");
    fleet.until_each(&others, "credit-good", "promoted credit-good", |r| r["state"] == "promoted").await;
    fleet.compose.docker(&["start", &fleet.compose.container(REPLICAS[judge])]);
    fleet.refresh(judge);
    fleet.until_ready(judge).await;
    // The restarted replica resumes the fleet's rollout: promoted, not back at the first step.
    let resumed = fleet.rollout(judge, "credit-good").await;
    assert_eq!(resumed["state"], "promoted", "{resumed}");
    let (sent, failed) = load.finish().await;
    eprintln!(
        "judge {} killed: took over in {took_over:?}; {failed} of {sent} balanced requests failed meanwhile",
        REPLICAS[judge]
    );

    // 3. Labels posted through the balancer all join; the candidate's false positives roll it
    //    back on every replica, within two step intervals of each other, once for the fleet.
    let rollbacks = fleet
        .metric_sum("gateway_rollout_events_total", &[("model", "credit-scoring"), ("event", "rollback")])
        .await;
    let mut candidate = Vec::new();
    for i in 0..20_000 {
        let id = format!("fp-{i}");
        let answer = infer(&fleet.client, fleet.balancer, "credit-scoring", &format!("user-{i}"), &id).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        if answer.version.as_deref() == Some("2") {
            candidate.push(id);
            if candidate.len() == 80 {
                break;
            }
        }
    }
    assert_eq!(candidate.len(), 80, "the candidate answered too few requests");
    for id in &candidate {
        let mut answer = label(&fleet.client, fleet.balancer, id, 0).await;
        for _ in 0..100 {
            if answer.status != 404 {
                break;
            }
            // The last predictions may still be on their way to Redis (written in batches).
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = label(&fleet.client, fleet.balancer, id, 0).await;
        }
        assert_eq!(answer.status, 200, "label for {id}: {}", answer.body);
    }
    let when = fleet
        .until_each(&all, "credit-scoring", "rolled credit-scoring back", |r| r["state"] == "rolled_back")
        .await;
    let spread = when.iter().max().unwrap().duration_since(*when.iter().min().unwrap());
    assert!(spread <= 2 * STEP, "rolled back {spread:?} apart");
    let after = fleet
        .metric_sum("gateway_rollout_events_total", &[("model", "credit-scoring"), ("event", "rollback")])
        .await;
    assert_eq!(after - rollbacks, 1.0, "one rollback event fleet-wide");

    // 4. A replica cut off from Redis keeps serving with the routing in force, and rejoins.
    let cut = 1;
    let network = format!("{}_state", fleet.compose.project);
    let container = fleet.compose.container(REPLICAS[cut]);
    fleet.compose.docker(&["network", "disconnect", &network, &container]);
    for i in 0..100 {
        let answer =
            infer(&fleet.client, fleet.data[cut], "credit-scoring", &format!("cut-{i}"), &format!("cut-{i}"))
                .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.version.as_deref(), Some("1"), "the rolled-back routing stays in force");
    }
    fleet.until_each(&[cut], "credit-scoring", "saw Redis gone", |r| r["fleet"]["connected"] == false).await;
    fleet.compose.docker(&["network", "connect", &network, &container]);
    fleet.until_each(&[cut], "credit-scoring", "rejoined", |r| r["fleet"]["connected"] == true).await;

    // 5. Redis stopped for ten seconds under load: no request lost.
    let load = Load::start(&fleet.client, fleet.balancer, &["credit-scoring", "credit-good"]);
    tokio::time::sleep(Duration::from_millis(500)).await; // load under way first
    let redis = fleet.compose.container("redis");
    fleet.compose.docker(&["stop", "-t", "1", &redis]);
    let stopped = Instant::now();
    // Past the lease, nobody judges, and each replica's gauge says so.
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await; // the outage under test, first part
    let leaders = fleet.metric_sum("gateway_fleet_leader", &[]).await;
    assert_eq!(leaders, 0.0, "a replica still claims the lease with Redis down");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await; // the rest of the ten seconds
    fleet.compose.docker(&["start", &redis]);
    fleet.until_each(&all, "credit-scoring", "reconnected", |r| r["fleet"]["connected"] == true).await;
    let (sent, failed) = load.finish().await;
    eprintln!("Redis stopped for 10 s: {sent} balanced requests, {failed} failed");
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "requests lost while Redis was down");
    // Redis came back empty: the judge republished the fleet's state, so nothing started over.
    let states = fleet
        .until_each(&all, "credit-good", "kept credit-good promoted", |r| r["state"] == "promoted")
        .await;
    assert_eq!(states.len(), 3);
}
