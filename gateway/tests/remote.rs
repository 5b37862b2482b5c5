//! Remote versions (`[models.X.remote]`): a second, real gateway on loopback is the remote
//! Open Inference Protocol server. It serves the credit model under another name
//! (`upstream-credit`, a link to `models/credit-scoring`), so its metric series never mix with
//! the front gateway's, which serves `credit-scoring` with local and remote versions.
//!
//! Killing a remote mid-load runs the `gateway` binary as the remote, killed by its PID.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A repository with `upstream-credit` (the credit model, both versions) and the slow model.
fn upstream_repo() -> std::path::PathBuf {
    let dir = scratch("upstream-repo");
    std::os::unix::fs::symlink(format!("{}/credit-scoring", repo()), dir.join("upstream-credit")).unwrap();
    std::os::unix::fs::symlink(format!("{}/slow", test_repo()), dir.join("upstream-slow")).unwrap();
    dir
}

/// The remote: a gateway serving `upstream-credit` v1 (primary) and v2 (pinned), over HTTP
/// and gRPC.
async fn start_remote() -> TestGateway {
    let repo = upstream_repo();
    let toml = format!(
        "[models.upstream-credit]\nrepository = \"{}\"\nrouting = {{ primary = 1, versions = [2] }}\n\
         [models.upstream-slow]\nrepository = \"{}\"\nrouting = {{ primary = 1 }}\n",
        repo.display(),
        repo.display()
    );
    start_with_server(&toml, "grpc_listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 60000").await
}

/// The front gateway's credit model: local v1 primary, and `remote` lines under
/// `[models.credit-scoring.remote]`.
fn front(routing: &str, remote: &str) -> String {
    format!(
        "[models.credit-scoring]\nrepository = \"REPO\"\n[models.credit-scoring.routing]\n{routing}\n\
         [models.credit-scoring.remote]\n{remote}\n"
    )
}

fn pinned(v: u64) -> String {
    format!("/v2/models/credit-scoring/versions/{v}/infer")
}

fn outputs(reply: &Reply) -> BTreeMap<String, Value> {
    let json = reply.json();
    json["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs: {json}"))
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_string(), o["data"].clone()))
        .collect()
}

#[tokio::test]
async fn a_remote_version_answers_exactly_as_the_remote_does_over_http_h2c_and_grpc() {
    let remote = start_remote().await;
    let grpc = remote.grpc.unwrap();
    let gw = start(&front(
        "primary = 1\nversions = [5, 6, 7]",
        &format!(
            "5 = {{ url = \"http://{}\", model = \"upstream-credit\", version = \"2\" }}\n\
             6 = {{ url = \"grpc://{grpc}\", model = \"upstream-credit\", version = \"2\" }}\n\
             7 = {{ url = \"http://{}\", model = \"upstream-credit\", version = \"2\", http2 = true }}",
            remote.data, remote.data
        ),
    ))
    .await;
    for seed in 0..20 {
        let body = credit_request_seeded(1 + (seed as usize % 4), seed);
        let direct = remote.post_json("/v2/models/upstream-credit/versions/2/infer", &body).await;
        assert_eq!(direct.status, 200, "{}", String::from_utf8_lossy(&direct.body));
        for v in [5, 6, 7] {
            let via = gw.post_json(&pinned(v), &body).await;
            assert_eq!(via.status, 200, "v{v}: {}", String::from_utf8_lossy(&via.body));
            assert_eq!(
                via.header("x-model-version"),
                Some(v.to_string().as_str()),
                "the local version number"
            );
            assert_eq!(outputs(&via), outputs(&direct), "v{v} seed {seed}");
        }
    }
    // The remote's metadata is the version's: the front describes v5 with the remote's inputs.
    let meta = gw.get("/v2/models/credit-scoring/versions/5").await.json();
    let remote_meta = remote.get("/v2/models/upstream-credit/versions/2").await.json();
    assert_eq!(meta["inputs"], remote_meta["inputs"]);
    let text = gw.metrics().await;
    for v in ["5", "6", "7"] {
        let ok = metric_present(
            &text,
            "gateway_upstream_requests_total",
            &[("model", "credit-scoring"), ("version", v), ("outcome", "ok")],
        );
        assert!(ok.is_some_and(|n| n >= 20.0), "v{v} upstream ok count: {ok:?}");
    }
    let models = gw.get_at(gw.admin, "/admin/models").await.json();
    let v5 = &models["models"][0]["versions"][1];
    assert_eq!(v5["remote"]["model"], "upstream-credit", "{models}");
    assert_eq!(v5["remote"]["ejected"], false);
    gw.stop().await;
    remote.stop().await;
}

