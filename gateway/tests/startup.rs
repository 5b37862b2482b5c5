//! Starting and stopping: a model that fails to load (the others still serve), the
//! `--model-repository` scan, `gateway check-config` on the default config, on every file in
//! `config/examples/` (valid) and in `config/invalid/` (one broken rule each, named in its
//! first line), a missing ONNX Runtime library, and SIGTERM on the real binary.
//!
//! The binary runs from the repository root, where the configs' relative paths point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gateway::config::{self, Overrides};
use serde_json::{Value, json};

/// The repository root (configs say `repository = "models"` relative to it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `gateway` binary, run from the repository root.
fn gateway_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.current_dir(root())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary to completion (killed and failed after 60 s).
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let child = cmd.spawn().expect("the gateway binary starts");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                panic!("{cmd:?} did not exit within 60 s");
            }
        }
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `*.toml` files of a folder under the repository root, sorted.
fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

const BROKEN_AND_GOOD: &str = "[models.broken]\nrepository = \"TESTS\"\nrouting = { primary = 1 }\n\
     [models.fixed]\nrepository = \"TESTS\"\nrouting = { primary = 1 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_load_is_not_ready_and_the_others_serve() {
    let gw = common::start(BROKEN_AND_GOOD).await;
    let file = format!("{}/broken/1/model.onnx", common::test_repo());

    // The good model serves, correctly.
    let fixed = common::reference_for("fixed");
    let reply = gw.infer("fixed", &json!({"inputs": fixed["inputs"]})).await;
    assert_eq!(reply.status, 200, "{}", text(&reply.body));
    common::assert_outputs(&reply.json(), fixed["outputs"].as_array().unwrap());
    assert_eq!(gw.get("/v2/models/fixed/ready").await.status, 200);
    assert_eq!(gw.get("/v2/health/live").await.status, 200);

    // The broken one is reported, with its file and the reason.
    for path in ["/v2/models/broken/ready", "/v2/models/broken/versions/1/ready"] {
        let ready = gw.get(path).await;
        assert_eq!(ready.status, 503, "{path}");
        assert_eq!(ready.json()["ready"], false, "{path}");
    }
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]});
    let reply = gw.infer("broken", &body).await;
    assert_eq!(reply.status, 503, "{}", text(&reply.body));
    assert!(reply.header("retry-after").is_some());
    let error = reply.error();
    assert!(error.contains("model 'broken' is not ready"), "{error}");
    assert!(error.contains(&file), "names the file: {error}");
    assert!(error.to_lowercase().contains("protobuf parsing failed"), "says why: {error}");
    assert_eq!(gw.get("/v2/models/broken").await.status, 503);

    // Readiness of the whole server lists it.
    let ready = gw.get("/v2/health/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["not_ready"], json!(["broken"]));

    // So does the admin plane.
    let models = gw.get_at(gw.admin, "/admin/models").await.json();
    let broken = models["models"].as_array().unwrap().iter().find(|m| m["name"] == "broken").unwrap().clone();
    assert_eq!(broken["ready"], false);
    assert!(broken["failure"].as_str().unwrap().contains(&file), "{broken}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_repository_mode_serves_every_model_with_its_highest_version() {
    // models/: every model, its highest version primary with all the traffic; the `tests`
    // folder has no version folders, so it is no model.
    let cfg =
        gateway::source::repository_config(&root().join("models"), &Overrides::default(), None).unwrap();
    let names: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
    assert_eq!(names, ["credit-scoring", "dense"]);
    let credit = &cfg.models["credit-scoring"].routing;
    assert_eq!((credit.primary, credit.candidates.len()), (3, 0));

    // models/tests/: the broken model is loaded, fails, and is marked not ready; the rest serve.
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let cfg = gateway::source::repository_config(Path::new(&common::test_repo()), &overrides, None).unwrap();
    let names: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "broken",
            "control_flow",
            "dtypes",
            "embed",
            "fixed",
            "mirror",
            "multi_io",
            "norank",
            "scalar",
            "slow",
            "strings",
            "two_features"
        ]
    );
    let gw = common::start_config(cfg).await;
    let ready = gw.get("/v2/health/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["not_ready"], json!(["broken"]));
    assert_eq!(gw.get("/v2/models/broken/ready").await.status, 503);

    let mut served = 0;
    for case in common::references() {
        let model = case["model"].as_str().unwrap();
        if model == "credit-scoring" || model == "dense" {
            continue;
        }
        assert_eq!(gw.get(&format!("/v2/models/{model}/ready")).await.status, 200, "{model}");
        let reply = gw.infer(model, &json!({"inputs": case["inputs"]})).await;
        assert_eq!(reply.status, 200, "{model}: {}", text(&reply.body));
        assert_eq!(reply.json()["model_version"], "1", "{model}");
        common::assert_outputs(&reply.json(), case["outputs"].as_array().unwrap());
        served += 1;
    }
    assert!(served >= 7, "only {served} reference cases");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_routing_of_the_default_config() {
    let out = run(gateway_command(&["check-config", "config/gateway.toml"])).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let credit =
        stdout.lines().find(|l| l.starts_with("credit-scoring: ")).unwrap_or_else(|| panic!("{stdout}"));
    for part in [
        "primary v1 95.00%",
        "candidate v2 5.00%",
        "shadow v3 100.00%",
        "sticky on x-user-id",
        "pinned by x-model-version",
    ] {
        assert!(credit.contains(part), "{part} missing from {credit}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("dense: primary v1 100.00%")), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok: config/gateway.toml is valid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_config_is_refused_with_the_path_of_its_problem() {
    let files = toml_files("config/invalid");
    assert!(files.len() >= 12, "{files:?}");
    let mut failures = Vec::new();
    for file in files {
        let name = format!("config/invalid/{}", file.file_name().unwrap().to_str().unwrap());
        let first = std::fs::read_to_string(&file).unwrap().lines().next().unwrap_or("").to_string();
        let (path, fragment) = first
            .strip_prefix("# expect: ")
            .and_then(|e| e.split_once(": "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <path>: <message>`"));
        let mut cmd = gateway_command(&["check-config", &name]);
        cmd.env_remove("GATEWAY_TEST_TOKEN_NEVER_SET");
        let out = run(cmd).await;
        let stdout = text(&out.stdout);
        let problems: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  - ")).collect();
        let prefix = format!("{path}: ");
        let ok = out.status.code() == Some(1)
            && stdout.starts_with("invalid configuration (")
            && !problems.is_empty()
            && problems.iter().all(|p| p.starts_with(&prefix))
            && problems.iter().any(|p| p[prefix.len()..].contains(fragment));
        if !ok {
            failures.push(format!(
                "{name}: expected exit 1 and only `{path}: ...{fragment}...`, got {:?}:\n{stdout}{}",
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_in_nested_tables_are_reported_with_their_config_path() {
    let toml = "[models.credit-scoring]\nbatching = { max_batch_size = 2, max_delay = 1 }\n\
                [models.credit-scoring.routing]\nprimary = 1\nweight = 5\n\
                candidates = [{ version = 2, percent = 5.0, sticky = true }]\n";
    let err = config::from_toml(toml, &Overrides::default()).unwrap_err();
    let mut paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "models.credit-scoring.batching.max_delay",
            "models.credit-scoring.routing.candidates[0].sticky",
            "models.credit-scoring.routing.weight",
        ],
        "{err}"
    );
    assert!(err.problems.iter().all(|p| p.message == "unknown key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_config_is_valid_and_its_models_load() {
    let files = toml_files("config/examples");
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let name = format!("config/examples/{}", file.file_name().unwrap().to_str().unwrap());
        let out = run(gateway_command(&["check-config", &name, "--load-models"])).await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}:\n{stdout}{}", text(&out.stderr));
        assert!(stdout.contains(" v1: inputs "), "{name}: no model loaded:\n{stdout}");
        assert_eq!(stdout.lines().last(), Some(format!("ok: {name} is valid").as_str()));
        if name.ends_with("canary.toml") {
            assert!(stdout.contains("candidate v2 10.00%, shadow v3 100.00%"), "{stdout}");
        }
    }
}

/// Runs the binary with ORT_DYLIB_PATH pointing at nothing; returns its exit code and stderr.
async fn run_without_onnx_runtime() -> (Option<i32>, String) {
    let mut cmd = gateway_command(&[
        "--config",
        "config/examples/minimal.toml",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    cmd.env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so");
    let out = run(cmd).await;
    (out.status.code(), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_onnx_runtime_library_is_a_clear_error_naming_the_fix() {
    let (code, stderr) = run_without_onnx_runtime().await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/libonnxruntime.so"), "{stderr}");
    assert!(stderr.contains("set ORT_DYLIB_PATH"), "names the fix: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_onnx_runtime_library_is_reported_once() {
    let (_, stderr) = run_without_onnx_runtime().await;
    assert_eq!(stderr.matches("shared library not found").count(), 1, "{stderr}");
}

/// Kills the child (by its pid) if the test fails before it has exited.
struct KillOnDrop {
    pid: u32,
    exited: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.exited {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
    }
}

/// Waits (on a thread) for the child to exit; `None` after `limit`.
async fn wait_for_exit(mut child: Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(limit).ok().map(Result::unwrap)).await.unwrap()
}

/// The next stderr line (`None` once the stream has ended), waiting at most 60 s.
async fn next_line(lines: mpsc::Receiver<String>) -> (Option<String>, mpsc::Receiver<String>) {
    tokio::task::spawn_blocking(move || match lines.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => (Some(line), lines),
        Err(mpsc::RecvTimeoutError::Disconnected) => (None, lines),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no log line for 60 s"),
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_with_exit_code_0() {
    let mut cmd = gateway_command(&[
        "--config",
        "config/examples/minimal.toml",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    cmd.stdout(Stdio::null());
    let mut child = cmd.spawn().expect("the gateway binary starts");
    let mut guard = KillOnDrop { pid: child.id(), exited: false };
    let stderr = child.stderr.take().unwrap();
    let (tx, mut lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // The log line that says where it listens.
    let serving: Value = loop {
        let (line, rest) = next_line(lines).await;
        lines = rest;
        let line = line.expect("a `gateway serving` log line before stderr ends");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "gateway serving" {
            break v;
        }
    };
    let data = serving["fields"]["data_addr"].as_str().unwrap().to_string();
    let admin = serving["fields"]["admin_addr"].as_str().unwrap().to_string();
    assert_eq!(common::get_url(&format!("http://{data}/v2/health/ready")).await.status, 200);
    assert_eq!(common::get_url(&format!("http://{admin}/metrics")).await.status, 200);

    let pid = guard.pid.to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_for_exit(child, Duration::from_secs(30))
        .await
        .expect("the gateway exits within 30 s of SIGTERM");
    guard.exited = true;
    assert_eq!(status.code(), Some(0));
    let mut rest = Vec::new();
    while let (Some(line), more) = next_line(lines).await {
        rest.push(line);
        lines = more;
    }
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "no `stopped` log line after SIGTERM: {rest:?}");
}