#[tokio::test]
async fn a_90_10_split_between_local_v1_and_remote_v2_holds_its_weights() {
    let remote = start_remote().await;
    let gw = start(&front(
        "primary = 1\ncandidates = [{ version = 5, percent = 10.0 }]",
        &format!("5 = {{ url = \"http://{}\", model = \"upstream-credit\", version = \"2\" }}", remote.data),
    ))
    .await;
    let body = credit_request(1);
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1000 {
        let r = gw.infer("credit-scoring", &body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        *by_version.entry(r.header("x-model-version").unwrap().to_string()).or_default() += 1;
    }
    let remote_share = by_version.get("5").copied().unwrap_or(0) as f64 / 1000.0;
    assert!((0.07..=0.13).contains(&remote_share), "remote v5 took {remote_share} of 1000: {by_version:?}");
    gw.stop().await;
    remote.stop().await;
}

#[tokio::test]
async fn a_remote_shadow_is_mirrored_and_compared() {
    let remote = start_remote().await;
    let gw = start(&front(
        "primary = 1\nshadows = [{ version = 4, percent = 100.0 }]",
        // The remote's v1 is the same model as the local v1: every comparison agrees.
        &format!("4 = {{ url = \"http://{}\", model = \"upstream-credit\", version = \"1\" }}", remote.data),
    ))
    .await;
    for seed in 0..30 {
        let r = gw.infer("credit-scoring", &credit_request_seeded(2, seed)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-model-version"), Some("1"), "shadows never answer");
    }
    let labels = [("model", "credit-scoring"), ("version", "4"), ("outcome", "ok")];
    gw.wait_for_metric("gateway_shadow_requests_total", &labels, |n| n >= 30.0).await;
    let text = gw.metrics().await;
    let matched = text
        .lines()
        .filter(|l| {
            l.starts_with("gateway_shadow_comparisons_total{")
                && l.contains("version=\"4\"")
                && l.contains("result=\"match\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    let mismatched = text
        .lines()
        .filter(|l| {
            l.starts_with("gateway_shadow_comparisons_total{")
                && l.contains("version=\"4\"")
                && l.contains("result=\"mismatch\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    assert!(matched >= 30.0, "remote shadow comparisons: {matched} matches\n{text}");
    assert_eq!(mismatched, 0.0, "the same model never disagrees");
    gw.stop().await;
    remote.stop().await;
}

/// The problems `prepare` refuses the front's config with when `remote` is its 10% candidate v5.
async fn refused(remote: &str) -> String {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        with_paths(&front("primary = 1\ncandidates = [{ version = 5, percent = 10.0 }]", remote))
    );
    let cfg = gateway::config::from_toml(&text, &Default::default()).unwrap();
    let result = tokio::task::spawn_blocking(move || {
        gateway::registry::prepare(
            std::sync::Arc::new(cfg),
            None,
            1,
            gateway::registry::OnFailure::RefuseAll,
            &Default::default(),
        )
    })
    .await
    .unwrap();
    let problems = result.err().expect("the change is refused");
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_remote_that_cannot_be_reached_or_differs_is_refused_with_the_reason() {
    // Nothing listens on a port we bound and released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let problems = refused(&format!(
        "5 = {{ url = \"http://{free}\", model = \"upstream-credit\", connect_timeout_ms = 500 }}"
    ))
    .await;
    assert!(problems.contains(&free.to_string()) && problems.contains("metadata"), "{problems}");

    // A remote candidate whose inputs differ from the primary's is refused with the difference.
    let remote = start_remote().await;
    let problems =
        refused(&format!("5 = {{ url = \"http://{}\", model = \"upstream-slow\" }}", remote.data)).await;
    assert!(problems.contains("does not accept the primary's"), "{problems}");
    remote.stop().await;
}

#[tokio::test]
async fn calls_beyond_max_in_flight_are_refused_with_503_and_counted() {
    let remote = start_remote().await;
    let toml = format!(
        "[models.slowfront]\nrepository = \"TESTS\"\nrouting = {{ primary = 1 }}\n\
         [models.slowfront.remote]\n1 = {{ url = \"http://{}\", model = \"upstream-slow\", max_in_flight = 1 }}\n",
        remote.data
    );
    // All-remote models need no local folder of their own; `slowfront` has none.
    let gw = start_with_server(&toml, "request_timeout_ms = 60000").await;
    // ~0.5 s of loop turns on the remote; the second call arrives while the first holds the slot.
    let slow = serde_json::json!({"inputs": [
        {"name": "iterations", "datatype": "INT64", "shape": [], "data": [300000]},
        {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": vec![0.0f32; 64]}
    ]});
    let first = gw.spawn_infer("slowfront", &slow);
    eventually("the first call in flight", Duration::from_secs(30), || async {
        gw.queue_depth("slowfront", 1).await == 1
    })
    .await;
    let second = gw.infer("slowfront", &slow).await;
    assert_eq!(second.status, 503, "{}", String::from_utf8_lossy(&second.body));
    assert!(second.error().contains("max_in_flight"), "{}", second.error());
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let busy =
        gw.metric("gateway_upstream_requests_total", &[("model", "slowfront"), ("outcome", "busy")]).await;
    assert!(busy >= 1.0, "busy count {busy}");
    gw.stop().await;
    remote.stop().await;
}

/// The `gateway` binary serving `toml` (listeners on 127.0.0.1:0), and its data and gRPC
/// addresses read from its "gateway serving" log line.
fn spawn_gateway_binary(dir: &std::path::Path, toml: &str) -> (Child, SocketAddr) {
    let config = dir.join("remote.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Logs go to stderr; read to the end so the child never blocks on a full pipe.
    let stdout = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("gateway serving") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("the remote binary starts within 60 s");
    let v: Value = serde_json::from_str(&line).unwrap();
    let fields = if v["fields"].is_object() { &v["fields"] } else { &v };
    let addr =
        fields["data_addr"].as_str().unwrap_or_else(|| panic!("no data_addr in {line}")).parse().unwrap();
    (child, addr)
}

#[tokio::test]
async fn killing_the_remote_mid_load_fails_only_calls_sent_to_it_and_the_candidate_is_ejected() {
    let repo = upstream_repo();
    let dir = scratch("remote-kill");
    let remote_toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [models.upstream-credit]\nrepository = \"{}\"\nrouting = {{ primary = 1, versions = [2] }}\n",
        repo.display()
    );
    let (mut child, remote_addr) = spawn_gateway_binary(&dir, &remote_toml);
    let gw = start(&front(
        "primary = 1\ncandidates = [{ version = 5, percent = 50.0 }]\npin_header = \"x-model-version\"",
        &format!(
            "5 = {{ url = \"http://{remote_addr}\", model = \"upstream-credit\", version = \"2\", eject_after = 3, eject_for_ms = 60000, health_interval_ms = 200 }}"
        ),
    ))
    .await;
    let body = credit_request(2);
    // Load from 8 clients; the remote is killed while it runs.
    let load = |n: usize, pin: bool| {
        (0..8)
            .map(|_| {
                let (client, data, body) = (gw.client.clone(), gw.data, body.clone());
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _ in 0..n {
                        let mut req =
                            http::Request::post(format!("http://{data}/v2/models/credit-scoring/infer"))
                                .header("content-type", "application/json");
                        if pin {
                            req = req.header("x-model-version", "5");
                        }
                        let req = req
                            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                            .unwrap();
                        let reply = tokio::time::timeout(Duration::from_secs(30), send_with(&client, req))
                            .await
                            .expect("every request is answered: none hangs");
                        statuses.push(reply.status.as_u16());
                    }
                    statuses
                })
            })
            .collect::<Vec<_>>()
    };
    let before = load(25, false);
    let pinned_load = load(25, true);
    let pid = child.id();
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    child.wait().unwrap();
    let mut unpinned = Vec::new();
    for h in before {
        unpinned.extend(h.await.unwrap());
    }
    let mut pinned_statuses = Vec::new();
    for h in pinned_load {
        pinned_statuses.extend(h.await.unwrap());
    }
    // Unpinned calls fall back to the primary: none fails. Pinned calls to the dead remote get
    // a clear 502/503/504.
    assert!(unpinned.iter().all(|&s| s == 200), "unpinned statuses: {unpinned:?}");
    assert!(
        pinned_statuses.iter().all(|&s| [200, 502, 503, 504].contains(&s)),
        "pinned: {pinned_statuses:?}"
    );
    assert!(pinned_statuses.contains(&502), "calls to the dead remote answer 502: {pinned_statuses:?}");
    gw.wait_for_metric("gateway_upstream_ejected", &[("model", "credit-scoring"), ("version", "5")], |v| {
        v == 1.0
    })
    .await;
    // Ejected: the split sends everything to the primary, with no call to the remote.
    for _ in 0..100 {
        let r = gw.infer("credit-scoring", &body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-model-version"), Some("1"));
    }
    let models = gw.get_at(gw.admin, "/admin/models").await.json();
    assert_eq!(models["models"][0]["versions"][1]["remote"]["ejected"], true, "{models}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_candidate_that_starts_failing_is_ejected_and_rolled_back_with_no_client_request_failing() {
    let remote = start_remote().await;
    let routing = "primary = 1\ncandidates = [{ version = 5, percent = 50.0 }]";
    let toml = format!(
        "{}[models.credit-scoring.monitor]\noutput = \"probabilities\"\n\
         [models.credit-scoring.rollout]\nsteps = [50, 100]\nstep_interval_s = 3600\nmin_requests = 20\nmax_error_rate = 0.01\n",
        front(
            routing,
            &format!(
                "5 = {{ url = \"http://{}\", model = \"upstream-credit\", version = \"2\", eject_after = 3, eject_for_ms = 600000 }}",
                remote.data
            )
        )
    );
    let gw = start(&toml).await;
    let body = credit_request(1);
    let mut answered_by_remote = 0;
    while answered_by_remote < 20 {
        let r = gw.infer("credit-scoring", &body).await;
        assert_eq!(r.status, 200);
        answered_by_remote += usize::from(r.header("x-model-version") == Some("5"));
    }
    // The remote goes away; the split keeps drawing it until it is ejected.
    remote.stop().await;
    let mut fallbacks = 0;
    for _ in 0..200 {
        let r = gw.infer("credit-scoring", &body).await;
        assert_eq!(r.status, 200, "no client request fails: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-model-version"), Some("1"));
        fallbacks += usize::from(r.header("x-route-reason") == Some("fallback"));
    }
    assert!(fallbacks >= 1, "the draws of the failing remote were answered by the primary as fallbacks");
    let labels = [("model", "credit-scoring"), ("version", "5")];
    assert_eq!(gw.metric("gateway_upstream_ejected", &labels).await, 1.0);
    assert_eq!(gw.metric("gateway_upstream_ejections_total", &labels).await, 1.0, "ejected once");
    let connect_errors = gw
        .metric(
            "gateway_upstream_requests_total",
            &[("model", "credit-scoring"), ("version", "5"), ("outcome", "connect_error")],
        )
        .await;
    assert_eq!(connect_errors, 3.0, "three failures in a row eject it; no call after");
    // The rollout's error gate sees the candidate's three failures and rolls it back.
    let verdict = {
        let g = gw.gateway.as_ref().unwrap();
        let _control = g.registry.control.lock().await;
        g.monitor.judge_now(&g.registry, "credit-scoring").unwrap()
    };
    assert_eq!(verdict["state"], "rolled_back", "{verdict}");
    assert!(verdict["last_verdict"]["analysis"]["reasons"].to_string().contains("error rate"), "{verdict}");
    let after = gw.infer("credit-scoring", &body).await;
    assert_eq!(after.header("x-model-version"), Some("1"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validation_gate_runs_a_remote_candidate_on_its_hold_out_set() {
    let remote = start_remote().await;
    let dir = scratch("remote-validation");
    let set = dir.join("set.jsonl");
    let request = credit_request_seeded(4, 7);
    let line = serde_json::json!({"inputs": request["inputs"], "expected": [0, 0, 0, 0]});
    std::fs::write(&set, format!("{line}\n{line}\n")).unwrap();
    let model = "credit-validated";
    std::os::unix::fs::symlink(format!("{}/credit-scoring", repo()), dir.join(model)).unwrap();
    let toml = format!(
        "[models.{model}]\nrepository = \"{}\"\nrouting = {{ primary = 1, candidates = [{{ version = 5, percent = 10.0 }}] }}\n\
         [models.{model}.remote]\n5 = {{ url = \"http://{}\", model = \"upstream-credit\", version = \"2\" }}\n\
         [models.{model}.validation]\ndataset = \"{}\"\noutput = \"label\"\nmin_accuracy = 0.0\n",
        dir.display(),
        remote.data,
        set.display()
    );
    // The gate runs at start, on a blocking thread: the remote's calls must work from there.
    let gw = start(&toml).await;
    let ready = gw.get(&format!("/v2/models/{model}/ready")).await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    let passed = gw.metric("gateway_validation_runs_total", &[("model", model), ("outcome", "passed")]).await;
    assert!(passed >= 2.0, "v1 and the remote v5 each ran the set: {passed}");
    let calls = gw
        .metric("gateway_upstream_requests_total", &[("model", model), ("version", "5"), ("outcome", "ok")])
        .await;
    assert!(calls >= 2.0, "the remote answered both lines of the set: {calls}");
    gw.stop().await;
    remote.stop().await;
}
